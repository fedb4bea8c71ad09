"""Audio front end in plain torch: resampling, framing and log-mel spectrograms, offline and streaming.

No torchaudio or librosa: edgeopt must run where only torch is installed, and the real-time demo needs
a streaming twin whose output is *the same* as the offline features, which is easiest to guarantee when
both are built from the same few functions here.

Conventions (kept deliberately simple so a reference implementation is easy to write):
- resampling follows `scipy.signal.resample_poly` (polyphase FIR, Kaiser window beta=5, zero padding);
- frames are not centred: frame ``i`` covers samples ``[i*hop, i*hop + win_length)``, so a stream can
  emit a frame as soon as its last sample arrives;
- a frame is multiplied by a periodic Hann window of ``win_length`` and zero-padded to ``n_fft``;
- mel filters are triangles on the HTK mel scale, unnormalised (peak 1);
- features are ``log(mel_power + log_floor)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

KAISER_BETA = 5.0


# --------------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------------
def _resample_ratio(orig_sr: int, new_sr: int) -> tuple[int, int]:
    if int(orig_sr) != orig_sr or int(new_sr) != new_sr or orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} -> {new_sr}")
    g = math.gcd(int(orig_sr), int(new_sr))
    return int(new_sr) // g, int(orig_sr) // g


def resample_filter(up: int, down: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Low-pass FIR used by `resample` (scipy's `firwin(2*10*max(up,down)+1, 1/max(up,down))*up`)."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = 2 * half_len + 1
    cutoff = 1.0 / max_rate
    n = torch.arange(taps, dtype=torch.float64) - half_len
    h = cutoff * torch.sinc(cutoff * n) * torch.kaiser_window(taps, periodic=False, beta=KAISER_BETA, dtype=torch.float64)
    return (h / h.sum() * up).to(dtype)


def _resample_outputs(x: Tensor, first_input: int, m0: int, m1: int, up: int, down: int, h: Tensor) -> Tensor:
    """Outputs ``m0..m1-1`` of the resampled signal, from the input segment starting at ``first_input``.

    Output m is ``sum_i x[i] * h[m*down + half_len - i*up]``: the upsampled signal convolved with h,
    sampled every `down` samples and shifted so that the filter is centred (scipy's alignment).
    The caller must pass every input sample that contributes to those outputs (absent ones are zero).
    """
    half_len = (h.shape[-1] - 1) // 2
    lead = x.shape[:-1]
    full = F.conv_transpose1d(x.reshape(-1, 1, x.shape[-1]), h.view(1, 1, -1), stride=up)
    start = m0 * down + half_len - first_input * up
    stop = (m1 - 1) * down + half_len - first_input * up + 1
    if stop > full.shape[-1]:  # outputs whose filter reaches past the last input: zero padding
        full = F.pad(full, (0, stop - full.shape[-1]))
    if start < 0:
        full = F.pad(full, (-start, 0))
        stop, start = stop - start, 0
    return full[..., start:stop:down].reshape(*lead, m1 - m0)


def resample(waveform: Tensor, orig_sr: int, new_sr: int) -> Tensor:
    """Resample ``waveform[..., time]`` from `orig_sr` to `new_sr` Hz (polyphase FIR).

    Output length is ``ceil(n * new_sr / orig_sr)``, matching `scipy.signal.resample_poly`.
    """
    up, down = _resample_ratio(orig_sr, new_sr)
    if not torch.is_floating_point(waveform):
        raise TypeError(f"resample expects a floating-point waveform, got {waveform.dtype}")
    if up == down:
        return waveform.clone()
    n_out = -(-waveform.shape[-1] * up // down)
    if n_out == 0:
        return waveform.new_zeros(*waveform.shape[:-1], 0)
    h = resample_filter(up, down, waveform.dtype)
    return _resample_outputs(waveform, 0, 0, n_out, up, down, h)


class StreamingResampler:
    """Resample audio that arrives in chunks; the concatenated output equals `resample` on the whole.

    Output sample m needs input up to index ``(m*down + half_len) / up``, so the stream lags the input
    by about ``half_len / up`` input samples; `flush` emits the tail once the input has ended.
    """

    def __init__(self, orig_sr: int, new_sr: int, dtype: torch.dtype = torch.float32):
        self.up, self.down = _resample_ratio(orig_sr, new_sr)
        self.h = resample_filter(self.up, self.down, dtype)
        self.half_len = (self.h.shape[-1] - 1) // 2
        self.reset()

    def reset(self) -> None:
        self._buffer = torch.zeros(0, dtype=self.h.dtype)
        self._buffer_start = 0  # absolute index of the first buffered input sample
        self._received = 0
        self._emitted = 0

    def _first_input_needed(self, m: int) -> int:
        return max(0, -(-(m * self.down - self.half_len) // self.up))

    def _emit(self, m1: int) -> Tensor:
        m0 = self._emitted
        if m1 <= m0:
            return self._buffer.new_zeros(0)
        if self.up == self.down:
            out = self._buffer[m0 - self._buffer_start : m1 - self._buffer_start].clone()
        else:
            out = _resample_outputs(self._buffer, self._buffer_start, m0, m1, self.up, self.down, self.h)
        self._emitted = m1
        keep_from = self._first_input_needed(m1) - self._buffer_start
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._buffer_start += keep_from
        return out

    def push(self, chunk: Tensor) -> Tensor:
        """Feed a 1-D chunk; return every output sample that is now fully determined."""
        if chunk.dim() != 1:
            raise ValueError(f"StreamingResampler.push expects a 1-D chunk, got shape {tuple(chunk.shape)}")
        self._buffer = torch.cat([self._buffer, chunk.to(self.h.dtype)])
        self._received += chunk.shape[0]
        # output m is complete when floor((m*down + half_len)/up) < received
        ready = (self._received * self.up - 1 - self.half_len) // self.down + 1
        if self.up == self.down:
            ready = self._received
        return self._emit(max(ready, self._emitted))

    def flush(self) -> Tensor:
        """The input has ended: emit the remaining outputs (their missing future samples are zeros)."""
        return self._emit(-(-self._received * self.up // self.down))


# --------------------------------------------------------------------------------------------------
# framing and log-mel
# --------------------------------------------------------------------------------------------------
def frame(waveform: Tensor, frame_length: int, hop_length: int) -> Tensor:
    """Split ``waveform[..., time]`` into frames ``[..., n_frames, frame_length]`` (no padding).

    ``n_frames = 1 + (time - frame_length) // hop_length``, or 0 if the signal is shorter than a frame.
    """
    if frame_length <= 0 or hop_length <= 0:
        raise ValueError(f"frame_length and hop_length must be positive, got {frame_length}, {hop_length}")
    if waveform.shape[-1] < frame_length:
        return waveform.new_zeros(*waveform.shape[:-1], 0, frame_length)
    return waveform.unfold(-1, frame_length, hop_length)


def hz_to_mel(hz):
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular HTK-mel filters as a ``[n_fft // 2 + 1, n_mels]`` matrix (peak 1, not area-normalised)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {f_min}, {f_max}, {sample_rate}")
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = 1e-6

    def __post_init__(self):
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.win_length else 1 + (num_samples - self.win_length) // self.hop_length

    def num_samples(self, num_frames: int) -> int:
        """Samples needed for exactly `num_frames` frames."""
        return (num_frames - 1) * self.hop_length + self.win_length

    def to_dict(self) -> dict:
        return asdict(self)


class LogMel(nn.Module):
    """``waveform[..., time] -> log-mel[..., n_mels, n_frames]`` (see module docstring for conventions)."""

    def __init__(self, config: LogMelConfig = LogMelConfig(), dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        # built in float64 and rounded once, so a float64 front end is exact to float64 precision
        window = torch.hann_window(config.win_length, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.to(dtype), persistent=False)
        fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.f_min, config.f_max)
        self.register_buffer("filterbank", fb.to(dtype), persistent=False)

    def frames_to_logmel(self, frames: Tensor) -> Tensor:
        c = self.config
        if frames.shape[-2] == 0:  # MKL's FFT rejects empty batches
            return frames.new_zeros(*frames.shape[:-2], c.n_mels, 0)
        spectrum = torch.fft.rfft(frames * self.window.to(frames.dtype), n=c.n_fft)
        power = spectrum.real.square() + spectrum.imag.square()
        mel = power @ self.filterbank.to(power.dtype)
        return torch.log(mel + c.log_floor).transpose(-1, -2)

    def forward(self, waveform: Tensor) -> Tensor:
        return self.frames_to_logmel(frame(waveform, self.config.win_length, self.config.hop_length))


class StreamingLogMel:
    """Log-mel features for audio arriving in chunks.

    `push` returns the frames completed by the new chunk (``[n_mels, k]``, k may be 0). Concatenating
    everything pushed gives the same features as `LogMel` on the whole signal, because frames are not
    centred and each frame is computed from exactly the same samples with the same function.
    """

    def __init__(self, config: LogMelConfig = LogMelConfig(), dtype: torch.dtype = torch.float32):
        self.logmel = LogMel(config, dtype)
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._pending = torch.zeros(0)

    @torch.no_grad()
    def push(self, chunk: Tensor) -> Tensor:
        if chunk.dim() != 1:
            raise ValueError(f"StreamingLogMel.push expects a 1-D chunk, got shape {tuple(chunk.shape)}")
        self._pending = torch.cat([self._pending.to(chunk.dtype), chunk])
        c = self.config
        n = c.num_frames(self._pending.shape[0])
        out = self.logmel(self._pending[: c.num_samples(n)] if n else self._pending[:0])
        if n:
            self._pending = self._pending[n * c.hop_length :]
        return out
