"""Int8 GEMM kernels vs a plain int64 numpy reference: integer results bit-exact on every ISA path."""
import numpy as np
import pytest

from edgeopt._native import _C

SENTINEL_I32 = np.int32(-0x2152411)  # arbitrary value no kernel result here can take
W_MAX = _C.QS8_WEIGHT_MAX


def pack(w, scale=None, bias=None):
    n = w.shape[0]
    if scale is None:
        scale = np.ones(n, np.float32)
    return _C.qs8_pack(w, scale, bias)


def exact_ref(x_u8, zp, w):
    return (x_u8.astype(np.int64) - zp) @ w.astype(np.int64).T


def run_s32(x, packed, n, zp, threads=2, gutter=3):
    """Runs into a sentinel-filled buffer wider than the output: every cell must be written, and the
    gutter columns (beyond n) must stay untouched."""
    m = x.shape[0]
    buf = np.full((m, n + gutter), SENTINEL_I32, np.int32)
    out = buf[:, :n]
    _C.qlinear(x, packed, out, False, 1.0, zp, num_threads=threads)
    assert (buf[:, n:] == SENTINEL_I32).all(), "kernel wrote past the end of an output row"
    return out


SHAPES = [(m, n, k) for m in (1, 2, 3, 4, 5, 9) for n in (1, 7, 8, 16, 17, 24, 33) for k in (1, 3, 4, 5, 31, 64, 129)]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_s32_matches_int_reference(isa, rng, m, n, k):
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    x = rng.integers(0, 256, (m, k)).astype(np.uint8)
    zp = int(rng.integers(0, 256))
    out = run_s32(x, pack(w), n, zp)
    np.testing.assert_array_equal(out, exact_ref(x, zp, w))


@pytest.mark.parametrize("k", [4000, 4001, 4096 + 3])
@pytest.mark.parametrize("wval", [W_MAX, -W_MAX])
@pytest.mark.parametrize("n", [19, 24])  # last column block 3 or 8 wide: the kernels' 8-column path
def test_worst_case_saturation_inputs_are_exact(isa, k, wval, n):
    # Every activation 255 against every weight +-63: the largest pair sums vpmaddubsw ever sees.
    m = 5
    w = np.full((n, k), wval, np.int8)
    w[1::2, ::3] = -wval  # mixed signs in some rows too
    for xval in (0, 255):
        x = np.full((m, k), xval, np.uint8)
        x[1, ::2] = 255 - xval
        for zp in (0, 128, 255):
            out = run_s32(x, pack(w), n, zp)
            np.testing.assert_array_equal(out, exact_ref(x, zp, w))


def test_pack_rejects_weights_the_kernel_cannot_do_exactly():
    for bad in (-128, 127, W_MAX + 1, -W_MAX - 1):
        w = np.zeros((3, 8), np.int8)
        w[2, 5] = bad
        with pytest.raises(ValueError, match=r"outside \[-63, 63\]"):
            pack(w)


def test_large_prime_shape_multithreaded(isa, rng):
    if isa == "ref":
        pytest.skip("the scalar path is covered on the smaller shapes")
    m, n, k = 67, 509, 1021
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    x = rng.integers(0, 256, (m, k)).astype(np.uint8)
    np.testing.assert_array_equal(run_s32(x, pack(w), n, 77, threads=3), exact_ref(x, 77, w))


def test_strided_input_rows(isa, rng):
    m, n, k = 6, 20, 36
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    big = rng.integers(0, 256, (m, k + 13)).astype(np.uint8)
    x = big[:, 5:5 + k]
    np.testing.assert_array_equal(run_s32(x, pack(w), n, 9), exact_ref(np.ascontiguousarray(x), 9, w))


@pytest.mark.parametrize("m,n,k", [(1, 16, 64), (4, 33, 129), (13, 50, 300), (64, 40, 1024)])
def test_float_epilogue_matches_reference_and_paths_agree(rng, m, n, k):
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    scale = (rng.random(n).astype(np.float32) + 0.5) * 1e-2
    bias = rng.standard_normal(n).astype(np.float32)
    packed = pack(w, scale, bias)
    x = rng.standard_normal((m, k)).astype(np.float32) * 3
    results = {}
    previous = _C.isa()
    try:
        for isa in ["ref"] + (["avx2"] if _C.cpu_info()["avx2"] else []):
            _C.set_isa(isa)
            out = np.full((m, n), np.nan, np.float32)
            s, zp = _C.qlinear(x, packed, out, True, num_threads=2)
            results[isa] = (out, s, zp)
    finally:
        _C.set_isa(previous)
    out, s, zp = results["ref"]
    for other in results.values():  # same fma-based epilogue on every path: bit-identical floats
        np.testing.assert_array_equal(other[0], out)
        assert (other[1], other[2]) == (s, zp)
    # Against float64 math on the quantized operands; float32 rounding grows with K.
    q = np.clip(np.rint(x / np.float32(s)) + zp, 0, 255)
    expected = ((q - zp) @ w.astype(np.float64).T) * (np.float64(s) * scale) + bias
    tol = 1e-6 * k * np.abs(expected).max() + 1e-5
    np.testing.assert_allclose(out, expected, atol=tol, rtol=0)


def test_u8_output_and_clamp(isa, rng):
    m, n, k = 7, 21, 40
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    scale = np.full(n, 0.01, np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    packed = pack(w, scale, bias)
    x = rng.standard_normal((m, k)).astype(np.float32)
    f = np.empty((m, n), np.float32)
    s, zp = _C.qlinear(x, packed, f, True, out_min=0.0, out_max=6.0, num_threads=2)
    assert f.min() >= 0.0 and f.max() <= 6.0
    u = np.full((m, n), 7, np.uint8)
    _C.qlinear(x, packed, u, False, x_scale=s, x_zero_point=zp, out_min=0.0, out_max=6.0, out_scale=0.05,
               out_zero_point=3, num_threads=2)
    expected = np.clip(np.rint(f / np.float32(0.05)) + 3, 0, 255)
    assert np.abs(u.astype(np.int32) - expected).max() <= 1  # f32 division vs multiply by 1/scale
    assert (np.abs(u.astype(np.int32) - expected) == 0).mean() > 0.99


def test_u8_input_chains(isa, rng):
    # A uint8 input with its own (scale, zero point) gives the same result as the float input it encodes.
    m, n, k = 3, 18, 22  # k not a multiple of 4: the kernel must pad a copy, not read past the rows
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    packed = pack(w, np.full(n, 0.02, np.float32))
    x_u8 = rng.integers(0, 256, (m, k)).astype(np.uint8)
    out_u8in = np.empty((m, n), np.float32)
    _C.qlinear(x_u8, packed, out_u8in, False, 0.1, 100, num_threads=2)
    x_f32 = ((x_u8.astype(np.float32) - 100) * np.float32(0.1))
    out_f32in = np.empty((m, n), np.float32)
    _C.qlinear(x_f32, packed, out_f32in, False, 0.1, 100, num_threads=2)
    np.testing.assert_array_equal(out_u8in, out_f32in)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_raises(isa, bad):
    w = np.ones((4, 20), np.int8)
    x = np.zeros((3, 20), np.float32)
    x[2, 17] = bad
    out = np.empty((3, 4), np.float32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        _C.qlinear(x, pack(w), out, True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        _C.qlinear(x, pack(w), out, False, 0.1, 0)


def test_static_input_saturates_out_of_range(isa):
    w = np.ones((1, 4), np.int8)
    x = np.array([[1e9, -1e9, 0.5, 0.0]], np.float32)
    out = np.empty((1, 1), np.int32)
    _C.qlinear(x, pack(w), out, False, 0.01, 10)
    # clamp(q) - zp: 255 - 10, 0 - 10, round(50) + 10 - 10, 0
    assert out[0, 0] == (245 - 10 + 50 + 0)


def test_binding_errors_are_clear():
    w = np.ones((4, 8), np.int8)
    packed = pack(w)
    out = np.empty((2, 4), np.float32)
    with pytest.raises(TypeError, match="float32 or uint8"):
        _C.qlinear(np.zeros((2, 8), np.float64), packed, out, True)
    with pytest.raises(ValueError, match="8 features|expects 8"):
        _C.qlinear(np.zeros((2, 9), np.float32), packed, out, True)
    with pytest.raises(ValueError, match="shape"):
        _C.qlinear(np.zeros((3, 8), np.float32), packed, out, True)
    with pytest.raises(ValueError, match="contiguous last dimension"):
        _C.qlinear(np.zeros((8, 2), np.float32).T, packed, out, True)
    with pytest.raises(TypeError, match="output must be"):
        _C.qlinear(np.zeros((2, 8), np.float32), packed, np.empty((2, 4), np.float64), True)
    with pytest.raises(ValueError, match="dynamic must be False"):
        _C.qlinear(np.zeros((2, 8), np.uint8), packed, out, True)


def test_packed_header_is_checked():
    w = np.arange(-30, 30, dtype=np.int8).reshape(6, 10)
    packed = pack(w, np.linspace(0.1, 1, 6).astype(np.float32), np.arange(6, dtype=np.float32))
    info = _C.qs8_packed_info(packed)
    assert (info["out_features"], info["in_features"], info["has_bias"]) == (6, 10, True)
    q, scale, bias = _C.qs8_unpack(packed)
    np.testing.assert_array_equal(q, w)
    np.testing.assert_array_equal(bias, np.arange(6, dtype=np.float32))
    bad_magic = packed.copy()
    bad_magic[0] ^= 0xFF
    with pytest.raises(ValueError, match="magic"):
        _C.qs8_packed_info(bad_magic)
    stale = packed.copy()
    stale[4] = 99  # version field
    with pytest.raises(ValueError, match="version 99"):
        _C.qs8_packed_info(stale)
    with pytest.raises(ValueError, match="do not match"):
        _C.qs8_packed_info(packed[:-16].copy())
    with pytest.raises(ValueError, match="shorter than the header"):
        _C.qs8_packed_info(packed[:10].copy())


def test_thread_pool_runs_every_task_exactly_once():
    # Calls whose task counts change (3, 17, 1, 64, ...) with workers that sleep between calls.
    assert _C._parallel_selftest(3000, 2) == 0
    assert _C._parallel_selftest(300, 4) == 0


@pytest.mark.parametrize("position", [3, 37])  # inside the 16-wide vector loop, and in the scalar tail
def test_nonfinite_detected_in_vector_and_tail(isa, position):
    w = np.ones((4, 40), np.int8)
    x = np.zeros((3, 40), np.float32)
    x[1, position] = np.nan
    out = np.empty((3, 4), np.float32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        _C.qlinear(x, pack(w), out, True)
    x[1, position] = -np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        _C.qlinear(x, pack(w), out, False, 0.1, 3)


def test_static_saturation_in_vector_path(isa):
    k = 40
    w = np.ones((1, k), np.int8)
    x = np.zeros((1, k), np.float32)
    x[0, :20] = 1e9
    x[0, 20:] = -1e9
    out = np.empty((1, 1), np.int32)
    _C.qlinear(x, pack(w), out, False, 0.01, 10)
    assert out[0, 0] == 20 * (255 - 10) + 20 * (0 - 10)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_float_and_u8_outputs_respect_row_stride(isa, rng, dtype):
    m, n, k, gutter = 5, 19, 24, 5
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    packed = pack(w, np.full(n, 0.01, np.float32), rng.standard_normal(n).astype(np.float32))
    big_x = rng.standard_normal((m, k + 7)).astype(np.float32)
    x = big_x[:, 3:3 + k]  # strided float rows
    sentinel = 77
    buf = np.full((m, n + gutter), sentinel, dtype)
    kwargs = dict(out_scale=0.05, out_zero_point=128) if dtype == np.uint8 else {}
    s, zp = _C.qlinear(x, packed, buf[:, :n], True, num_threads=2, **kwargs)
    assert (buf[:, n:] == sentinel).all()
    dense = np.empty((m, n), dtype)
    _C.qlinear(np.ascontiguousarray(x), packed, dense, True, num_threads=2, **kwargs)
    np.testing.assert_array_equal(buf[:, :n], dense)


def test_u8_input_rows_not_multiple_of_4_are_not_overread(isa, rng):
    # The input's last row ends exactly at a page that may not be read: reading past it would crash.
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    m, k, n = 3, 21, 8
    region = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    libc = ctypes.CDLL(None)
    assert libc.mprotect(ctypes.c_void_p(base + page), ctypes.c_size_t(page), 0) == 0  # PROT_NONE guard
    try:
        arr = np.frombuffer(region, np.uint8, count=m * k, offset=page - m * k).reshape(m, k)
        arr[:] = rng.integers(0, 256, (m, k))
        w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
        out = np.empty((m, n), np.int32)
        _C.qlinear(arr, pack(w), out, False, 1.0, 5, num_threads=2)
        np.testing.assert_array_equal(out, exact_ref(np.array(arr), 5, w))
        del arr
    finally:
        libc.mprotect(ctypes.c_void_p(base + page), ctypes.c_size_t(page), 3)
        region.close()


def test_loaded_buffers_are_validated_in_full():
    w = np.arange(-20, 20, dtype=np.int8).reshape(4, 10)
    good = pack(w, np.full(4, 0.5, np.float32))
    _C.qs8_packed_info(good)
    data_offset = len(good) - 16 * 12  # n_padded = 16 columns x k_padded = 12 bytes of blocks
    tampered = good.copy()
    tampered[data_offset] = np.uint8(np.int8(-128).view(np.uint8))  # column 0, k 0
    with pytest.raises(ValueError, match="outside \\[-63, 63\\]"):
        _C.qs8_packed_info(tampered)
    padding = good.copy()
    padding[len(good) - 1] = 1  # last column of the last block is padding
    with pytest.raises(ValueError, match="padding"):
        _C.qs8_packed_info(padding)
    colsum = good.copy()
    colsum[64] ^= 1  # first column sum
    with pytest.raises(ValueError, match="column sum"):
        _C.qs8_packed_info(colsum)
    wide = good.copy()
    wide[36] = 127  # header weight_max
    with pytest.raises(ValueError, match="range \\+-127"):
        _C.qs8_packed_info(wide)


def test_equivalent_dtypes_from_pickle_are_accepted():
    import pickle

    w = np.ones((4, 8), np.int8)
    packed = pickle.loads(pickle.dumps(pack(w)))
    x = pickle.loads(pickle.dumps(np.ones((2, 8), np.float32)))
    out = np.empty((2, 4), np.float32)
    _C.qlinear(x, packed, out, True)
    assert np.isfinite(out).all()


def test_nan_clamp_bounds_are_refused():
    out = np.empty((1, 4), np.float32)
    with pytest.raises(ValueError, match="min <= max"):
        _C.qlinear(np.ones((1, 8), np.float32), pack(np.ones((4, 8), np.int8)), out, True, out_min=np.nan)


def test_u8_params_edge_ranges():
    assert _C.choose_u8_params(0.0, 0.0) == (1.0, 0)
    assert _C.choose_u8_params(0.0, 1e-44) == (1.0, 0)  # step below the smallest normal float
    scale, zp = _C.choose_u8_params(-3e38, 3e38)
    assert np.isfinite(scale) and zp == 128
    scale, zp = _C.choose_u8_params(-1.0, 3.0)
    assert abs(scale - 4 / 255) < 1e-7 and zp == 64
