"""The block-sparse int8 conv adds a residual in its epilogue, exactly as the dense int8 conv does:
sp_conv2d(x, residual) equals qconv2d(x, residual) on the same weights bit for bit (float and uint8 output,
every ISA path, saturating 0 / 255 inputs and +-63 weights); refused where the kernels cannot do it."""
import numpy as np
import pytest

from edgeopt._native import _C

GEOMS = [  # (n, h, w, cin, cout, k, stride, pad)
    (1, 9, 7, 16, 32, 3, 1, 1),
    (2, 8, 8, 8, 48, 3, 2, 1),
    (1, 5, 11, 4, 17, 1, 1, 0),
]


def out_shape(n, h, w, cout, k, stride, pad):
    return n, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1, cout


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("out_u8", [False, True])
def test_sparse_residual_equals_the_dense_conv(isa, rng, geom, out_u8):
    n, h, w, cin, cout, k, stride, pad = geom
    q = rng.integers(-63, 64, size=(cout, k, k, cin), dtype=np.int8)
    q[rng.random(q.shape) < 0.6] = 0  # pruned; the rest includes +-63
    q[0, 0, 0, 0], q[-1, -1, -1, -1] = 63, -63
    scale = rng.uniform(0.001, 0.01, cout).astype(np.float32)
    bias = rng.normal(size=cout).astype(np.float32)
    x = rng.integers(0, 256, size=(n, h, w, cin), dtype=np.uint8)
    x[0, 0, 0, :] = 255
    x[-1, -1, -1, :] = 0
    shape = out_shape(n, h, w, cout, k, stride, pad)
    residual = rng.normal(size=shape).astype(np.float32)
    dense = _C.qconv_pack(q.reshape(cout, -1), scale, bias, 1)
    sparse = _C.sp_pack(q.reshape(cout, -1), scale, bias, 16)
    dtype = np.uint8 if out_u8 else np.float32
    kw = dict(dynamic=False, x_scale=0.02, x_zero_point=7, out_min=0.0, out_max=float("inf"),
              out_scale=0.05, out_zero_point=3, num_threads=2, residual=residual)
    want = np.full(shape, 77, dtype)
    got = np.full(shape, 77, dtype)  # sentinel: every cell must be written
    _C.qconv2d(x, dense, want, (k, k), (stride, stride), (pad, pad), (1, 1), 1, **kw)
    _C.sp_conv2d(x, sparse, got, (k, k), (stride, stride), (pad, pad), (1, 1), **kw)
    np.testing.assert_array_equal(got, want)
    without = np.empty(shape, dtype)
    _C.sp_conv2d(x, sparse, without, (k, k), (stride, stride), (pad, pad), (1, 1), **{**kw, "residual": None})
    assert not np.array_equal(without, got)  # the residual was really added


def test_residual_is_refused_where_the_kernels_cannot_add_it(rng):
    q = rng.integers(-63, 64, size=(16, 3 * 3 * 8), dtype=np.int8)
    x = rng.integers(0, 256, size=(1, 6, 6, 8), dtype=np.uint8)
    r = np.zeros((1, 6, 6, 16), np.float32)
    args = ((3, 3), (1, 1), (1, 1), (1, 1))
    kw = dict(dynamic=False, x_scale=0.1, x_zero_point=0)
    nb8 = _C.sp_pack(q, np.ones(16, np.float32), None, 8)
    with pytest.raises(ValueError, match="16-column blocks"):
        _C.sp_conv2d(x, nb8, np.empty((1, 6, 6, 16), np.float32), *args, **kw, residual=r)
    fp32 = _C.sp_pack(q.astype(np.float32), None, None, 16)
    with pytest.raises(ValueError, match="16-column blocks"):
        _C.sp_conv2d(x.astype(np.float32), fp32, np.empty((1, 6, 6, 16), np.float32), *args, residual=r)
    nb16 = _C.sp_pack(q, np.ones(16, np.float32), None, 16)
    with pytest.raises(ValueError, match="output's shape"):
        _C.sp_conv2d(x, nb16, np.empty((1, 6, 6, 16), np.float32), *args, **kw, residual=r[:, :5])
    with pytest.raises(ValueError, match="int32"):
        _C.sp_conv2d(x, nb16, np.empty((1, 6, 6, 16), np.int32), *args, **kw, residual=r)
    with pytest.raises(TypeError):
        _C.sp_conv2d(x, nb16, np.empty((1, 6, 6, 16), np.float32), *args, **kw, residual=r.astype(np.float64))
