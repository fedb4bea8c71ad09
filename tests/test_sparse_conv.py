"""Block-sparse convolution: kernel path vs torch conv (fp32) and an exact integer reference
(int8), in-place (interior) and gathered (border) pixels, both block widths and ISA paths; SparseConv2d."""
import io

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt._native import _C
from edgeopt.nn import QuantConv2d, SparseConv2d

GEOMS = [  # N, H, W, C, OC, kh, kw, stride, pad, dilation
    (1, 7, 9, 8, 20, 3, 3, 1, 1, 1), (2, 6, 5, 4, 17, 3, 3, 2, 1, 1), (1, 9, 9, 3, 16, 3, 3, 1, 1, 1),
    (1, 8, 8, 16, 33, 1, 1, 1, 0, 1), (1, 10, 11, 8, 8, 3, 5, 1, 2, 2), (1, 5, 5, 12, 16, 3, 3, 1, 0, 1),
    (1, 3, 3, 4, 9, 3, 3, 1, 1, 1), (1, 4, 13, 20, 7, 3, 3, 1, 1, 1), (1, 2, 2, 8, 8, 5, 5, 1, 2, 1),
]


def gemm_weight(rng, oc, c, kh, kw, density):
    w = rng.standard_normal((oc, kh * kw * c)).astype(np.float32)
    return w * (rng.random(w.shape) < density)


@pytest.mark.parametrize("nb", [8, 16])
@pytest.mark.parametrize("geom", GEOMS)
def test_fp32_matches_torch_conv(isa, rng, nb, geom):
    n, h, w_, c, oc, kh, kw, s, p, d = geom
    w2 = gemm_weight(rng, oc, c, kh, kw, 0.4)
    wt = torch.from_numpy(w2.reshape(oc, kh, kw, c).transpose(0, 3, 1, 2).copy())
    b = rng.standard_normal(oc).astype(np.float32)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    ref = nn.functional.conv2d(torch.from_numpy(x).double(), wt.double(), torch.from_numpy(b).double(), s, p, d).numpy()
    out = np.full((n, ref.shape[2], ref.shape[3], oc), np.nan, np.float32)
    _C.sp_conv2d(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), _C.sp_pack(w2, None, b, nb), out, (kh, kw), (s, s),
                 (p, p), (d, d), num_threads=2)
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), ref, rtol=0, atol=1e-6 * kh * kw * c * np.abs(ref).max() + 1e-5)


@pytest.mark.parametrize("nb", [8, 16])
@pytest.mark.parametrize("geom", GEOMS)
def test_int8_exact(isa, rng, nb, geom):
    n, h, w_, c, oc, kh, kw, s, p, d = geom
    wq = np.rint(gemm_weight(rng, oc, c, kh, kw, 0.4) * 20).clip(-63, 63).astype(np.int8)
    packed = _C.sp_pack(wq, np.ones(oc, np.float32), None, nb)
    x = rng.integers(0, 256, (n, h, w_, c)).astype(np.uint8)
    zp = int(rng.integers(0, 256))
    oh, ow = (h + 2 * p - d * (kh - 1) - 1) // s + 1, (w_ + 2 * p - d * (kw - 1) - 1) // s + 1
    out = np.full((n, oh, ow, oc), -5, np.int32)
    _C.sp_conv2d(x, packed, out, (kh, kw), (s, s), (p, p), (d, d), False, 1.0, zp, num_threads=2)
    # padding taps carry the zero point: exactly a conv of (x - zp) with zero padding
    xr = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64) - zp)
    wr = torch.from_numpy(wq.reshape(oc, kh, kw, c).transpose(0, 3, 1, 2).astype(np.float64))
    np.testing.assert_array_equal(out.transpose(0, 3, 1, 2), nn.functional.conv2d(xr, wr, None, s, p, d).numpy())


def test_int8_float_equals_quant_conv(isa):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(24, 16, 3, 3) < 0.3)
    x = torch.randn(2, 16, 9, 7)
    for mode in ("static", "dynamic"):
        kw = {"input_range": (-3.0, 3.0)} if mode == "static" else {}
        s = SparseConv2d.from_float(conv, dtype="int8", mode=mode, activation="relu", **kw)
        q = QuantConv2d.from_float(conv, mode=mode, activation="relu", **kw)
        assert torch.equal(s(x), q(x))  # same quantization, same integer result, same epilogue


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_module_matches_conv_and_round_trips(dtype, tmp_path):
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 32, 3, stride=2, padding=1)
    mask = torch.rand(32, 8, 3, 3) < 0.3
    s = SparseConv2d.from_float(conv, mask, dtype=dtype)
    x = torch.randn(2, 8, 11, 10)
    with torch.no_grad():
        ref = nn.functional.conv2d(x, conv.weight * mask, conv.bias, 2, 1)
    y = s(x)
    assert y.shape == ref.shape and y.is_contiguous()
    tol = 1e-4 if dtype == "fp32" else 0.05 * ref.abs().max()
    torch.testing.assert_close(y, ref, rtol=0, atol=tol)
    y_cl = s(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(y_cl, y)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    fresh = SparseConv2d(8, 32, 3, stride=2, padding=1)
    fresh.load_state_dict(torch.load(buf))
    assert fresh.dtype == dtype and torch.equal(fresh(x), y)
    with pytest.raises(ValueError, match="this module needs"):
        SparseConv2d(8, 32, 1).load_state_dict(s.state_dict())
    if dtype == "fp32":
        assert torch.equal(s.dense_weight(), (conv.weight * mask).detach())


def test_errors_opcheck_and_compile():
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(2)
    conv = nn.Conv2d(4, 16, 3, padding=1)
    s = SparseConv2d.from_float(conv, torch.rand(16, 4, 3, 3) < 0.5)
    with pytest.raises(ValueError, match="groups=1"):
        SparseConv2d.from_float(nn.Conv2d(4, 4, 3, groups=4))
    with pytest.raises(TypeError, match="float32"):
        s(torch.randn(1, 4, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        s(torch.randn(1, 3, 5, 5))
    x = torch.randn(1, 4, 6, 5)
    for xin in (x, x.contiguous(memory_format=torch.channels_last), x[0]):
        torch.library.opcheck(torch.ops.edgeopt.sparse_conv2d.default,
                              (xin, s.packed_weight, 4, 16, [3, 3], [1, 1], [1, 1], [1, 1], False, 1.0, 0, 0.0, 6.0))
    model = nn.Sequential(s, nn.ReLU()).eval()
    xin = torch.randn(1, 4, 6, 5)
    with torch.no_grad():
        out, code = run_and_get_code(torch.compile(model, fullgraph=True), xin)
        expected = model(xin)
    assert any("edgeopt.sparse_conv2d" in c for c in code)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
