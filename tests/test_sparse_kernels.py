"""Block-sparse GEMM kernels: int8 bit-exact against an int64 reference, fp32 bit-identical
across ISA paths and within a K-scaled tolerance of float64, on odd/prime/edge shapes, both block widths,
sentinel-filled outputs; packed-format validation."""
import numpy as np
import pytest

from edgeopt._native import _C

W_MAX = _C.QS8_WEIGHT_MAX
SENTINEL_I32 = np.int32(-0x2152411)
ISAS = ["ref"] + (["avx2"] if _C.cpu_info()["avx2"] else [])


def block_mask(rng, n, k, nb, kb, density):
    m = rng.random((-(-n // nb), -(-k // kb))) < density
    return np.kron(m, np.ones((nb, kb), bool))[:n, :k]


def sparse_int8(rng, n, k, nb, density):
    return (rng.integers(-W_MAX, W_MAX + 1, (n, k)) * block_mask(rng, n, k, nb, 4, density)).astype(np.int8)


def run_s32(x, packed, n, zp, threads=2, gutter=3):
    m = x.shape[0]
    buf = np.full((m, n + gutter), SENTINEL_I32, np.int32)
    out = buf[:, :n]
    _C.sp_qlinear(x, packed, out, False, 1.0, zp, num_threads=threads)
    assert (buf[:, n:] == SENTINEL_I32).all(), "kernel wrote past the end of an output row"
    return out


def exact_ref(x_u8, zp, w):
    return (x_u8.astype(np.int64) - zp) @ w.astype(np.int64).T


SHAPES = [(m, n, k) for m in (1, 2, 3, 5, 8, 9, 17) for n in (1, 7, 8, 16, 17, 33) for k in (1, 3, 4, 5, 31, 129)]


@pytest.mark.parametrize("nb", [8, 16])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_int8_s32_matches_int_reference(isa, rng, nb, m, n, k):
    w = sparse_int8(rng, n, k, nb, 0.5)
    x = rng.integers(0, 256, (m, k)).astype(np.uint8)
    zp = int(rng.integers(0, 256))
    packed = _C.sp_pack(w, np.ones(n, np.float32), None, nb)
    np.testing.assert_array_equal(run_s32(x, packed, n, zp), exact_ref(x, zp, w))


@pytest.mark.parametrize("nb", [8, 16])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_int8_density_extremes_and_saturation(isa, rng, nb, density):
    m, n, k = 11, 37, 4001
    w = sparse_int8(rng, n, k, nb, density)
    w[w != 0] = np.where(w[w != 0] > 0, W_MAX, -W_MAX)  # the largest pairs vpmaddubsw ever sees
    packed = _C.sp_pack(w, np.ones(n, np.float32), None, nb)
    for xval in (0, 255):
        x = np.full((m, k), xval, np.uint8)
        x[1, ::2] = 255 - xval
        for zp in (0, 255):
            np.testing.assert_array_equal(run_s32(x, packed, n, zp), exact_ref(x, zp, w))


@pytest.mark.parametrize("nb", [8, 16])
@pytest.mark.parametrize("m,n,k", [(1, 16, 64), (4, 33, 129), (13, 50, 300), (67, 131, 1021)])
def test_int8_float_epilogue_matches_dense_qlinear(rng, nb, m, n, k):
    # Same activation quantization and epilogue as the dense layer: identical floats, on every path.
    w = sparse_int8(rng, n, k, nb, 0.3)
    scale = (rng.random(n).astype(np.float32) + 0.5) * 1e-2
    bias = rng.standard_normal(n).astype(np.float32)
    dense = _C.qs8_pack(w, scale, bias)
    packed = _C.sp_pack(w, scale, bias, nb)
    x = rng.standard_normal((m, k)).astype(np.float32) * 3
    previous = _C.isa()
    try:
        results = []
        for isa in ISAS:
            _C.set_isa(isa)
            for fn, p in ((_C.qlinear, dense), (_C.sp_qlinear, packed)):
                out = np.full((m, n), np.nan, np.float32)
                params = fn(x, p, out, True, out_min=-1.0, out_max=2.5, num_threads=2)
                results.append((out, params))
                u = np.full((m, n), 7, np.uint8)
                fn(x, p, u, False, x_scale=params[0], x_zero_point=params[1], out_scale=0.02, out_zero_point=9,
                   num_threads=2)
                results.append((u, params))
    finally:
        _C.set_isa(previous)
    for i in range(0, len(results), 2):
        np.testing.assert_array_equal(results[i][0], results[0][0])
        np.testing.assert_array_equal(results[i + 1][0], results[1][0])
        assert results[i][1] == results[0][1]


@pytest.mark.parametrize("nb", [8, 16])
@pytest.mark.parametrize("m,n,k", [(1, 17, 9), (3, 16, 64), (5, 33, 31), (9, 40, 128), (31, 257, 300)])
def test_fp32_matches_float64_and_paths_agree_bit_for_bit(rng, nb, m, n, k):
    w = rng.standard_normal((n, k)).astype(np.float32) * block_mask(rng, n, k, nb, 1, 0.4)
    bias = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    packed = _C.sp_pack(w, None, bias, nb)
    outs = []
    previous = _C.isa()
    try:
        for isa in ISAS:
            _C.set_isa(isa)
            buf = np.full((m, n + 2), np.float32(-7.5))
            _C.sp_linear(x, packed, buf[:, :n], num_threads=2)
            assert (buf[:, n:] == np.float32(-7.5)).all()
            outs.append(buf[:, :n].copy())
    finally:
        _C.set_isa(previous)
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])
    ref = x.astype(np.float64) @ w.astype(np.float64).T + bias
    np.testing.assert_allclose(outs[0], ref, rtol=0, atol=1e-6 * k * np.abs(ref).max() + 1e-5)


def test_fp32_clamp_nan_strided_and_dense_equal(isa, rng):
    m, n, k = 8, 20, 36  # two 4-row tiles: one fma chain per output, as in the dense kernel
    w = rng.standard_normal((n, k)).astype(np.float32)  # no zeros: a dense matrix, every block stored
    big = rng.standard_normal((m, k + 13)).astype(np.float32)
    x = big[:, 5:5 + k]
    x[2, 3] = np.nan
    sp, dn = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    _C.sp_linear(x, _C.sp_pack(w, None, None, 16), sp, out_min=-1.0, out_max=1.0)
    _C.fw_linear(x, _C.fw_pack(w), dn, out_min=-1.0, out_max=1.0)
    np.testing.assert_array_equal(sp, dn)  # same single fma chain per output as the dense kernel
    one = np.empty((1, n), np.float32)  # the 1-row tile: 4 partial sums, (p0 + p1) + (p2 + p3)
    _C.sp_linear(x[:1], _C.sp_pack(w, None, None, 16), one)
    parts = [sum(np.float64(x[0, kk]) * w[:, kk].astype(np.float64) for kk in range(q, k, 4)) for q in range(4)]
    np.testing.assert_allclose(one[0], (parts[0] + parts[1]) + (parts[2] + parts[3]), rtol=1e-5, atol=1e-5)
    assert np.isnan(sp[2]).all() and np.nanmax(np.abs(sp)) <= 1.0


def test_pack_info_unpack_and_errors(rng):
    w = rng.standard_normal((19, 23)).astype(np.float32) * block_mask(rng, 19, 23, 8, 1, 0.3)
    p = _C.sp_pack(w, None, None, 8)
    info = _C.sp_packed_info(p)
    assert info["weight_dtype"] == "fp32" and info["block"] == (8, 1) and info["out_features"] == 19
    padded = np.zeros((24, 23), bool)
    padded[:19] = w != 0
    assert info["blocks"] == int(padded.reshape(3, 8, 23).any(axis=1).sum())
    w2, s, b = _C.sp_unpack(p)
    assert s is None and np.array_equal(w2, w) and not b.any()
    wq = sparse_int8(rng, 19, 23, 16, 0.3)
    q = _C.sp_pack(wq, np.full(19, 0.1, np.float32), np.ones(19, np.float32), 16)
    w3, s3, b3 = _C.sp_unpack(q)
    assert np.array_equal(w3, wq) and (s3 == np.float32(0.1)).all() and (b3 == 1).all()
    with pytest.raises(ValueError, match=r"outside \[-63, 63\]"):
        _C.sp_pack(np.full((2, 4), 64, np.int8), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="8 or 16"):
        _C.sp_pack(w, None, None, 4)
    with pytest.raises(ValueError, match="scale"):
        _C.sp_pack(wq, None)
    with pytest.raises(TypeError, match="float32 or int8"):
        _C.sp_pack(w.astype(np.float64))
    with pytest.raises(ValueError, match="not finite"):
        _C.sp_pack(np.full((2, 2), np.inf, np.float32))
    with pytest.raises(ValueError, match="sp_qlinear"):
        _C.sp_linear(np.ones((1, 23), np.float32), q, np.empty((1, 19), np.float32))
    with pytest.raises(ValueError, match="sp_linear"):
        _C.sp_qlinear(np.ones((1, 23), np.float32), p, np.empty((1, 19), np.float32), True)
    with pytest.raises(ValueError, match="features"):
        _C.sp_linear(np.ones((1, 22), np.float32), p, np.empty((1, 19), np.float32))
    with pytest.raises(ValueError, match="block-sparse"):
        _C.sp_linear(np.ones((1, 23), np.float32), _C.fw_pack(w), np.empty((1, 19), np.float32))
    with pytest.raises(ValueError, match="do not match"):
        _C.sp_packed_info(p[:-4].copy())


def test_corrupt_indices_are_refused_not_read(rng):
    wq = sparse_int8(rng, 16, 64, 8, 0.5)
    q = _C.sp_pack(wq, np.ones(16, np.float32), None, 8)
    info = _C.sp_packed_info(q)
    n_rows = 2
    # locate the kidx section: row_ptr (3 u32) at a 64-byte boundary after the bias
    words = q.view(np.uint32)
    hdr_end = 64 + 3 * 16 * 4
    row_ptr_off = (hdr_end + 63) // 64 * 64
    kidx_off = (row_ptr_off + 4 * (n_rows + 1) + 63) // 64 * 64
    assert words[row_ptr_off // 4 + n_rows] == info["blocks"]
    bad = q.copy()
    bad.view(np.uint32)[kidx_off // 4] = 1 << 30  # a k far past the row: refused on load, clamped in a call
    x = np.zeros((1, 64), np.uint8)
    with pytest.raises(ValueError, match="out of range"):
        _C.sp_packed_info(bad)
    for isa in ISAS:  # read as the last valid k group: a wrong result, never a read outside x
        _C.set_isa(isa)
        _C.sp_qlinear(x, bad, np.empty((1, 16), np.int32), False)
        _C.sp_linear(np.zeros((1, 64), np.float32), _C.sp_pack(np.ones((16, 64), np.float32)), np.empty((1, 16), np.float32))
    bad = q.copy()
    bad.view(np.uint32)[row_ptr_off // 4 + 1] = 10_000
    with pytest.raises(ValueError, match="row pointers"):
        _C.sp_qlinear(x, bad, np.empty((1, 16), np.int32), False)
    bad = q.copy()
    bad.view(np.uint32)[kidx_off // 4] = 2  # in range but not a 4-aligned k group
    with pytest.raises(ValueError, match="misaligned or unordered"):
        _C.sp_packed_info(bad)
    bad = q.copy()
    bad[4] = 9  # version
    with pytest.raises(ValueError, match="version 9"):
        _C.sp_packed_info(bad)


def test_large_multithreaded_u8_input(isa, rng):
    if isa == "ref":
        pytest.skip("the scalar path is covered on the smaller shapes")
    m, n, k = 203, 509, 1021
    w = sparse_int8(rng, n, k, 16, 0.2)
    x = rng.integers(0, 256, (m, k)).astype(np.uint8)
    np.testing.assert_array_equal(run_s32(x, _C.sp_pack(w, np.ones(n, np.float32), None, 16), n, 77, threads=3),
                                  exact_ref(x, 77, w))
