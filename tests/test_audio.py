"""The torch audio front end against independent numpy/scipy computations."""
import math

import numpy as np
import pytest
import torch
from scipy.signal import get_window, resample_poly

from edgeopt.data.audio import LogMel, LogMelConfig, StreamingLogMel, StreamingResampler, frame, resample


def _random_chunks(signal: np.ndarray, seed: int, max_chunk: int):
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(signal):
        k = int(rng.integers(1, max_chunk))
        yield signal[i : i + k]
        i += k


@pytest.mark.parametrize("rates", [(48000, 16000), (8000, 16000), (44100, 16000), (16000, 8000), (22050, 16000)])
def test_resample_matches_scipy_resample_poly(rates):
    orig, new = rates
    x = np.random.default_rng(0).standard_normal(4099)
    g = math.gcd(orig, new)
    expected = resample_poly(x, new // g, orig // g)
    got = resample(torch.from_numpy(x), orig, new).numpy()
    assert got.shape == expected.shape == (math.ceil(len(x) * new / orig),)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    got32 = resample(torch.from_numpy(x).float(), orig, new).numpy()
    np.testing.assert_allclose(got32, expected, atol=2e-5)


def test_resample_keeps_a_band_limited_tone():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 440 * t)
    down = resample(torch.from_numpy(tone), 16000, 8000).numpy()
    expected = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    np.testing.assert_allclose(down[200:-200], expected[200:-200], atol=1e-3)


def test_resample_batched_and_identity():
    x = torch.randn(3, 1000, dtype=torch.float64)
    y = resample(x, 48000, 16000)
    np.testing.assert_allclose(y[1].numpy(), resample_poly(x[1].numpy(), 1, 3), atol=1e-12)
    assert torch.equal(resample(x, 16000, 16000), x)
    with pytest.raises(TypeError, match="floating-point"):
        resample(torch.zeros(10, dtype=torch.int16), 16000, 8000)
    with pytest.raises(ValueError, match="positive integers"):
        resample(x, 0, 8000)


@pytest.mark.parametrize("rates", [(48000, 16000), (8000, 16000), (44100, 16000)])
def test_streaming_resampler_equals_offline(rates):
    x = np.random.default_rng(1).standard_normal(7001)
    offline = resample(torch.from_numpy(x), *rates)
    stream = StreamingResampler(*rates, dtype=torch.float64)
    pieces = [stream.push(torch.from_numpy(c)) for c in _random_chunks(x, 2, 900)]
    pieces.append(stream.flush())
    assert sum(p.numel() for p in pieces[:-1]) > 0.9 * offline.numel()  # it really streams
    torch.testing.assert_close(torch.cat(pieces), offline, rtol=0, atol=1e-12)


def test_frame_matches_a_loop():
    x = torch.arange(23.0)
    frames = frame(x, 5, 3)
    expected = np.stack([np.arange(23.0)[i : i + 5] for i in range(0, 23 - 5 + 1, 3)])
    np.testing.assert_array_equal(frames.numpy(), expected)
    assert frame(torch.zeros(4), 5, 3).shape == (0, 5)


def _reference_logmel(x: np.ndarray, sr, n_fft, win, hop, n_mels, f_min, f_max, floor):
    """Written from the textbook definitions, loop by loop, in float64."""
    def mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    lo, hi = mel(f_min), mel(f_max)
    points = [hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    weights = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = points[m], points[m + 1], points[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if left < f <= centre:
                weights[m, k] = (f - left) / (centre - left)
            elif centre < f < right:
                weights[m, k] = (right - f) / (right - centre)
    window = get_window("hann", win, fftbins=True)
    columns = []
    for start in range(0, len(x) - win + 1, hop):
        spectrum = np.fft.rfft(x[start : start + win] * window, n=n_fft)
        columns.append(np.log(weights @ (np.abs(spectrum) ** 2) + floor))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize(
    "cfg",
    [
        LogMelConfig(sample_rate=16000, n_fft=1024, win_length=800, hop_length=320, n_mels=64, f_min=20.0),
        LogMelConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=40, f_min=20.0, f_max=4000.0),
    ],
)
def test_logmel_matches_numpy_reference(cfg):
    rng = np.random.default_rng(3)
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    x = 0.3 * np.sin(2 * np.pi * 300 * t * (1 + t)) + 0.05 * rng.standard_normal(t.shape)
    expected = _reference_logmel(x, cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels,
                                 cfg.f_min, cfg.f_max or cfg.sample_rate / 2, cfg.log_floor)
    logmel = LogMel(cfg, dtype=torch.float64)
    got = logmel(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (cfg.n_mels, cfg.num_frames(len(x)))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    got32 = LogMel(cfg)(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(got32, expected, atol=2e-3)


def test_streaming_logmel_equals_offline():
    cfg = LogMelConfig(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=64)
    x = torch.from_numpy(np.random.default_rng(4).standard_normal(16000 + 123).astype(np.float32))
    offline = LogMel(cfg)(x)
    for seed, max_chunk in [(5, 100), (6, 2000), (7, 5)]:
        stream = StreamingLogMel(cfg)
        pieces = [stream.push(torch.from_numpy(c)) for c in _random_chunks(x.numpy(), seed, max_chunk)]
        assert all(p.shape[0] == cfg.n_mels for p in pieces)
        torch.testing.assert_close(torch.cat(pieces, dim=1), offline, rtol=1e-5, atol=1e-4)


def test_streaming_resample_then_logmel_equals_offline_pipeline():
    """The demo path: 48 kHz microphone chunks -> 16 kHz -> log-mel, versus the whole recording offline."""
    cfg = LogMelConfig()
    x = np.random.default_rng(8).standard_normal(48000).astype(np.float32) * 0.1
    offline = LogMel(cfg)(resample(torch.from_numpy(x), 48000, 16000))
    resampler, logmel = StreamingResampler(48000, 16000), StreamingLogMel(cfg)
    pieces = [logmel.push(resampler.push(torch.from_numpy(c))) for c in _random_chunks(x, 9, 4800)]
    pieces.append(logmel.push(resampler.flush()))
    torch.testing.assert_close(torch.cat(pieces, dim=1), offline, rtol=1e-5, atol=1e-4)


def test_logmel_config_validation_and_frame_counts():
    with pytest.raises(ValueError, match="win_length"):
        LogMelConfig(n_fft=256, win_length=400)
    cfg = LogMelConfig()
    assert cfg.num_frames(cfg.num_samples(128)) == 128
    assert LogMel(cfg)(torch.zeros(cfg.num_samples(7))).shape == (64, 7)
