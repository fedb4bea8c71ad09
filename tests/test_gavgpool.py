"""Global average pooling of uint8 NHWC activations: the native op against an int64 reference of its defined
rounding, on every ISA path, over sentinel-filled outputs; and edgeopt.nn.GlobalAvgPool2d as a drop-in for
nn.AdaptiveAvgPool2d(1)."""
import io

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt._native import _C
from edgeopt.nn import GlobalAvgPool2d

# (N, H, W, C): channel counts around the 32-channel block, pixel counts around the 256-pixel flush
SHAPES = [(1, 7, 7, 512), (2, 4, 8, 256), (1, 1, 1, 1), (3, 5, 3, 33), (1, 16, 16, 31), (1, 17, 16, 64),
          (2, 2, 3, 100), (1, 40, 41, 48)]


def reference(x, x_scale, x_zp, out_scale=None, out_zp=0):
    """The definition in ukernels/gavgpool.h, with the exact sum in int64 and the one product in float32."""
    n, h, w, c = x.shape
    pixels = h * w
    v = x.reshape(n, pixels, c).astype(np.int64).sum(1) - pixels * x_zp
    if out_scale is None:
        scale = np.float32(np.float64(np.float32(x_scale)) / pixels)
        return v.astype(np.float32) * scale
    scale = np.float32(np.float64(np.float32(x_scale)) / (pixels * np.float64(np.float32(out_scale))))
    q = np.clip(v.astype(np.float32) * scale, np.float32(-out_zp), np.float32(255 - out_zp))
    return (np.rint(q).astype(np.int64) + out_zp).astype(np.uint8)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_f32_and_u8_outputs_follow_the_definition(isa, rng, shape):
    x = rng.integers(0, 256, shape).astype(np.uint8)
    n, c = shape[0], shape[3]
    for x_scale, x_zp in [(0.02, 128), (0.5, 0), (0.013, 255)]:
        out = np.full((n, c), np.nan, np.float32)
        _C.global_avgpool(x, out, x_scale, x_zp, num_threads=2)
        np.testing.assert_array_equal(out, reference(x, x_scale, x_zp))
        for out_scale, out_zp in [(0.03, 0), (0.004, 77), (1.7, 255)]:
            q = np.full((n, c), 0xA5, np.uint8)
            _C.global_avgpool(x, q, x_scale, x_zp, out_scale, out_zp, num_threads=3)
            np.testing.assert_array_equal(q, reference(x, x_scale, x_zp, out_scale, out_zp))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_f32_input_sums_in_pixel_order(isa, rng, shape):
    x = rng.normal(0, 3, shape).astype(np.float32)
    n, h, w, c = shape
    expect = np.zeros((n, c), np.float32)
    for p in range(h * w):  # float32 sums in pixel order, then one division
        expect += x.reshape(n, h * w, c)[:, p]
    expect /= np.float32(h * w)
    out = np.full((n, c), np.nan, np.float32)
    _C.global_avgpool(x, out, num_threads=2)
    np.testing.assert_array_equal(out, expect)


def test_extremes_and_saturation(isa):
    for value in (0, 255):
        x = np.full((1, 30, 30, 70), value, np.uint8)  # 900 pixels: three 16-bit flushes
        for zp in (0, 255):
            out = np.empty((1, 70), np.float32)
            _C.global_avgpool(x, out, 1.0, zp)
            np.testing.assert_array_equal(out, np.float32(value - zp))
            q = np.empty((1, 70), np.uint8)
            _C.global_avgpool(x, q, 1.0, zp, 0.25, 128)  # +-255 / 0.25 saturates both ways
            assert (q == (255 if value > zp else 0 if value < zp else 128)).all()


def test_large_inputs_split_across_threads_identically(rng):
    x = rng.integers(0, 256, (4, 28, 28, 130)).astype(np.uint8)  # 400 KB: more than one thread's share
    outs = []
    for threads in (1, 2, 5):
        out = np.empty((4, 130), np.uint8)
        _C.global_avgpool(x, out, 0.05, 9, 0.02, 3, num_threads=threads)
        outs.append(out)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    np.testing.assert_array_equal(outs[0], reference(x, 0.05, 9, 0.02, 3))


def test_bad_calls_raise_clear_errors():
    x = np.zeros((1, 4, 4, 8), np.uint8)
    with pytest.raises(TypeError, match="input must be uint8 or float32"):
        _C.global_avgpool(x.astype(np.int32), np.empty((1, 8), np.float32), 1.0, 0)
    with pytest.raises(TypeError, match="float32 for a float32 input"):
        _C.global_avgpool(x.astype(np.float32), np.empty((1, 8), np.uint8))
    with pytest.raises(ValueError, match="output must have shape"):
        _C.global_avgpool(x, np.empty((1, 7), np.float32), 1.0, 0)
    with pytest.raises(TypeError, match="output must be float32 or uint8"):
        _C.global_avgpool(x, np.empty((1, 8), np.int32), 1.0, 0)
    with pytest.raises(ValueError, match="input zero point"):
        _C.global_avgpool(x, np.empty((1, 8), np.float32), 1.0, 300)
    with pytest.raises(ValueError, match="output scale"):
        _C.global_avgpool(x, np.empty((1, 8), np.uint8), 1.0, 0, 0.0, 0)
    with pytest.raises(ValueError, match="4-D"):
        _C.global_avgpool(x[0], np.empty((1, 8), np.float32), 1.0, 0)
    with pytest.raises(ValueError, match="empty image"):
        _C.global_avgpool(np.zeros((1, 0, 4, 8), np.uint8), np.empty((1, 8), np.float32), 1.0, 0)


def test_module_is_a_drop_in_for_adaptive_avg_pool(rng):
    pool = GlobalAvgPool2d.from_float(nn.AdaptiveAvgPool2d((1, 1)))
    xf = torch.randn(2, 40, 7, 7)
    assert torch.equal(pool(xf), nn.functional.adaptive_avg_pool2d(xf, 1))
    x8 = torch.from_numpy(rng.integers(0, 256, (2, 7, 7, 40)).astype(np.uint8)).permute(0, 3, 1, 2)  # channels_last
    with pytest.raises(TypeError, match="set_input_quant"):
        pool(x8)
    pool.set_input_quant(0.05, 12)
    y = pool(x8)
    assert y.shape == (2, 40, 1, 1) and y.dtype == torch.float32
    expect = (x8.double() - 12).mean((2, 3), keepdim=True) * np.float32(0.05)
    torch.testing.assert_close(y.double(), expect, rtol=1e-6, atol=1e-6)
    assert torch.equal(pool(x8.contiguous()), y)  # an NCHW uint8 input is copied to NHWC first
    pool.set_output_quant(0.02, 5)
    yq = pool(x8)
    assert yq.dtype == torch.uint8
    np.testing.assert_array_equal(yq.reshape(2, 40).numpy(),
                                  reference(x8.permute(0, 2, 3, 1).numpy(), 0.05, 12, 0.02, 5))
    # state_dict / torch.save round trip keeps the parameters
    buf = io.BytesIO()
    torch.save(pool.state_dict(), buf)
    buf.seek(0)
    other = GlobalAvgPool2d()
    other.load_state_dict(torch.load(buf))
    assert torch.equal(other(x8), yq)
    assert torch.equal(torch.compile(pool, fullgraph=True)(x8), yq)
    with pytest.raises(ValueError, match="pools to 1x1"):
        GlobalAvgPool2d.from_float(nn.AdaptiveAvgPool2d((2, 2)))
    with pytest.raises(TypeError, match="expects nn.AdaptiveAvgPool2d"):
        GlobalAvgPool2d.from_float(nn.AvgPool2d(2))
    with pytest.raises(ValueError, match="zero point in"):
        pool.set_input_quant(0.1, 256)


def test_torch_library_op_passes_opcheck(rng):
    from edgeopt import ops

    x = torch.from_numpy(rng.integers(0, 256, (1, 3, 5, 20)).astype(np.uint8))
    torch.library.opcheck(ops.global_avgpool_u8, (x, 0.1, 3, 0.05, 7, True))
    torch.library.opcheck(ops.global_avgpool_u8, (x, 0.1, 3, 1.0, 0, False))
