"""No silent wrong answers: gradients reach the layers before an edgeopt module, packed buffers carry a
checksum checked whenever they come from outside the process, non-finite biases and bad calibration are
refused with clear messages, and rank=1.0 means the full rank everywhere."""
import io
import math

import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.nn import (HalfLinear, LowRankLinear, MaxPool2d, QuantConv2d, QuantLinear, SparseConv2d, SparseLinear)
from edgeopt.nn.low_rank_linear import choose_rank

CL = torch.channels_last
HEADER_BYTES = 64


def packed_modules():
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    return {
        "QuantLinear": QuantLinear.from_float(lin),
        "HalfLinear fp16": HalfLinear.from_float(lin),
        "HalfLinear fp32": HalfLinear.from_float(lin, weight_dtype="fp32"),
        "SparseLinear fp32": SparseLinear.from_float(lin),
        "SparseLinear int8": SparseLinear.from_float(lin, dtype="int8"),
        "LowRankLinear fp32": LowRankLinear.from_float(lin, rank=3),
        "LowRankLinear fp16": LowRankLinear.from_float(lin, rank=3, weight_dtype="fp16"),
        "LowRankLinear int8": LowRankLinear.from_float(lin, rank=3, weight_dtype="int8"),
        "QuantConv2d": QuantConv2d.from_float(conv),
        "QuantConv2d grouped": QuantConv2d.from_float(nn.Conv2d(6, 8, 3, groups=2)),
        "QuantConv2d depthwise": QuantConv2d.from_float(nn.Conv2d(6, 6, 3, groups=6, padding=1)),
        "SparseConv2d fp32": SparseConv2d.from_float(conv),
        "SparseConv2d int8": SparseConv2d.from_float(conv, dtype="int8"),
    }


PACKED = packed_modules()


def image_input(module, batch=2):
    return torch.randn(batch, module.in_channels, 7, 9)


def module_input(module):
    return image_input(module) if hasattr(module, "in_channels") else torch.randn(3, 2, module.in_features)


def copied(state):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def packed_names(module):
    return [name for name in module.PACKED_BUFFERS if getattr(module, name).numel()]


# -- checksums ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PACKED)
def test_a_flipped_payload_bit_is_refused_on_load(name):
    module = PACKED[name]
    for buffer in packed_names(module):
        packed = getattr(module, buffer)
        # the lowest bit of a byte past the header: a float stays finite, an int8 stays in range, so only the
        # checksum can see it (the CRC catches any single-bit flip wherever it is)
        for offset in (HEADER_BYTES, HEADER_BYTES + (packed.numel() - HEADER_BYTES) // 2, packed.numel() - 1):
            state = copied(module.state_dict())
            state[buffer][offset] ^= 1
            with pytest.raises(ValueError, match="packed weights rejected"):
                packed_modules()[name].load_state_dict(state)


@pytest.mark.parametrize("name", ["HalfLinear fp32", "SparseLinear fp32", "SparseConv2d fp32", "LowRankLinear fp16"])
def test_float_values_changed_after_packing_hit_the_checksum(name):
    """Float payloads had no check at all: a changed weight that is still a plausible number must be refused."""
    module = packed_modules()[name]
    buffer = packed_names(module)[-1]  # LowRankLinear: U, which carries the bias (V's bias slots must be 0)
    state = copied(module.state_dict())
    state[buffer][HEADER_BYTES] ^= 1  # the lowest mantissa bit of the first bias or weight
    with pytest.raises(ValueError, match="checksum mismatch"):
        packed_modules()[name].load_state_dict(state)


@pytest.mark.parametrize("name", ["HalfLinear fp16", "QuantLinear", "QuantConv2d depthwise", "SparseConv2d fp32",
                                  "LowRankLinear int8"])
def test_unpickling_a_whole_module_checks_its_buffers(name):
    module = packed_modules()[name]
    buffer = packed_names(module)[0]
    blob = io.BytesIO()
    torch.save(module, blob)
    assert isinstance(torch.load(io.BytesIO(blob.getvalue()), weights_only=False), type(module))  # intact: loads
    getattr(module, buffer)[HEADER_BYTES] ^= 1
    blob = io.BytesIO()
    torch.save(module, blob)
    with pytest.raises(ValueError, match="packed weights rejected"):
        torch.load(io.BytesIO(blob.getvalue()), weights_only=False)


def test_an_unsealed_buffer_is_refused():
    module = packed_modules()["HalfLinear fp32"]
    state = copied(module.state_dict())
    state["packed_weight"][56:64] = 0  # the checksum field
    with pytest.raises(ValueError, match="never sealed"):
        packed_modules()["HalfLinear fp32"].load_state_dict(state)


def as_version_1(packed: torch.Tensor) -> torch.Tensor:
    """A buffer as format version 1 wrote it (no checksum): each back-to-back pack's version 1, field 0."""
    old = packed.clone()
    offset = 0
    while offset < old.numel():
        header = old[offset:offset + HEADER_BYTES]
        header[4:8] = torch.tensor([1, 0, 0, 0], dtype=torch.uint8)
        header[56:64] = 0
        offset += int(header[48:56].view(torch.int64))
    assert offset == old.numel()
    return old


@pytest.mark.parametrize("name", PACKED)
def test_version_1_buffers_still_load(name):
    """Models saved before the checksum keep loading (state_dict and whole-module pickles)."""
    module = PACKED[name]
    state = copied(module.state_dict())
    for buffer in packed_names(module):
        state[buffer] = as_version_1(state[buffer])
    fresh = packed_modules()[name]
    fresh.load_state_dict(state)
    x = module_input(module)
    with torch.no_grad():
        assert torch.equal(fresh(x), module(x))
    for buffer in packed_names(module):
        assert torch.equal(getattr(fresh, buffer), getattr(module, buffer))  # upgraded to this version's bytes
        getattr(fresh, buffer).copy_(as_version_1(getattr(fresh, buffer)))
    blob = io.BytesIO()
    torch.save(fresh, blob)
    with torch.no_grad():
        assert torch.equal(torch.load(io.BytesIO(blob.getvalue()), weights_only=False)(x), module(x))


@pytest.mark.parametrize("name", PACKED)
def test_intact_state_dict_round_trips(name):
    module = PACKED[name]
    blob = io.BytesIO()
    torch.save(module.state_dict(), blob)
    fresh = packed_modules()[name]
    fresh.load_state_dict(torch.load(io.BytesIO(blob.getvalue())))
    x = module_input(module)
    with torch.no_grad():
        assert torch.equal(fresh(x), module(x))


# -- gradients ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PACKED)
def test_gradient_reaches_the_input_through_the_float_twin(name):
    # training mode, as when fine-tuning the layers before it; a frozen LowRankLinear refuses training mode
    # (its factors could train: make_trainable), so it passes gradients in eval mode
    module = PACKED[name].train(not isinstance(PACKED[name], LowRankLinear))
    x = module_input(module).requires_grad_()
    y = module(x)
    assert y.requires_grad, "the output must carry autograd history"
    with torch.no_grad():
        assert torch.equal(y.detach(), module(x))  # the value is still the kernel's
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    (want,) = torch.autograd.grad(module.float_twin(x), x, g)
    torch.testing.assert_close(grad, want)
    assert grad.abs().sum() > 0
    module.eval()


def test_gradient_reaches_the_residual_of_a_fused_conv():
    module = packed_modules()["QuantConv2d"]
    x = image_input(module).requires_grad_()
    residual = torch.randn(2, 8, 7, 9, requires_grad=True)
    y = module(x, residual)
    gx, gr = torch.autograd.grad(y.sum(), (x, residual))
    wx, wr = torch.autograd.grad(module.float_twin(x, residual).sum(), (x, residual))
    torch.testing.assert_close(gx, wx)
    torch.testing.assert_close(gr, wr)


def test_maxpool_on_channels_last_passes_gradients_as_torch():
    x = torch.randn(2, 5, 9, 11).contiguous(memory_format=CL).requires_grad_()
    pool = MaxPool2d.from_float(nn.MaxPool2d(3, 2, 1))
    (grad,) = torch.autograd.grad(pool(x).sum(), x)
    (want,) = torch.autograd.grad(nn.MaxPool2d(3, 2, 1)(x).sum(), x)
    assert torch.equal(grad, want)


def test_a_model_before_an_edgeopt_layer_still_learns():
    torch.manual_seed(0)
    first = nn.Linear(10, 12)
    model = nn.Sequential(first, nn.ReLU(), QuantLinear.from_float(nn.Linear(12, 3))).train()
    model(torch.randn(4, 10)).pow(2).sum().backward()
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["QuantConv2d", "SparseConv2d int8", "SparseLinear int8"])  # the U8Output modules
def test_uint8_output_carries_no_gradient_and_says_so(name):
    module = packed_modules()[name]
    module.set_output_quant(0.1, 0)
    with pytest.raises(RuntimeError, match="carries no gradient"):
        module(module_input(module).requires_grad_())


# -- non-finite bias ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("make", [
    lambda b: QuantLinear.from_float(b(nn.Linear(6, 4))),
    lambda b: QuantConv2d.from_float(b(nn.Conv2d(3, 4, 3))),
    lambda b: QuantConv2d.from_float(b(nn.Conv2d(4, 4, 3, groups=4))),
    lambda b: LowRankLinear.from_float(b(nn.Linear(6, 4)), rank=2, weight_dtype="int8"),
    lambda b: LowRankLinear.from_float(b(nn.Linear(6, 4)), rank=2),
    lambda b: HalfLinear.from_float(b(nn.Linear(6, 4))),
    lambda b: SparseLinear.from_float(b(nn.Linear(6, 4)), dtype="int8"),
    lambda b: SparseConv2d.from_float(b(nn.Conv2d(3, 4, 3))),
], ids=["QuantLinear", "QuantConv2d", "depthwise", "LowRank int8", "LowRank fp32", "HalfLinear", "SparseLinear",
        "SparseConv2d"])
def test_non_finite_bias_is_refused(make, bad):
    def with_bad_bias(layer):
        with torch.no_grad():
            layer.bias[1] = bad
        return layer
    with pytest.raises(ValueError, match="not finite"):
        make(with_bad_bias)


# -- calibration ----------------------------------------------------------------------------------------------

CALIBRATED = {
    "QuantLinear": (lambda **kw: QuantLinear.from_float(nn.Linear(6, 4), **kw), (5, 6)),
    "QuantConv2d": (lambda **kw: QuantConv2d.from_float(nn.Conv2d(3, 4, 3), **kw), (2, 3, 6, 6)),
    "SparseLinear": (lambda **kw: SparseLinear.from_float(nn.Linear(6, 4), dtype="int8", **kw), (5, 6)),
    "SparseConv2d": (lambda **kw: SparseConv2d.from_float(nn.Conv2d(3, 4, 3), dtype="int8", **kw), (2, 3, 6, 6)),
}


@pytest.mark.parametrize("name", CALIBRATED)
def test_bad_calibration_is_refused_clearly(name):
    make, shape = CALIBRATED[name]
    good = torch.randn(shape)
    wrong_shape = torch.randn(*shape[:-1], shape[-1] + 1) if len(shape) == 2 else torch.randn(2, 5, 6, 6)
    nan = good.clone()
    nan.view(-1)[3] = math.nan
    cases = {
        "reversed": (dict(input_range=(4, -4)), ValueError, "reversed"),
        "empty range": (dict(input_range=(0, 0)), ValueError, "empty"),
        "infinite range": (dict(input_range=(0, math.inf)), ValueError, "not finite"),
        "not a pair": (dict(input_range=3.0), TypeError, "pair"),
        "wrong shape": (dict(calibration_data=[good, wrong_shape]), ValueError, "batch 1 has shape"),
        "NaN": (dict(calibration_data=[nan]), ValueError, "batch 0 holds 1 NaN"),
        "no batches": (dict(calibration_data=[]), ValueError, "holds no values"),
        "only empty batches": (dict(calibration_data=[good[:0]]), ValueError, "holds no values"),
        "all zero": (dict(calibration_data=[torch.zeros(shape)]), ValueError, "every calibration input is 0"),
        "int batch": (dict(calibration_data=[good.long()]), TypeError, "expected a float tensor"),
        "both": (dict(calibration_data=[good], input_range=(-1, 1)), ValueError, "not both"),
        "dynamic with data": (dict(mode="dynamic", calibration_data=[good]), ValueError, "make it static"),
        "static without": (dict(mode="static"), ValueError, "needs calibration_data or input_range"),
        "bad mode": (dict(mode="sttic"), ValueError, "mode must be one of"),
    }
    for case, (kwargs, error, text) in cases.items():
        with pytest.raises(error, match=text):
            make(**kwargs)
            pytest.fail(f"{case} accepted")


@pytest.mark.parametrize("name", CALIBRATED)
def test_calibration_takes_input_label_pairs_and_empty_batches(name):
    make, shape = CALIBRATED[name]
    good = torch.rand(shape) * 3 - 1
    from_pairs = make(calibration_data=[(good, torch.zeros(shape[0])), (good[:0], torch.zeros(0))])
    from_tensor = make(input_range=(float(good.min()), float(good.max())))
    assert from_pairs.mode == "static"
    assert from_pairs._input_params == from_tensor._input_params
    assert make().mode == "dynamic"


def test_set_input_range_is_checked_too():
    q = QuantLinear.from_float(nn.Linear(6, 4), input_range=(-1, 1))
    with pytest.raises(ValueError, match="reversed"):
        q.set_input_range(1, -1)


def test_model_inputs_refuse_empty_and_non_finite_batches():
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    nan = torch.randn(3, 6)
    nan[0, 0] = math.nan
    with pytest.raises(ValueError, match="item 0 is empty"):
        edgeopt.quantize(model, calibration_data=[torch.randn(0, 6)])
    with pytest.raises(ValueError, match="item 1 holds 1 NaN"):
        edgeopt.quantize(model, calibration_data=[torch.randn(3, 6), nan])


# -- one meaning of rank=1.0 ----------------------------------------------------------------------------------

def test_rank_one_point_zero_is_the_full_rank_everywhere():
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    assert choose_rank(torch.linalg.svdvals(lin.weight.detach()), 1.0) == 7
    assert LowRankLinear.from_float(lin, rank=1.0).rank == 7
    assert LowRankLinear.from_float(lin, rank=1).rank == 1  # an int is a count
    model = nn.Sequential(nn.Linear(64, 64))
    _, report = edgeopt.low_rank(model, rank=1.0, measure=False)
    assert report.layers[0].rank == 64 and not report.layers[0].converted  # full rank saves nothing
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\]"):
        LowRankLinear.from_float(lin, rank=1.5)


# -- thread count ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, True, 2 ** 40, 2.0, "2"])
def test_set_num_threads_refuses_nonsense(bad):
    with pytest.raises(ValueError, match="expected an int in"):
        edgeopt.set_num_threads(bad)
