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
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from edgeopt.data import DataCorruptError, LogMel, Ravdess, StreamingLogMel, StreamingResampler
from edgeopt.training.tasks import RAVDESS_FEATURES, AudioFeatures, loud_span

PREDICTIONS_PER_SECOND = 30
COVERAGE = 0.75
PLAYLIST_SEED = 0


@dataclass(frozen=True)
class Utterance:
    """One sentence of the playlist, positioned in the stream (sample indices at the stream's rate)."""

    label: int  # -1: no ground truth (never scored)
    name: str
    actor: int
    start: int
    stop: int


class Playlist:
    """Sentences concatenated into one stream that repeats (lap after lap) for as long as it is read.

    Audio is decoded when the stream reaches it (a few sentences are kept), so a playlist of all 240
    held-out sentences starts at once. `load(i)` returns sentence i's samples; `speech(i, samples)` its
    speech span ``(first, stop)`` within the sentence, or None where it has no ground truth.
    """

    KEEP_DECODED = 8

    def __init__(self, utterances: Sequence[Utterance], classes: Sequence[str], sample_rate: int,
                 load: Callable[[int], np.ndarray], speech: Callable[[int, np.ndarray], tuple[int, int] | None]):
        if not utterances or utterances[-1].stop <= 0:
            raise ValueError("Playlist: no audio")
        self.utterances = list(utterances)
        self.classes = tuple(classes)
        self.sample_rate = sample_rate
        self.length = self.utterances[-1].stop
        self._starts = np.array([u.start for u in self.utterances], dtype=np.int64)
        self._load, self._speech = load, speech
        self._decoded: OrderedDict[int, tuple[np.ndarray, tuple[int, int] | None]] = OrderedDict()

    @classmethod
    def from_audio(cls, audio: np.ndarray, sample_rate: int, classes: Sequence[str] = ()) -> "Playlist":
        """One recording without ground truth (tests, files of the user's own)."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        return cls([Utterance(-1, "audio", 0, 0, audio.size)], classes, sample_rate, lambda i: audio, lambda i, a: None)

    @classmethod
    def ravdess(cls, split: str = "test", seed: int = PLAYLIST_SEED, root=None,
                features: AudioFeatures = RAVDESS_FEATURES, limit: int | None = None) -> "Playlist":
        """The RAVDESS `split` (default: held-out actors 21-24) in a shuffled but fixed order, so consecutive
        sentences differ in emotion and actor and every run plays the same stream."""
        sr = features.logmel.sample_rate
        data = Ravdess(root, split=split, sample_rate=sr)
        order = [int(i) for i in np.random.default_rng(seed).permutation(len(data))][:limit]
        utterances, position = [], 0
        for index in order:
            clip = data.clips[index]
            n = _length_at(clip, sr)
            utterances.append(Utterance(clip.label, clip.path.stem, int(clip.speaker), position, position + n))
            position += n
        frontend = LogMel(features.logmel)
        hop, win = features.logmel.hop_length, features.logmel.win_length

        def load(i: int) -> np.ndarray:
            samples = data.load_waveform(order[i]).numpy()
            if samples.size != utterances[i].stop - utterances[i].start:
                raise DataCorruptError(f"{data.clips[order[i]].path}: {samples.size} samples, expected "
                                       f"{utterances[i].stop - utterances[i].start}")
            return samples

        def speech(i: int, samples: np.ndarray) -> tuple[int, int]:
            with torch.no_grad():
                first, stop = loud_span(frontend(torch.from_numpy(samples)), features.trim_db)
            return first * hop, min(samples.size, (stop - 1) * hop + win)

        return cls(utterances, data.classes, sr, load, speech)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def seconds(self) -> float:
        return self.length / self.sample_rate

    def _clip(self, i: int) -> tuple[np.ndarray, tuple[int, int] | None]:
        if i in self._decoded:
            self._decoded.move_to_end(i)
            return self._decoded[i]
        samples = self._load(i)
        entry = (samples, self._speech(i, samples))
        self._decoded[i] = entry
        if len(self._decoded) > self.KEEP_DECODED:
            self._decoded.popitem(last=False)
        return entry

    def _pieces(self, start: int, stop: int):
        """``(clip id, offset of the clip in the endless stream)`` of every sentence overlapping [start, stop)."""
        lap, position = divmod(start, self.length)
        i = int(np.searchsorted(self._starts, position, side="right")) - 1
        while True:
            offset = lap * self.length + self.utterances[i].start
            if offset >= stop:
                return
            yield lap * len(self) + i, offset
            i += 1
            if i == len(self):
                lap, i = lap + 1, 0

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of the endless stream (the playlist repeated)."""
        parts = []
        for clip, offset in self._pieces(start, stop):
            audio, _ = self._clip(clip % len(self))
            parts.append(audio[max(0, start - offset): stop - offset])
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def truth(self, start: int, stop: int) -> int:
        """The id of the sentence a window ``[start, stop)`` of the endless stream is scored against, or -1.

        Ids count across laps: ``lap * len(self) + index``, so each play of a sentence is its own clip.
        """
        best, best_cover = -1, COVERAGE
        for clip, offset in self._pieces(start, stop):
            u = self.utterances[clip % len(self)]
            span = self._clip(clip % len(self))[1]
            if u.label < 0 or span is None:
                continue
            s0, s1 = offset + span[0], offset + span[1]
            cover = (min(s1, stop) - max(s0, start)) / min(s1 - s0, stop - start)
            if cover >= best_cover:
                best, best_cover = clip, cover
        return best

    def playing(self, sample: int) -> int:
        """The id (as in `truth`) of the sentence that sample `sample` of the endless stream belongs to."""
        lap, position = divmod(sample, self.length)
        return lap * len(self) + int(np.searchsorted(self._starts, position, side="right")) - 1

    def utterance(self, clip_id: int) -> Utterance:
        return self.utterances[clip_id % len(self)]

    def speech_span(self, index: int) -> tuple[int, int] | None:
        """Sentence `index`'s speech within the stream's first lap (decodes it)."""
        span = self._clip(index)[1]
        return None if span is None else (self.utterances[index].start + span[0], self.utterances[index].start + span[1])


def _length_at(clip, sample_rate: int) -> int:
    """A file's length once resampled to `sample_rate` (as `resample` gives it), from its header."""
    import soundfile

    info = soundfile.info(str(clip.path))
    frames = clip.num_samples if clip.num_samples is not None else info.frames
    return -(-frames * sample_rate // info.samplerate)


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
