"""Int8 convolution (GEMM path with tile gathering, and the depthwise kernel) vs an exact integer
reference: torch's float64 conv over (x - zero_point) with zero padding, which is exact for these
magnitudes. Run on every ISA path; float and u8 outputs are compared across paths bit for bit."""
import numpy as np
import pytest
import torch

from edgeopt._native import _C

W_MAX = _C.QS8_WEIGHT_MAX
DW_MAX = _C.QDW_WEIGHT_MAX


def exact_conv(x_u8, zp, w, stride, padding, dilation, groups):
    """x_u8 (N, H, W, C), w (O, C/groups, kh, kw) -> int64 (N, OH, OW, O)."""
    x = torch.from_numpy(x_u8.astype(np.float64) - zp).permute(0, 3, 1, 2)
    y = torch.nn.functional.conv2d(x, torch.from_numpy(w.astype(np.float64)), None, stride, padding, dilation, groups)
    return y.permute(0, 2, 3, 1).numpy().astype(np.int64)


def to_gemm_rows(w):
    """(O, Cg, kh, kw) -> (O, kh*kw*Cg) in the kernel's (ky, kx, c) order."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))


def pack_conv(w, groups, depthwise, scale=None, bias=None):
    o = w.shape[0]
    scale = np.ones(o, np.float32) if scale is None else scale
    if depthwise:
        return _C.qdw_pack(np.ascontiguousarray(w.reshape(o, -1)), scale, bias)
    return _C.qconv_pack(to_gemm_rows(w), scale, bias, groups)


def out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


SENTINEL = {np.int32: -0x2152411, np.float32: np.nan, np.uint8: 0xA5}


def run(x, packed, o, k, stride, padding, dilation, groups, out_dtype=np.int32, threads=2, **kw):
    """Into a sentinel-filled output: a cell no kernel writes keeps a value the exact comparison rejects
    (for uint8, 0xA5 is a possible result; the int32 / float tests are the ones that catch unwritten cells)."""
    oh = out_size(x.shape[1], k[0], stride[0], padding[0], dilation[0])
    ow = out_size(x.shape[2], k[1], stride[1], padding[1], dilation[1])
    out = np.full((x.shape[0], oh, ow, o), SENTINEL[out_dtype], out_dtype)
    used = _C.qconv2d(x, packed, out, k, stride, padding, dilation, groups, False, num_threads=threads, **kw)
    return out, used


# (N, H, W, C, O, k, stride, pad, dilation, groups)
GEMM_CASES = [
    (1, 8, 8, 16, 32, 1, 1, 0, 1, 1),     # 1x1 in place
    (2, 7, 5, 6, 9, 1, 1, 0, 1, 1),       # 1x1, C not a multiple of 4: gathered
    (1, 9, 9, 8, 24, 1, 2, 0, 1, 1),      # 1x1 stride 2 (ResNet downsample)
    (1, 11, 13, 3, 16, 7, 2, 3, 1, 1),    # ResNet stem shape, small
    (2, 9, 7, 5, 17, 3, 1, 1, 1, 1),      # odd channels
    (1, 6, 6, 12, 12, 3, 2, 1, 1, 3),     # grouped
    (1, 9, 9, 8, 10, 3, 1, 2, 2, 2),      # dilated, grouped
    (1, 1, 1, 7, 5, 3, 1, 1, 1, 1),       # 1-pixel input
    (1, 1, 1, 4, 3, 3, 1, 3, 1, 1),       # padding larger than the kernel overlap
    (1, 2, 3, 33, 65, (3, 1), (1, 2), (1, 0), 1, 1),  # rectangular kernel, mixed strides
    (1, 5, 5, 67, 31, 5, 1, 2, 1, 1),     # prime channels, 5x5
    (1, 61, 59, 37, 40, 3, 1, 1, 1, 1),   # > 1 MB of gathered rows: gathered tile by tile
    (1, 61, 59, 38, 40, 3, 2, 1, 1, 2),   # the same, grouped and strided
]


# The implicit-GEMM path (channels per group a multiple of 4, read in place tap by tap): ragged last tiles
# of 1, 2 and 3 pixels, output channels around the 16-column block, tiles that span image rows and images,
# strides, dilation, padding wider than the filter, grouped, and the 1x1 strided read.
IGEMM_CASES = [
    (1, 7, 7, 8, 16, 3, 1, 1, 1, 1),      # 49 pixels: last tile 1 pixel
    (1, 5, 6, 4, 17, 3, 1, 1, 1, 1),      # 30 pixels: last tile 2
    (1, 3, 5, 12, 15, 3, 1, 1, 1, 1),     # 15 pixels: last tile 3
    (3, 5, 3, 16, 33, 3, 2, 1, 1, 1),     # tiles across images, strided
    (1, 14, 14, 32, 64, 1, 2, 0, 1, 1),   # 1x1 stride 2 read in place
    (2, 9, 11, 20, 31, (1, 3), (2, 1), (0, 1), 1, 1),
    (1, 8, 8, 8, 9, 3, 1, 3, 3, 1),       # dilation 3
    (1, 2, 2, 4, 7, 5, 1, 4, 1, 1),       # padding wider than the input: most taps read the zero row
    (1, 6, 7, 16, 40, 3, 1, 1, 1, 2),     # grouped, 8 channels per group
    (1, 10, 10, 64, 48, 5, 2, 2, 1, 1),   # 5x5 stride 2
    (1, 4, 4, 512, 20, 3, 1, 1, 1, 1),    # long reduction per tap (kc 512)
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", IGEMM_CASES, ids=str)
def test_implicit_gemm_conv_s32_exact(isa, rng, case, threads):
    n, h, w_, c, o, k, s, p, d, g = case
    k, s, p, d = map(_pair, (k, s, p, d))
    w = rng.integers(-W_MAX, W_MAX + 1, (o, c // g, *k)).astype(np.int8)
    x = rng.integers(0, 256, (n, h, w_, c)).astype(np.uint8)
    zp = int(rng.integers(0, 256))
    out, _ = run(x, pack_conv(w, g, False), o, k, s, p, d, g, x_zero_point=zp, threads=threads)
    np.testing.assert_array_equal(out, exact_conv(x, zp, w, s, p, d, g))


@pytest.mark.parametrize("cin,k,pad", [(512, 3, 1), (4, 3, 2), (64, 1, 0), (3, 7, 3), (1, 3, 1)])
def test_gemm_conv_worst_case_saturation_is_exact(isa, cin, k, pad):
    # Every activation 255 (or 0) against weights of +-63: the largest pair sums vpmaddubsw meets, with the
    # zero point at both ends so the padding taps carry 0 or 255.
    o = 19
    w = np.full((o, cin, k, k), W_MAX, np.int8)
    w[1::2] = -W_MAX
    w[2, :, ::2] = -W_MAX
    for xval in (0, 255):
        x = np.full((1, 5, 6, cin), xval, np.uint8)
        x[0, 1, ::2] = 255 - xval
        for zp in (0, 255):
            out, _ = run(x, pack_conv(w, 1, False), o, (k, k), (1, 1), (pad, pad), (1, 1), 1, x_zero_point=zp)
            np.testing.assert_array_equal(out, exact_conv(x, zp, w, (1, 1), (pad, pad), (1, 1), 1))


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize("case", GEMM_CASES, ids=str)
def test_gemm_conv_s32_exact(isa, rng, case):
    n, h, w_, c, o, k, s, p, d, g = case
    k, s, p, d = map(_pair, (k, s, p, d))
    w = rng.integers(-W_MAX, W_MAX + 1, (o, c // g, *k)).astype(np.int8)
    x = rng.integers(0, 256, (n, h, w_, c)).astype(np.uint8)
    zp = int(rng.integers(0, 256))
    out, _ = run(x, pack_conv(w, g, False), o, k, s, p, d, g, x_zero_point=zp)
    np.testing.assert_array_equal(out, exact_conv(x, zp, w, s, p, d, g))


# (N, H, W, C, k, stride, pad, dilation)
DW_CASES = [
    (1, 8, 8, 16, 3, 1, 1, 1),
    (2, 7, 9, 17, 3, 2, 1, 1),
    (1, 6, 5, 1, 3, 1, 1, 1),
    (1, 10, 10, 33, 5, 1, 2, 1),
    (1, 9, 11, 48, 5, 2, 2, 1),
    (1, 9, 9, 15, 3, 1, 2, 2),
    (1, 1, 1, 20, 3, 1, 1, 1),
    (1, 2, 2, 5, 5, 1, 4, 1),
    (1, 4, 6, 24, (1, 3), 1, (0, 1), 1),
]


@pytest.mark.parametrize("case", DW_CASES, ids=str)
def test_depthwise_s32_exact(isa, rng, case):
    n, h, w_, c, k, s, p, d = case
    k, s, p, d = map(_pair, (k, s, p, d))
    w = rng.integers(-DW_MAX, DW_MAX + 1, (c, 1, *k)).astype(np.int8)
    w[0].flat[0] = DW_MAX  # the extremes are allowed here: the kernel widens to int16
    x = rng.integers(0, 256, (n, h, w_, c)).astype(np.uint8)
    zp = int(rng.integers(0, 256))
    out, _ = run(x, pack_conv(w, c, True), c, k, s, p, d, c, x_zero_point=zp)
    np.testing.assert_array_equal(out, exact_conv(x, zp, w, s, p, d, c))


def test_depthwise_worst_case_magnitudes(isa):
    c, k = 19, (5, 5)
    w = np.full((c, 1, *k), -DW_MAX, np.int8)
    w[::2] = DW_MAX
    x = np.full((1, 6, 6, c), 255, np.uint8)
    for zp in (0, 255):
        out, _ = run(x, pack_conv(w, c, True), c, k, (1, 1), (2, 2), (1, 1), c, x_zero_point=zp)
        np.testing.assert_array_equal(out, exact_conv(x, zp, w, (1, 1), (2, 2), (1, 1), c))


@pytest.mark.parametrize("depthwise", [False, True])
def test_float_and_u8_outputs_follow_the_epilogue_and_agree_across_isas(rng, depthwise):
    c, o = (21, 21) if depthwise else (13, 37)
    g = c if depthwise else 1
    wmax = DW_MAX if depthwise else W_MAX
    w = rng.integers(-wmax, wmax + 1, (o, c // g, 3, 3)).astype(np.int8)
    scale = rng.uniform(0.001, 0.01, o).astype(np.float32)
    bias = rng.normal(0, 1, o).astype(np.float32)
    packed = pack_conv(w, g, depthwise, scale, bias)
    xf = rng.normal(0, 1, (2, 9, 8, c)).astype(np.float32)
    geo = dict(o=o, k=(3, 3), stride=(2, 1), padding=(1, 1), dilation=(1, 1), groups=g)
    results = {}
    for isa_name in ["ref"] + (["avx2"] if _C.cpu_info()["avx2"] else []):
        _C.set_isa(isa_name)
        try:
            yf, (xs, xzp) = run(xf, packed, out_dtype=np.float32, x_scale=0.02, x_zero_point=120, out_min=-1.0,
                                out_max=2.0, **geo)
            yq, _ = run(xf, packed, out_dtype=np.uint8, x_scale=0.02, x_zero_point=120, out_scale=0.05,
                        out_zero_point=30, **geo)
            ys, _ = run(xf, packed, x_scale=0.02, x_zero_point=120, **geo)
        finally:
            _C.set_isa("avx2" if _C.cpu_info()["avx2"] else "ref")
        results[isa_name] = (yf, yq)
        assert (xs, xzp) == (np.float32(0.02), 120)
        expect = np.clip(ys * (np.float32(0.02) * scale) + bias, -1.0, 2.0)
        np.testing.assert_allclose(yf, expect, rtol=1e-5, atol=1e-5)
        q = np.clip(np.rint(np.clip(ys * (np.float32(0.02) * scale) + bias, -np.inf, np.inf) / np.float32(0.05)) + 30,
                    0, 255)
        assert np.abs(yq.astype(np.int32) - q).max() <= 1
    for yf, yq in results.values():
        np.testing.assert_array_equal(yf, results["ref"][0])
        np.testing.assert_array_equal(yq, results["ref"][1])


def test_dynamic_quantization_uses_the_input_range(rng):
    w = rng.integers(-W_MAX, W_MAX + 1, (8, 4, 3, 3)).astype(np.int8)
    x = rng.uniform(-3.0, 5.0, (1, 6, 6, 4)).astype(np.float32)
    out = np.empty((1, 6, 6, 8), np.float32)
    scale, zp = _C.qconv2d(x, pack_conv(w, 1, False), out, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, num_threads=2)
    assert (scale, zp) == _C.choose_u8_params(float(x.min()), float(x.max()))


def test_nan_input_is_an_error(rng):
    w = rng.integers(-W_MAX, W_MAX + 1, (8, 4, 3, 3)).astype(np.int8)
    x = np.zeros((1, 5, 5, 4), np.float32)
    x[0, 2, 3, 1] = np.nan
    out = np.empty((1, 5, 5, 8), np.float32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        _C.qconv2d(x, pack_conv(w, 1, False), out, (3, 3), (1, 1), (1, 1), (1, 1), 1, False, 0.1, 0)


def test_bad_calls_raise_clear_errors(rng):
    w = rng.integers(-W_MAX, W_MAX + 1, (8, 4, 3, 3)).astype(np.int8)
    packed = pack_conv(w, 1, False)
    x = np.zeros((1, 5, 5, 4), np.uint8)
    out = np.empty((1, 5, 5, 8), np.float32)
    with pytest.raises(ValueError, match="4-D"):
        _C.qconv2d(x[0], packed, out, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
    with pytest.raises(ValueError, match="output must have shape"):
        _C.qconv2d(x, packed, out[:, :4], (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
    with pytest.raises(ValueError, match="weights are for"):
        _C.qconv2d(np.zeros((1, 5, 5, 5), np.uint8), packed, out, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
    with pytest.raises(ValueError, match="smaller than the"):
        _C.qconv2d(np.zeros((1, 2, 2, 4), np.uint8), packed, np.empty((1, 1, 1, 8), np.float32), (3, 3), (1, 1),
                   (0, 0), (1, 1), 1, False)
    with pytest.raises(ValueError, match="depthwise weights are for"):
        dw = pack_conv(rng.integers(-5, 5, (4, 1, 3, 3)).astype(np.int8), 4, True)
        _C.qconv2d(x, dw, np.empty((1, 5, 5, 4), np.float32), (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
    with pytest.raises(ValueError, match="taller than 32"):
        tall = pack_conv(rng.integers(-5, 5, (2, 4, 33, 1)).astype(np.int8), 1, False)
        _C.qconv2d(np.zeros((1, 33, 2, 4), np.uint8), tall, np.empty((1, 1, 2, 2), np.float32), (33, 1), (1, 1),
                   (0, 0), (1, 1), 1, False)
    with pytest.raises(ValueError, match="outside"):
        _C.qconv_pack(np.full((2, 9), 64, np.int8), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="-128"):
        _C.qdw_pack(np.full((2, 9), -128, np.int8), np.ones(2, np.float32))


@pytest.mark.parametrize("depthwise", [False, True])
def test_pack_round_trip_and_tamper_detection(rng, depthwise):
    c, o, g = (6, 6, 6) if depthwise else (6, 10, 2)
    wmax = DW_MAX if depthwise else W_MAX
    w = rng.integers(-wmax, wmax + 1, (o, c // g, 3, 3)).astype(np.int8)
    scale = rng.uniform(0.1, 1, o).astype(np.float32)
    bias = rng.normal(0, 1, o).astype(np.float32)
    packed = pack_conv(w, g, depthwise, scale, bias)
    w2, s2, b2 = _C.qconv_unpack(packed, g)
    np.testing.assert_array_equal(w2, w.reshape(o, -1) if depthwise else to_gemm_rows(w))
    np.testing.assert_array_equal(s2, scale)
    np.testing.assert_array_equal(b2, bias)
    bad = packed.copy()
    bad[-1] = 0x7F  # a padding weight (or group tail) changed
    with pytest.raises(ValueError, match="rejected"):
        _C.qconv_unpack(bad, g)


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("out_dtype", [np.float32, np.uint8])
def test_fused_residual_is_added_before_the_clamp_identically_on_every_isa(rng, depthwise, out_dtype):
    c, o = (19, 19) if depthwise else (10, 21)
    g = c if depthwise else 1
    wmax = DW_MAX if depthwise else W_MAX
    w = rng.integers(-wmax, wmax + 1, (o, c // g, 3, 3)).astype(np.int8)
    scale = rng.uniform(0.001, 0.01, o).astype(np.float32)
    bias = rng.normal(0, 1, o).astype(np.float32)
    packed = pack_conv(w, g, depthwise, scale, bias)
    x = rng.integers(0, 256, (2, 7, 6, c)).astype(np.uint8)
    geo = dict(o=o, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=g, x_scale=0.02, x_zero_point=7)
    residual = rng.normal(0, 2, (2, 7, 6, o)).astype(np.float32)
    ys, _ = run(x, packed, **geo)
    expect = np.maximum(np.float32(0), (ys * (np.float32(0.02) * scale) + bias) + residual)
    results = []
    for isa_name in ["ref"] + (["avx2"] if _C.cpu_info()["avx2"] else []):
        _C.set_isa(isa_name)
        try:
            y, _ = run(x, packed, out_dtype=out_dtype, out_min=0.0, out_scale=0.03, out_zero_point=0,
                       residual=residual, **geo)
        finally:
            _C.set_isa("avx2" if _C.cpu_info()["avx2"] else "ref")
        results.append(y)
    got = results[0].astype(np.float32) * (0.03 if out_dtype == np.uint8 else 1)
    np.testing.assert_allclose(got, np.minimum(expect, 255 * 0.03) if out_dtype == np.uint8 else expect,
                               atol=0.0151 if out_dtype == np.uint8 else 1e-4, rtol=1e-5)
    for y in results[1:]:
        np.testing.assert_array_equal(y, results[0])
    with pytest.raises(ValueError, match="residual must have"):
        run(x, packed, out_dtype=out_dtype, residual=np.ascontiguousarray(residual[:, :, :3]), **geo)
