"""LowRankLinear: the fused kernel equals the two-GEMM version bit for bit (both ISA paths, batch 1 and
row-block modes), K-scaled tolerance vs float64, SVD/rank choice, errors, op, compile, state_dict."""
import io

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt._native import _C
from edgeopt.nn import LowRankLinear
from edgeopt.nn.low_rank_linear import choose_rank

# (m, n, k, r): batch 1 (two-phase path), a few rows, many rows (fused row-block path), odd and prime sizes
SHAPES = [(1, 1, 1, 1), (1, 131, 257, 33), (1, 4096, 1024, 64), (3, 17, 5, 2), (7, 64, 64, 16),
          (97, 131, 257, 31), (300, 65, 129, 64), (513, 40, 24, 7)]


def call(fn, x, *packed, n, threads=2):
    out = np.full((x.shape[0], n), np.float32(-7.25e30), np.float32)
    fn(x, *packed, out, -np.inf, np.inf, threads)
    return out


@pytest.mark.parametrize("wdtype", [np.float32, np.float16])
@pytest.mark.parametrize("m,n,k,r", SHAPES)
def test_fused_equals_unfused_and_float64(isa, rng, wdtype, m, n, k, r):
    u = rng.standard_normal((n, r)).astype(wdtype)
    vt = rng.standard_normal((r, k)).astype(wdtype)
    b = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    pv, pu = _C.fw_pack(vt, None), _C.fw_pack(u, b)
    fused = call(_C.low_rank_linear, x, pv, pu, n=n)
    t = call(_C.fw_linear, x, pv, n=r)
    unfused = call(_C.fw_linear, t, pu, n=n)
    np.testing.assert_array_equal(fused, unfused)
    np.testing.assert_array_equal(call(_C.low_rank_linear, x, pv, pu, n=n, threads=1), fused)
    ref = (x.astype(np.float64) @ vt.astype(np.float64).T) @ u.astype(np.float64).T + b
    eps = np.finfo(np.float32).eps
    # first stage error ~ k*eps*|t| (|t| ~ sqrt(k)), carried through r products, plus the second stage's
    atol = 8 * eps * (k * np.sqrt(r) + r * np.sqrt(k)) + 1e-5
    np.testing.assert_allclose(fused, ref, rtol=0, atol=atol)


def test_binding_errors():
    pv = _C.fw_pack(np.ones((4, 10), np.float32), None)
    pu = _C.fw_pack(np.ones((6, 5), np.float32), np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="do not chain"):
        call(_C.low_rank_linear, np.ones((1, 10), np.float32), pv, pu, n=6)
    pv_bias = _C.fw_pack(np.ones((4, 10), np.float32), np.zeros(4, np.float32))
    pu4 = _C.fw_pack(np.ones((6, 4), np.float32), np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="carries a bias"):
        call(_C.low_rank_linear, np.ones((1, 10), np.float32), pv_bias, pu4, n=6)
    with pytest.raises(ValueError, match="expects 10"):
        call(_C.low_rank_linear, np.ones((1, 9), np.float32), pv, pu4, n=6)
    with pytest.raises(ValueError, match=r"shape \(1, 6\)"):
        call(_C.low_rank_linear, np.ones((1, 10), np.float32), pv, pu4, n=5)


def test_choose_rank():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert choose_rank(s, rank=2) == 2
    assert choose_rank(s, rank=0.5) == 2
    assert choose_rank(s, energy=16 / 22) == 1
    assert choose_rank(s, energy=0.9) == 2
    assert choose_rank(s, energy=1.0) == 4
    with pytest.raises(ValueError, match="exactly one"):
        choose_rank(s)
    with pytest.raises(ValueError, match="rank must be"):
        choose_rank(s, rank=5)
    with pytest.raises(ValueError, match="energy"):
        choose_rank(s, energy=1.5)


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return nn.Linear(257, 131)


def test_from_float_full_rank_reproduces_the_layer(isa, linear):
    lr = LowRankLinear.from_float(linear, rank=131)
    x = torch.randn(6, 257)
    with torch.no_grad():
        torch.testing.assert_close(lr(x), linear(x), rtol=0, atol=1e-4)
        assert torch.equal(lr(x), lr.unfused(x))


def test_truncation_error_is_the_svd_tail(linear):
    w = linear.weight.detach().double()
    s = torch.linalg.svdvals(w)
    lr = LowRankLinear.from_float(linear, rank=32)
    err = torch.linalg.matrix_norm(lr.weight_float().double() - w)
    expected = s[32:].pow(2).sum().sqrt()
    assert abs(float(err) - float(expected)) < 1e-4 * float(expected)
    assert lr.macs_per_row() == 32 * (257 + 131)
    half = LowRankLinear.from_float(linear, energy=0.9, weight_dtype="fp16")
    assert half.rank == choose_rank(s, energy=0.9)


def test_module_errors_and_leading_dims(linear):
    lr = LowRankLinear.from_float(linear, rank=16, activation="relu")
    x = torch.randn(257, 2, 3).permute(1, 2, 0)
    y = lr(x)
    assert y.shape == (2, 3, 131) and y.min() >= 0
    assert torch.equal(y, lr(x.contiguous()))
    with pytest.raises(ValueError, match="rank must be in"):
        LowRankLinear(10, 4, rank=5)
    with pytest.raises(ValueError, match="factors must be"):
        LowRankLinear.from_factors(torch.ones(4, 3), torch.ones(2, 10))
    with pytest.raises(TypeError, match="float32"):
        lr(torch.randn(1, 257, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="no weights yet"):
        LowRankLinear(10, 4, rank=2)(torch.randn(1, 10))


def test_state_dict_round_trip(linear, tmp_path):
    lr = LowRankLinear.from_float(linear, rank=20, weight_dtype="fp16")
    buf = io.BytesIO()
    torch.save(lr.state_dict(), buf)
    buf.seek(0)
    fresh = LowRankLinear(257, 131, rank=20)
    fresh.load_state_dict(torch.load(buf))
    assert fresh.weight_dtype == "fp16"
    x = torch.randn(3, 257)
    assert torch.equal(fresh(x), lr(x))
    torch.save(nn.Sequential(lr), tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=False)(x), lr(x))
    with pytest.raises(ValueError, match="expects 21x257"):
        LowRankLinear(257, 131, rank=21).load_state_dict(lr.state_dict())
    stale = dict(lr.state_dict())
    stale["packed_u"] = stale["packed_u"].clone()
    stale["packed_u"][4] = 3
    with pytest.raises(ValueError, match="version 3"):
        LowRankLinear(257, 131, rank=20).load_state_dict(stale)


def test_opcheck():
    torch.manual_seed(2)
    lr = LowRankLinear.from_float(nn.Linear(40, 24), rank=5)
    for x in (torch.randn(1, 40), torch.randn(50, 40)):
        torch.library.opcheck(torch.ops.edgeopt.low_rank_linear.default,
                              (x, lr.packed_v, lr.packed_u, 40, 24, float("-inf"), float("inf")))


def test_torch_compile_fullgraph_keeps_the_op():
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16)).eval()
    model[0] = LowRankLinear.from_float(model[0], rank=8)
    x = torch.randn(4, 32)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        out, code = run_and_get_code(compiled, x)
        expected = model(x)
    assert any("edgeopt.low_rank_linear" in c for c in code), "the edgeopt op is missing from the compiled code"
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_eager_fast_path_equals_the_op(linear):
    lr = LowRankLinear.from_float(linear, rank=24)
    for x in (torch.randn(1, 257), torch.randn(70, 257)):
        op = torch.ops.edgeopt.low_rank_linear(x, lr.packed_v, lr.packed_u, 257, 131, float("-inf"), float("inf"))
        assert torch.equal(lr(x), op)
        assert torch.equal(lr.unfused(x), op)


# --- int8 factors (the QuantLinear kernels, two dynamic stages in one native call) ---

@pytest.mark.parametrize("m,n,k,r", [(1, 131, 257, 33), (1, 1, 1, 1), (5, 17, 40, 3), (70, 64, 96, 16)])
def test_int8_fused_is_bit_exact_with_two_quantized_layers(isa, m, n, k, r):
    torch.manual_seed(m * 1000 + n)
    lr = LowRankLinear.from_factors(torch.randn(n, r), torch.randn(r, k), torch.randn(n), weight_dtype="int8")
    x = torch.randn(m, k)
    fused = lr(x)
    assert torch.equal(fused, lr.unfused(x))
    # the same as two QuantLinear layers built from the dequantized factors' int8 buffers, run apart
    t = torch.from_numpy(np.full((m, r), -7.0, np.float32))
    _C.qlinear(x.numpy(), lr.packed_v.numpy(), t.numpy(), True, num_threads=2)
    y = np.full((m, n), -7.0, np.float32)
    _C.qlinear(t.numpy(), lr.packed_u.numpy(), y, True, num_threads=1)
    np.testing.assert_array_equal(fused.numpy(), y)


def test_int8_accuracy_state_dict_opcheck_and_errors(linear):
    lr = LowRankLinear.from_float(linear, rank=131, weight_dtype="int8")
    x = torch.randn(8, 257)
    with torch.no_grad():
        ref = linear(x)
    y = lr(x)
    sqnr = 10 * torch.log10(ref.double().pow(2).mean() / (ref - y).double().pow(2).mean())
    assert sqnr > 25.0
    fresh = LowRankLinear(257, 131, rank=131)
    fresh.load_state_dict(lr.state_dict())
    assert fresh.weight_dtype == "int8" and torch.equal(fresh(x), y)
    torch.library.opcheck(torch.ops.edgeopt.qs8_low_rank_linear.default,
                          (x, lr.packed_v, lr.packed_u, 257, 131, float("-inf"), float("inf")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        lr(torch.full((1, 257), float("nan")))
    with pytest.raises(ValueError, match="s8 16c4"):  # a float buffer handed to the int8 op
        f32 = LowRankLinear.from_float(linear, rank=4)
        _C.qs8_low_rank_linear(x.numpy(), f32.packed_v.numpy(), f32.packed_u.numpy(), np.empty((8, 131), np.float32))
