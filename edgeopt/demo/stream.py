"""The demo's audio stream: held-out RAVDESS sentences played back to back (or a microphone), turned into
sliding log-mel windows by the streaming front end, with the ground truth of each window.

Nothing here knows about time or processes: `ticks` yields one `Tick` per prediction slot (every
1/`rate` s of audio) as fast as it is asked, and the caller paces it (the live demo sleeps until the
tick's audio time; the offline evaluation does not). The live stream and `edgeopt demo --evaluate` therefore
see exactly the same windows.

Ground truth. A window is 2.56 s of audio and the sentences are 1.5-2.5 s of speech with silence around
them, so most windows hold one sentence and some hold the end of one and the start of the next. A window
is *scored* when at least `COVERAGE` of one sentence's speech (or, for speech longer than the window, of
the window) lies inside it; its truth is that sentence's emotion. Other windows (mostly silence, or two
half sentences) are shown with no truth and not scored. Speech is where the training features find it:
the frames within the training `trim_db` of the loudest frame (`edgeopt.training.tasks.loud_span`).
"""
from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from edgeopt.data import LogMel, Ravdess, StreamingLogMel, StreamingResampler
from edgeopt.training.tasks import RAVDESS_FEATURES, AudioFeatures, loud_span

PREDICTIONS_PER_SECOND = 30
COVERAGE = 0.75
PLAYLIST_SEED = 0


@dataclass(frozen=True)
class Utterance:
    """One sentence of the playlist, positioned in the stream (sample indices at the stream's rate)."""

    label: int
    name: str
    actor: int
    start: int
    stop: int
    speech_start: int
    speech_stop: int


class Playlist:
    """Sentences concatenated into one stream that repeats (lap after lap) for as long as it is read."""

    def __init__(self, audio: np.ndarray, utterances: Sequence[Utterance], classes: Sequence[str],
                 sample_rate: int):
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"Playlist: expected non-empty 1-D audio, got shape {audio.shape}")
        self.audio = np.ascontiguousarray(audio, dtype=np.float32)
        self.utterances = list(utterances)
        self.classes = tuple(classes)
        self.sample_rate = sample_rate
        self._starts = np.array([u.start for u in self.utterances], dtype=np.int64)
        self._speech_start = np.array([u.speech_start for u in self.utterances], dtype=np.int64)
        self._speech_stop = np.array([u.speech_stop for u in self.utterances], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def seconds(self) -> float:
        return self.audio.size / self.sample_rate

    @classmethod
    def ravdess(cls, split: str = "test", seed: int = PLAYLIST_SEED, root=None,
                features: AudioFeatures = RAVDESS_FEATURES, limit: int | None = None) -> "Playlist":
        """The RAVDESS `split` (default: held-out actors 21-24) in a shuffled but fixed order, so consecutive
        sentences differ in emotion and actor and every run plays the same stream."""
        data = Ravdess(root, split=split, sample_rate=features.logmel.sample_rate)
        order = np.random.default_rng(seed).permutation(len(data))
        if limit is not None:
            order = order[:limit]
        frontend = LogMel(features.logmel)
        hop, win = features.logmel.hop_length, features.logmel.win_length
        pieces, utterances, position = [], [], 0
        for index in order:
            waveform = data.load_waveform(int(index))
            with torch.no_grad():
                first, stop = loud_span(frontend(waveform), features.trim_db)
            clip = data.clips[int(index)]
            n = waveform.shape[0]
            utterances.append(Utterance(clip.label, clip.path.stem, int(clip.speaker), position, position + n,
                                        position + first * hop, position + min(n, (stop - 1) * hop + win)))
            pieces.append(waveform.numpy())
            position += n
        return cls(np.concatenate(pieces), utterances, data.classes, features.logmel.sample_rate)

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of the endless stream (the playlist repeated)."""
        n = self.audio.size
        if stop - start >= n:
            raise ValueError("Playlist.samples: a chunk longer than the whole playlist")
        a, b = start % n, stop % n
        if stop - start == 0:
            return self.audio[:0]
        if a < b:
            return self.audio[a:b]
        return np.concatenate([self.audio[a:], self.audio[:b]])

    def truth(self, start: int, stop: int) -> int:
        """The id of the sentence a window ``[start, stop)`` of the endless stream is scored against, or -1.

        Ids count across laps: ``lap * len(self) + index``, so each play of a sentence is its own clip.
        """
        n, best, best_cover = self.audio.size, -1, COVERAGE
        if not self.utterances:
            return -1
        for lap in {start // n, (stop - 1) // n}:
            offset = lap * n
            s0, s1 = self._speech_start + offset, self._speech_stop + offset
            overlap = np.minimum(s1, stop) - np.maximum(s0, start)
            cover = overlap / np.minimum(s1 - s0, stop - start)
            i = int(np.argmax(cover))
            if cover[i] >= best_cover:
                best, best_cover = lap * len(self) + i, float(cover[i])
        return best

    def playing(self, sample: int) -> int:
        """The id (as in `truth`) of the sentence that sample `sample` of the endless stream belongs to."""
        if not self.utterances:
            return -1
        lap, position = divmod(sample, self.audio.size)
        return lap * len(self) + int(np.searchsorted(self._starts, position, side="right")) - 1

    def utterance(self, clip_id: int) -> Utterance:
        return self.utterances[clip_id % len(self)]


class WindowSource:
    """Sliding log-mel windows over pushed audio: `push` samples, then `window` is the latest
    ``[n_mels, frames]`` input, normalised as in training (`features.mean` / `features.std`)."""

    def __init__(self, features: AudioFeatures = RAVDESS_FEATURES):
        self.features = features
        self.logmel = StreamingLogMel(features.logmel)
        self._frames = np.zeros((features.logmel.n_mels, features.frames), dtype=np.float32)
        self.frames_seen = 0
        self.samples_seen = 0

    def push(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        new = self.logmel.push(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))).numpy()
        k = new.shape[1]
        if k:
            keep = self.features.frames
            self._frames = np.concatenate([self._frames, new], axis=1)[:, -keep:]
            self.frames_seen += k
        self.samples_seen += samples.size

    @property
    def ready(self) -> bool:
        return self.frames_seen >= self.features.frames

    def window(self) -> np.ndarray:
        return (self._frames - self.features.mean) / self.features.std

    def window_span(self) -> tuple[int, int]:
        """Stream samples ``[start, stop)`` the current window was computed from."""
        c = self.features.logmel
        first = self.frames_seen - self.features.frames
        return first * c.hop_length, (self.frames_seen - 1) * c.hop_length + c.win_length


@dataclass
class Tick:
    seq: int  # prediction slot, 0, 1, 2, ...
    audio_time: float  # seconds of audio in the stream when this window is complete
    window: np.ndarray  # [n_mels, frames] normalised log-mel
    clip: int  # `Playlist.truth` id, -1: not scored
    chunk: np.ndarray  # the audio pushed since the previous tick (for the waveform display)
    playing: int = -1  # id of the sentence the newest sample belongs to (-1: unknown, a microphone)


def ticks(playlist: Playlist, rate: int = PREDICTIONS_PER_SECOND, features: AudioFeatures = RAVDESS_FEATURES,
          max_seconds: float | None = None) -> Iterator[Tick]:
    """One window every 1/`rate` s of the endless playlist stream, from the first full window on."""
    if playlist.sample_rate != features.logmel.sample_rate:
        raise ValueError(f"playlist at {playlist.sample_rate} Hz, features expect {features.logmel.sample_rate} Hz")
    source = WindowSource(features)
    sr, k, seq, pushed = playlist.sample_rate, 0, 0, 0
    while max_seconds is None or pushed < max_seconds * sr:
        k += 1
        target = k * sr // rate
        chunk = playlist.samples(pushed, target)
        source.push(chunk)
        pushed = target
        if source.ready:
            yield Tick(seq, pushed / sr, source.window(), playlist.truth(*source.window_span()), chunk,
                       playlist.playing(pushed - 1))
            seq += 1


class Microphone:
    """Audio from the default input device (sounddevice), resampled to the features' rate."""

    def __init__(self, features: AudioFeatures = RAVDESS_FEATURES, device=None):
        try:
            import sounddevice
        except (ImportError, OSError) as exc:  # OSError: the PortAudio library is missing
            raise MicrophoneUnavailable(f"no microphone support: {exc} (pip install 'edgeopt[mic]')") from exc
        try:
            info = sounddevice.query_devices(device, "input")
        except Exception as exc:  # sounddevice raises ValueError / PortAudioError without a device
            raise MicrophoneUnavailable(f"no audio input device: {exc}") from exc
        self.device_name = str(info["name"])
        self.device_rate = int(info["default_samplerate"])
        self.features = features
        self._queue: queue.Queue = queue.Queue()
        self._stream = sounddevice.InputStream(device=device, channels=1, samplerate=self.device_rate,
                                               dtype="float32", callback=self._callback)

    def _callback(self, indata, frames, time_info, status):
        self._queue.put(indata[:, 0].copy())

    def chunks(self) -> Iterator[np.ndarray]:
        self._stream.start()
        try:
            while True:
                yield self._queue.get()
        finally:
            self._stream.stop()
            self._stream.close()


class MicrophoneUnavailable(RuntimeError):
    """`--mic` was asked for but there is no input device or no sounddevice/PortAudio."""


def live_ticks(chunks: Iterator[np.ndarray], input_rate: int, rate: int = PREDICTIONS_PER_SECOND,
               features: AudioFeatures = RAVDESS_FEATURES) -> Iterator[Tick]:
    """Ticks over audio that arrives in chunks of any size at `input_rate` (a microphone): resampled by
    the streaming resampler, one window per 1/`rate` s of audio, no ground truth."""
    resampler = StreamingResampler(input_rate, features.logmel.sample_rate) if input_rate != features.logmel.sample_rate else None
    source = WindowSource(features)
    sr, seq, next_tick = features.logmel.sample_rate, 0, 1
    pending = np.zeros(0, dtype=np.float32)
    for chunk in chunks:
        audio = resampler.push(torch.from_numpy(chunk)).numpy() if resampler else np.asarray(chunk, np.float32)
        pending = np.concatenate([pending, audio])
        while pending.size:
            boundary = next_tick * sr // rate - source.samples_seen
            if pending.size < boundary:
                source.push(pending)
                pending = pending[:0]
                break
            piece, pending = pending[:boundary], pending[boundary:]
            source.push(piece)
            next_tick += 1
            if source.ready:
                yield Tick(seq, source.samples_seen / sr, source.window(), -1, piece)
                seq += 1
