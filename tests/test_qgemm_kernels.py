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


SHAPES = [(m, n, k) for m in (1, 2, 3, 4, 5, 9) for n in (1, 7, 16, 17, 33) for k in (1, 3, 4, 5, 31, 64, 129)]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_s32_matches_int_reference(isa, rng, m, n, k):
    w = rng.integers(-W_MAX, W_MAX + 1, (n, k)).astype(np.int8)
    x = rng.integers(0, 256, (m, k)).astype(np.uint8)
    zp = int(rng.integers(0, 256))
    out = run_s32(x, pack(w), n, zp)
    np.testing.assert_array_equal(out, exact_ref(x, zp, w))


@pytest.mark.parametrize("k", [4000, 4001, 4096 + 3])
@pytest.mark.parametrize("wval", [W_MAX, -W_MAX])
def test_worst_case_saturation_inputs_are_exact(isa, k, wval):
    # Every activation 255 against every weight +-63: the largest pair sums vpmaddubsw ever sees.
    m, n = 5, 19
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
