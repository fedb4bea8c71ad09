"""Depthwise int8 convolution (the 32x2 direct kernel) against an exact integer reference and across ISA
paths: channel counts around the 16/32-channel tiles, kernels 1x1 to 7x7, strides, dilation, padding wider
than the window, maps with no interior column, the weight and input extremes, and every output kind
written over sentinel-filled buffers."""
import numpy as np
import pytest
import torch

from edgeopt._native import _C

DW_MAX = _C.QDW_WEIGHT_MAX
ISAS = ["ref"] + (["avx2"] if _C.cpu_info()["avx2"] else [])


def exact_dw(x_u8, zp, w, stride, padding, dilation):
    """x_u8 (N, H, W, C), w (C, kh, kw) -> int64 (N, OH, OW, C): torch's float64 conv over x - zp (exact here)."""
    c = x_u8.shape[3]
    x = torch.from_numpy(x_u8.astype(np.float64) - zp).permute(0, 3, 1, 2)
    y = torch.nn.functional.conv2d(x, torch.from_numpy(w.astype(np.float64)).reshape(c, 1, *w.shape[1:]), None,
                                   stride, padding, dilation, c)
    return y.permute(0, 2, 3, 1).numpy().astype(np.int64)


def out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def run(x, packed, k, stride, padding, dilation, out_dtype, sentinel, threads=2, **kw):
    c = x.shape[3]
    oh = out_size(x.shape[1], k[0], stride[0], padding[0], dilation[0])
    ow = out_size(x.shape[2], k[1], stride[1], padding[1], dilation[1])
    out = np.full((x.shape[0], oh, ow, c), sentinel, out_dtype)
    _C.qconv2d(x, packed, out, k, stride, padding, dilation, c, False, num_threads=threads, **kw)
    return out


def on_isa(name, fn):
    previous = _C.isa()
    _C.set_isa(name)
    try:
        return fn()
    finally:
        _C.set_isa(previous)


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


# (N, H, W, C, kernel, stride, pad, dilation)
CASES = [
    (1, 8, 8, 32, 3, 1, 1, 1),      # one full block
    (1, 9, 7, 16, 3, 1, 1, 1),      # one xmm half block
    (1, 7, 9, 1, 3, 1, 1, 1),       # one channel
    (2, 7, 9, 17, 3, 2, 1, 1),      # 16 + 1 channels, batch 2, stride 2
    (1, 6, 11, 31, 3, 1, 1, 1),     # a wide tail: 31 channels through copied rows
    (1, 5, 13, 33, 3, 2, 1, 1),     # a block and one channel
    (1, 13, 5, 47, 5, 1, 2, 1),     # 32 + 15, 5x5
    (1, 11, 11, 48, 5, 2, 2, 1),    # 32 + 16, 5x5 stride 2
    (1, 9, 9, 97, 3, 1, 2, 2),      # prime channels, dilation 2
    (1, 7, 7, 144, 3, 2, 1, 1),     # MobileNetV2's 144 = 4.5 blocks
    (1, 3, 17, 64, 7, 1, 3, 1),     # 7x7 on a map shorter than the kernel
    (1, 1, 1, 20, 3, 1, 1, 1),      # 1-pixel input: every column is an edge column
    (1, 2, 2, 5, 5, 1, 4, 1),       # padding wider than the kernel overlap
    (1, 4, 6, 24, (1, 3), 1, (0, 1), 1),  # 1x3
    (1, 6, 4, 40, (3, 1), (2, 1), (1, 0), 1),  # 3x1, mixed strides
    (1, 5, 19, 35, 1, 1, 0, 1),     # 1x1 depthwise (a per-channel scale)
    (1, 12, 23, 64, 3, 3, 0, 1),    # stride 3, no padding
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_s32_is_exact_against_an_int64_reference(isa, rng, case):
    n, h, w_, c, k, s, p, d = case
    k, s, p, d = map(pair, (k, s, p, d))
    w = rng.integers(-DW_MAX, DW_MAX + 1, (c, *k)).astype(np.int8)
    w.flat[0], w.flat[-1] = DW_MAX, -DW_MAX
    x = rng.integers(0, 256, (n, h, w_, c)).astype(np.uint8)
    zp = int(rng.integers(0, 256))
    packed = _C.qdw_pack(np.ascontiguousarray(w.reshape(c, -1)), np.ones(c, np.float32))
    out = run(x, packed, k, s, p, d, np.int32, 0x7F7F7F7F, x_zero_point=zp)
    np.testing.assert_array_equal(out, exact_dw(x, zp, w, s, p, d))


@pytest.mark.parametrize("c", [7, 32, 50])
def test_extremes_do_not_overflow(isa, c):
    k = (5, 5)
    w = np.full((c, *k), -DW_MAX, np.int8)
    w[::2] = DW_MAX
    packed = _C.qdw_pack(np.ascontiguousarray(w.reshape(c, -1)), np.ones(c, np.float32))
    for value in (0, 255):
        x = np.full((1, 6, 7, c), value, np.uint8)
        for zp in (0, 255):
            out = run(x, packed, k, (1, 1), (2, 2), (1, 1), np.int32, 0x7F7F7F7F, x_zero_point=zp)
            np.testing.assert_array_equal(out, exact_dw(x, zp, w, (1, 1), (2, 2), (1, 1)))


# (C, kernel, stride, x zero point, out zero point, clamp)
EPILOGUE_CASES = [
    (32, 3, 1, 128, 0, (0.0, 6.0)),          # MobileNetV2: ReLU6
    (48, 3, 2, 3, 17, (-np.inf, np.inf)),    # no activation
    (17, 5, 1, 250, 255, (-1.0, 2.0)),       # out zero point 255: the clamp bounds meet
    (96, 3, 2, 0, 128, (0.25, 0.25)),        # a clamp range of one value
    (70, 5, 2, 77, 40, (0.0, np.inf)),       # ReLU
]


@pytest.mark.parametrize("case", EPILOGUE_CASES, ids=str)
def test_u8_and_f32_outputs_are_bit_identical_across_isas(rng, case):
    c, k, s, xzp, ozp, (lo, hi) = case
    w = rng.integers(-DW_MAX, DW_MAX + 1, (c, k * k)).astype(np.int8)
    scale = rng.uniform(0.002, 0.02, c).astype(np.float32)
    bias = rng.normal(0, 2, c).astype(np.float32)
    packed = _C.qdw_pack(w, scale, bias)
    x = rng.integers(0, 256, (2, 9, 13, c)).astype(np.uint8)
    geo = dict(k=(k, k), stride=(s, s), padding=(k // 2, k // 2), dilation=(1, 1))
    quant = dict(x_scale=0.05, x_zero_point=xzp, out_min=lo, out_max=hi)
    outs = {}
    for name in ISAS:
        for threads in (1, 3):
            # different sentinels per path: a cell no path writes would show as a mismatch
            yq = on_isa(name, lambda: run(x, packed, out_dtype=np.uint8, sentinel=0xA5 if name == "ref" else 0x5A,
                                          threads=threads, out_scale=0.04, out_zero_point=ozp, **geo, **quant))
            yf = on_isa(name, lambda: run(x, packed, out_dtype=np.float32, sentinel=np.nan, threads=threads,
                                          **geo, **quant))
            outs[name, threads] = (yq, yf)
    yq0, yf0 = outs["ref", 1]
    assert not np.isnan(yf0).any()
    for yq, yf in outs.values():
        np.testing.assert_array_equal(yq, yq0)
        np.testing.assert_array_equal(yf, yf0)
    # and the reference follows the documented epilogue
    acc = run(x, packed, out_dtype=np.int32, sentinel=0, x_zero_point=xzp, **geo)
    y = np.clip(acc * (np.float32(0.05) * scale) + bias, lo, hi)
    np.testing.assert_allclose(yf0, y, rtol=1e-5, atol=1e-5)
    q = np.clip(np.rint(y / np.float32(0.04)) + ozp, 0, 255)
    assert np.abs(yq0.astype(np.int32) - q).max() <= 1
    assert yq0.min() == q.min() and yq0.max() == q.max()  # the saturated ends are exact


def test_thread_counts_split_rows_and_channel_groups_identically(rng):
    c = 960  # 30 blocks on a 7x7 map: tasks split channels as well as rows
    w = rng.integers(-DW_MAX, DW_MAX + 1, (c, 9)).astype(np.int8)
    packed = _C.qdw_pack(w, rng.uniform(0.002, 0.02, c).astype(np.float32), rng.normal(0, 1, c).astype(np.float32))
    x = rng.integers(0, 256, (1, 7, 7, c)).astype(np.uint8)
    geo = dict(k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), x_scale=0.05, x_zero_point=9,
               out_scale=0.04, out_zero_point=3, out_min=0.0, out_max=6.0)
    outs = [run(x, packed, out_dtype=np.uint8, sentinel=t, threads=t, **geo) for t in (1, 2, 3, 8)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_pack_layout_round_trip_and_retired_layout_is_refused(rng):
    c, taps = 45, 25
    w = rng.integers(-DW_MAX, DW_MAX + 1, (c, taps)).astype(np.int8)
    scale = rng.uniform(0.1, 1, c).astype(np.float32)
    bias = rng.normal(0, 1, c).astype(np.float32)
    packed = _C.qdw_pack(w, scale, bias)
    w2, s2, b2 = _C.qconv_unpack(packed)
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_array_equal(s2, scale)
    np.testing.assert_array_equal(b2, bias)
    old = packed.copy()
    old[8:12] = np.frombuffer(np.uint32(0x0D16).tobytes(), np.uint8)  # the format id of the 16-channel layout
    with pytest.raises(ValueError, match="earlier edgeopt; quantize the model again"):
        _C.qconv_unpack(old)
