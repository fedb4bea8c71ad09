"""The block-sparse modules' hand-offs, as QuantConv2d's: uint8 input in the static input parameters,
uint8 output (set_output_quant), channels-last output, a residual added in the epilogue -- each equal to the
dense int8 module bit for bit, eagerly and under torch.compile, surviving a state_dict round trip."""
import pytest
import torch
from torch import nn

from edgeopt import kernels
from edgeopt.nn import QuantConv2d, SparseConv2d, SparseLinear


def pruned_conv(cin=16, cout=32, k=3, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, padding=k // 2)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(cout, 1, 1, cin).permute(0, 3, 1, 2).expand_as(conv.weight) < 0.4)
    return conv


@pytest.mark.parametrize("u8_in", [False, True])
@pytest.mark.parametrize("u8_out", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_sparse_conv_hand_offs_equal_the_dense_conv(isa, u8_in, u8_out, with_residual):
    conv = pruned_conv()
    kw = dict(mode="static", input_range=(-2.0, 3.0), activation="relu")
    sparse = SparseConv2d.from_float(conv, dtype="int8", **kw)
    dense = QuantConv2d.from_float(conv, **kw)
    for m in (sparse, dense):
        m.channels_last_output = True
        if u8_out:
            m.set_output_quant(0.03, 5)
    x = torch.randn(2, 16, 9, 7).contiguous(memory_format=torch.channels_last)
    if u8_in:
        scale, zero_point = dense._input_params
        x = torch.clamp(torch.round(x / scale) + zero_point, 0, 255).to(torch.uint8)
    residual = torch.randn(2, 32, 9, 7) if with_residual else None
    with torch.no_grad():
        got, want = sparse(x, residual), dense(x, residual)
        assert got.dtype == (torch.uint8 if u8_out else torch.float32)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(got, want)
        if u8_in and u8_out and with_residual and isa == "avx2":  # one compile: the op carries every argument
            compiled = torch.compile(sparse, fullgraph=True)
            assert torch.equal(compiled(x, residual), want)


def test_sparse_conv_state_round_trip_keeps_the_hand_offs():
    conv = pruned_conv(seed=1)
    m = SparseConv2d.from_float(conv, dtype="int8", mode="static", input_range=(-1.0, 1.0))
    m.set_output_quant(0.02, 3)
    m.channels_last_output = True
    fresh = SparseConv2d(16, 32, 3, padding=1, dtype="int8", mode="static")
    fresh.load_state_dict(m.state_dict())
    assert fresh._output_params == (0.02, 3) and fresh.channels_last_output
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        assert torch.equal(fresh(x), m(x))


def test_refusals():
    conv = pruned_conv(seed=2)
    fp32 = SparseConv2d.from_float(conv, dtype="fp32")
    with pytest.raises(ValueError, match="only int8"):
        fp32.set_output_quant(0.1, 0)
    with pytest.raises(ValueError, match="16-column blocks"):
        fp32(torch.randn(1, 16, 5, 5), torch.randn(1, 32, 5, 5))
    nb8 = SparseConv2d.from_float(conv, dtype="int8", block_cols=8, mode="static", input_range=(-1.0, 1.0))
    assert not nb8.adds_residual and SparseConv2d.from_float(conv, dtype="int8").adds_residual
    with pytest.raises(ValueError, match="16-column blocks"):
        nb8(torch.randn(1, 16, 5, 5), torch.randn(1, 32, 5, 5))
    dynamic = SparseConv2d.from_float(conv, dtype="int8")
    with pytest.raises(TypeError, match="dynamic"):
        dynamic(torch.zeros(1, 16, 5, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="residual must be float32"):
        nb8(torch.randn(1, 16, 5, 5), torch.randn(1, 32, 4, 5))


def test_sparse_linear_takes_and_gives_uint8():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(48, 64) < 0.3)
    m = SparseLinear.from_float(linear, dtype="int8", mode="static", input_range=(-1.0, 2.0), activation="relu")
    scale, zero_point = m._input_params
    x = torch.randn(5, 64)
    x_u8 = torch.clamp(torch.round(x / scale) + zero_point, 0, 255).to(torch.uint8)
    with torch.no_grad():
        assert torch.equal(m(x_u8), m(x))  # uint8 in: the same as quantizing inside
        m.set_output_quant(0.01, 0)
        y = m(x)
        assert y.dtype == torch.uint8
        want = kernels.sparse_quant_linear(x, m.packed_weight, 64, 48, False, scale, zero_point, 0.0, float("inf"),
                                           0.01, 0, True)
        assert torch.equal(y, want)
        m.set_output_quant(None)
        assert m(x).dtype == torch.float32


def test_the_lowering_links_uint8_only_out_of_int8_sparse_layers():
    """A sparse layer kept in fp32 (the accuracy-aware mode backs layers off to it) has set_output_quant but
    computes in float: the lowering must not ask it for uint8."""
    from edgeopt.passes.quantize.layout import emits_u8

    conv = pruned_conv()
    assert emits_u8(SparseConv2d.from_float(conv, dtype="int8", mode="static", input_range=(-2.0, 3.0)))
    assert not emits_u8(SparseConv2d.from_float(conv, dtype="fp32"))
    assert emits_u8(QuantConv2d.from_float(conv, mode="static", input_range=(-2.0, 3.0)))
