"""Float-weight GEMM (fp32 / fp16 packed weights) and HalfLinear: paths bit-exact with each other,
K-scaled tolerance against float64, sentinels, edge shapes, errors, op, compile, state_dict."""
import io

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt._native import _C
from edgeopt.nn import HalfLinear

SHAPES = [(1, 1, 1), (1, 16, 16), (1, 17, 3), (1, 63, 31), (1, 64, 64), (1, 65, 257), (1, 131, 4001),
          (2, 49, 7), (3, 33, 13), (4, 16, 8), (5, 131, 257), (13, 97, 101), (64, 100, 33)]


def run(x, packed, n, threads=2, lo=-np.inf, hi=np.inf):
    out = np.full((x.shape[0], n), np.float32(-7.25e30), np.float32)  # sentinel: unwritten cells show
    _C.fw_linear(x, packed, out, lo, hi, threads)
    return out


def reference(x, w, b):
    return x.astype(np.float64) @ w.astype(np.float64).T + b


def tol(k):
    # fp32 accumulation of k products of N(0,1) values: a bound linear in k (k roundings of partial sums
    # that stay around sqrt(k)), with headroom; the paths are compared bit for bit separately.
    return 8 * k * np.finfo(np.float32).eps + 1e-6


@pytest.mark.parametrize("wdtype", [np.float32, np.float16])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_float64_and_paths_agree_bit_for_bit(rng, wdtype, m, n, k):
    w = rng.standard_normal((n, k)).astype(wdtype)
    b = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    packed = _C.fw_pack(w, b)
    outs = {}
    previous = _C.isa()
    try:
        for isa in ["ref"] + (["avx2"] if _C.cpu_info()["avx2"] else []):
            _C.set_isa(isa)
            outs[isa] = run(x, packed, n)
    finally:
        _C.set_isa(previous)
    np.testing.assert_allclose(outs["ref"], reference(x, w, b), rtol=0, atol=tol(k))
    for isa, out in outs.items():
        np.testing.assert_array_equal(out, outs["ref"], err_msg=isa)


def test_sequential_fma_order_is_the_contract(isa):
    # One chain per output, fma at every step: a case where another order or unfused multiply-adds differ.
    k = 3
    x = np.array([[1.0, 1e8, -1e8]], np.float32)
    w = np.array([[1e-8, 1.0, 1.0]], np.float32)
    out = run(x, _C.fw_pack(w, None), 1)
    acc = np.float32(0)
    for i in range(k):
        acc = np.float32(np.float64(x[0, i]) * np.float64(w[0, i]) + np.float64(acc))  # exact product, one rounding
    assert out[0, 0] == acc


def test_half_conversion_edge_values(isa):
    # Subnormal, smallest normal, max, negative zero, one: widened exactly on both paths.
    vals = np.array([2.0 ** -24, 2.0 ** -14, 65504.0, -0.0, 1.0, -3.0 ** -5], np.float16)
    w = np.diag(vals).astype(np.float16)
    x = np.eye(len(vals), dtype=np.float32)
    out = run(x, _C.fw_pack(w, None), len(vals))
    np.testing.assert_array_equal(out, np.diag(vals.astype(np.float32)))


def test_threads_strided_rows_and_clamp(isa, rng):
    n, k = 300, 70
    w = rng.standard_normal((n, k)).astype(np.float16)
    packed = _C.fw_pack(w, None)
    big = rng.standard_normal((37, 2 * k)).astype(np.float32)
    x = big[:, :k]  # row stride 2k
    one = run(np.ascontiguousarray(x), packed, n, threads=1)
    np.testing.assert_array_equal(run(x, packed, n, threads=3), one)
    out_big = np.full((37, n + 5), 9.0, np.float32)
    _C.fw_linear(x, packed, out_big[:, :n], -0.5, 0.5, 2)
    np.testing.assert_array_equal(out_big[:, :n], np.clip(one, -0.5, 0.5))
    assert (out_big[:, n:] == 9.0).all()


def test_nan_input_propagates(isa):
    w = np.ones((20, 4), np.float32)
    x = np.array([[np.nan, 1, 1, 1]], np.float32)
    assert np.isnan(run(x, _C.fw_pack(w, None), 20)).all()


def test_pack_unpack_and_errors():
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    packed = _C.fw_pack(w.astype(np.float16), np.ones(3, np.float32))
    info = _C.fw_packed_info(packed)
    assert info["weight_dtype"] == "fp16" and (info["out_features"], info["in_features"]) == (3, 4)
    w2, b2 = _C.fw_unpack(packed)
    assert w2.dtype == np.float16 and np.array_equal(w2, w.astype(np.float16)) and np.array_equal(b2, np.ones(3))
    with pytest.raises(TypeError, match="float32 or float16"):
        _C.fw_pack(w.astype(np.float64))
    with pytest.raises(ValueError, match="not finite"):
        _C.fw_pack(np.array([[np.inf]], np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.fw_pack(np.asfortranarray(np.ones((3, 4), np.float32)))
    with pytest.raises(TypeError, match="input must be float32"):
        _C.fw_linear(np.ones((1, 4), np.float64), packed, np.empty((1, 3), np.float32))
    with pytest.raises(ValueError, match="expects 4"):
        _C.fw_linear(np.ones((1, 5), np.float32), packed, np.empty((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(1, 3\)"):
        _C.fw_linear(np.ones((1, 4), np.float32), packed, np.empty((1, 4), np.float32))
    # An int8 buffer is not a float buffer, and a float buffer is not an int8 one.
    q = _C.qs8_pack(np.ones((3, 4), np.int8), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="not a float-weight layout"):
        _C.fw_linear(np.ones((1, 4), np.float32), q, np.empty((1, 3), np.float32))
    with pytest.raises(ValueError, match="s8 16c4"):
        _C.qs8_packed_info(packed)
    bad = packed.copy()
    bad[4] = 9
    with pytest.raises(ValueError, match="version 9"):
        _C.fw_packed_info(bad)
    bad = packed.copy()
    bad[-2:] = [0x00, 0x3C]  # a padding column (n=3 is padded to 16) gets weight 1.0
    with pytest.raises(ValueError, match="non-zero padding"):
        _C.fw_packed_info(bad)
    bad = packed.copy()
    bad[64 + 16 * 4: 64 + 16 * 4 + 2] = [0x00, 0x7C]  # weight (0, 0) becomes +Inf (binary16 0x7c00)
    with pytest.raises(ValueError, match=r"\(0, 0\) is not finite"):
        _C.fw_packed_info(bad)
    with pytest.raises(ValueError, match="do not match"):
        _C.fw_packed_info(packed[:-2].copy())


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return nn.Linear(257, 131)


def test_half_linear_matches_linear_with_rounded_weights(isa, linear):
    h = HalfLinear.from_float(linear)
    x = torch.randn(9, 257)
    with torch.no_grad():
        ref = nn.functional.linear(x.double(), linear.weight.half().double(), linear.bias.double())
        torch.testing.assert_close(h(x).double(), ref, rtol=0, atol=tol(257))
        # fp16 storage vs the fp32 layer: error from the weight rounding only (~2^-11 relative)
        assert (h(x) - linear(x)).abs().max() < 5e-3
    f32 = HalfLinear.from_float(linear, weight_dtype="fp32")
    with torch.no_grad():
        torch.testing.assert_close(f32(x), linear(x), rtol=0, atol=tol(257))
    assert torch.equal(h.weight_float(), linear.weight.detach().half().float())


def test_half_linear_leading_dims_activation_and_errors(linear):
    h = HalfLinear.from_float(linear, activation="relu")
    x = torch.randn(257, 3, 5).permute(1, 2, 0)
    y = h(x)
    assert y.shape == (3, 5, 131) and y.min() >= 0
    assert torch.equal(y, h(x.contiguous()))
    with pytest.raises(TypeError, match="float32"):
        h(torch.randn(2, 257, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 257\)"):
        h(torch.randn(2, 256))
    with pytest.raises(ValueError, match="weight_dtype"):
        HalfLinear.from_float(linear, weight_dtype="bf16")
    with pytest.raises(TypeError, match="nn.Linear"):
        HalfLinear.from_float(nn.Conv2d(1, 1, 1))
    big = nn.Linear(4, 4)
    with torch.no_grad():
        big.weight[0, 0] = 1e6
    with pytest.raises(ValueError, match="fp16 range"):
        HalfLinear.from_float(big)
    with pytest.raises(RuntimeError, match="no weights yet"):
        HalfLinear(4, 4)(torch.randn(1, 4))


def test_state_dict_round_trip(linear, tmp_path):
    h = HalfLinear.from_float(linear, activation="relu6")
    buf = io.BytesIO()
    torch.save(h.state_dict(), buf)
    buf.seek(0)
    fresh = HalfLinear(257, 131, weight_dtype="fp32")  # dtype and activation come from the checkpoint
    fresh.load_state_dict(torch.load(buf))
    assert fresh.weight_dtype == "fp16" and fresh.activation == "relu6"
    x = torch.randn(4, 257)
    assert torch.equal(fresh(x), h(x))
    torch.save(nn.Sequential(h), tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=False)(x), h(x))
    state = h.state_dict()
    with pytest.raises(ValueError, match="131x257"):
        HalfLinear(256, 131).load_state_dict(state)
    stale = dict(state)
    stale["packed_weight"] = state["packed_weight"].clone()
    stale["packed_weight"][4] = 7
    with pytest.raises(ValueError, match="version 7"):
        HalfLinear(257, 131).load_state_dict(stale)


def test_opcheck():
    torch.manual_seed(2)
    h = HalfLinear.from_float(nn.Linear(40, 24))
    x = torch.randn(5, 40)
    torch.library.opcheck(torch.ops.edgeopt.fw_linear.default, (x, h.packed_weight, 40, 24, float("-inf"), float("inf")))
    torch.library.opcheck(torch.ops.edgeopt.fw_linear.default, (x[:1], h.packed_weight, 40, 24, 0.0, 6.0))


def test_torch_compile_fullgraph_keeps_the_op():
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16)).eval()
    model[0] = HalfLinear.from_float(model[0])
    x = torch.randn(4, 32)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        out, code = run_and_get_code(compiled, x)
        expected = model(x)
    assert any("edgeopt.fw_linear" in c for c in code), "the edgeopt op is missing from the compiled code"
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_eager_fast_path_equals_the_op(linear):
    # forward calls the native function directly in eager mode (op dispatch costs more than small layers)
    h = HalfLinear.from_float(linear, activation="relu")
    x = torch.randn(3, 257)
    op = torch.ops.edgeopt.fw_linear(x, h.packed_weight, 257, 131, 0.0, float("inf"))
    assert torch.equal(h(x), op)
