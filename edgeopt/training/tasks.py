"""Tasks: which dataset, which input features, which splits, for each name the CLI accepts.

A task turns a dataset name into ready-to-train tensors. The audio tasks compute log-mel features once
per clip (a few seconds for all of RAVDESS) and cut fixed-size windows from them on every access, so
augmentation (random window position, gain, SpecAugment masks) costs almost nothing per epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from edgeopt.data import Cifar10, Fsdd, LogMel, LogMelConfig, Mnist, Ravdess, file_sha1
from edgeopt.data.paths import dataset_dir


@dataclass(frozen=True)
class AudioFeatures:
    """How a waveform becomes a ``[1, n_mels, frames]`` model input."""

    logmel: LogMelConfig
    frames: int
    # frames quieter than (loudest frame - trim_db) at either end are silence and are dropped before
    # windowing; RAVDESS clips keep up to a second of silence around the sentence
    trim_db: float = 40.0
    # global log-mel statistics of the training split, fixed here so features do not depend on the run
    mean: float = 0.0
    std: float = 1.0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.logmel.n_mels, self.frames)

    def to_dict(self) -> dict:
        return {"logmel": self.logmel.to_dict(), "frames": self.frames, "trim_db": self.trim_db,
                "mean": self.mean, "std": self.std}


def loud_span(logmel: torch.Tensor, trim_db: float) -> tuple[int, int]:
    """``(first, stop)``: the frames from the first to the last one within `trim_db` of the loudest."""
    energy = torch.logsumexp(logmel, dim=0)  # log of total mel power per frame
    loud = torch.nonzero(energy >= energy.max() - trim_db * math.log(10) / 10).flatten()
    return int(loud[0]), int(loud[-1]) + 1


def trim_silence(logmel: torch.Tensor, trim_db: float) -> torch.Tensor:
    """Drop leading and trailing frames more than `trim_db` below the loudest frame."""
    first, stop = loud_span(logmel, trim_db)
    return logmel[:, first:stop]


class LogMelWindows(Dataset):
    """Fixed-size normalised log-mel windows from an audio dataset.

    Evaluation takes the centred window of the trimmed clip; training (``augment=True``) moves the window
    at random and applies a random gain and SpecAugment-style masks. Short clips are padded with their own
    quietest value so padding looks like silence, not like a loud constant.
    """

    def __init__(self, audio: Dataset, features: AudioFeatures, augment: bool = False):
        self.features = features
        self.augment = augment
        frontend = LogMel(features.logmel)
        self.clips: list[torch.Tensor] = []
        with torch.no_grad():
            for i in range(len(audio)):
                waveform, _ = audio[i]
                self.clips.append(trim_silence(frontend(waveform), features.trim_db))
        self.targets = list(audio.targets)
        self.classes = tuple(audio.classes)

    def __len__(self) -> int:
        return len(self.clips)

    def window(self, logmel: torch.Tensor, random_position: bool) -> torch.Tensor:
        frames = self.features.frames
        n = logmel.shape[1]
        if n >= frames:
            start = int(torch.randint(0, n - frames + 1, ())) if random_position else (n - frames) // 2
            return logmel[:, start : start + frames]
        left = int(torch.randint(0, frames - n + 1, ())) if random_position else (frames - n) // 2
        return torch.nn.functional.pad(logmel, (left, frames - n - left), value=float(logmel.min()))

    def __getitem__(self, index: int):
        x = self.window(self.clips[index], self.augment)
        x = (x - self.features.mean) / self.features.std
        if self.augment:
            x = x + (torch.rand(()) - 0.5) * 0.4  # about +-4 dB of gain, in normalised units
            x = spec_augment(x)
        return x.unsqueeze(0), self.targets[index]


def spec_augment(x: torch.Tensor, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2,
                 time_width: int = 16) -> torch.Tensor:
    x = x.clone()
    n_mels, frames = x.shape
    for _ in range(freq_masks):
        w = int(torch.randint(0, freq_width + 1, ()))
        f0 = int(torch.randint(0, n_mels - w + 1, ()))
        x[f0 : f0 + w, :] = 0.0
    for _ in range(time_masks):
        w = int(torch.randint(0, min(time_width, frames // 4) + 1, ()))
        t0 = int(torch.randint(0, frames - w + 1, ()))
        x[:, t0 : t0 + w] = 0.0
    return x


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    input_shape: tuple[int, ...]
    classes: Sequence[str]
    default_model: str
    _build: Callable[..., Dataset] = field(repr=False)
    _version_files: Callable[[object], list] = field(repr=False)
    features: AudioFeatures | None = None

    def dataset(self, split: str, augment: bool = False, root=None) -> Dataset:
        """The `split` ("train", "val", "test") of this task as ``(input, label)`` pairs."""
        return self._build(split, augment, root)

    def data_version(self, root=None) -> dict[str, str]:
        """SHA-1 of the metadata/array files that define the data, recorded next to trained models."""
        return {str(p.relative_to(p.parents[1])): file_sha1(p) for p in self._version_files(root)}


RAVDESS_FEATURES = AudioFeatures(
    # 50 ms windows every 20 ms: 128 frames cover 2.6 s, about the length of a trimmed RAVDESS sentence
    LogMelConfig(sample_rate=16000, n_fft=1024, win_length=800, hop_length=320, n_mels=64, f_min=20.0),
    frames=128, trim_db=40.0, mean=-5.9, std=4.2,
)
FSDD_FEATURES = AudioFeatures(
    # 25 ms / 10 ms at the native 8 kHz; a trimmed digit is 39 frames (median), 58 (95th percentile)
    LogMelConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=40, f_min=20.0),
    frames=64, trim_db=40.0, mean=-5.0, std=3.8,
)


def _ravdess(split, augment, root):
    return LogMelWindows(Ravdess(root, split=split, sample_rate=16000), RAVDESS_FEATURES, augment)


def _fsdd(scheme):
    def build(split, augment, root):
        return LogMelWindows(Fsdd(root, split=split, scheme=scheme, sample_rate=8000), FSDD_FEATURES, augment)
    return build


TASKS: dict[str, Task] = {
    "ravdess": Task("ravdess", "RAVDESS speech emotion, 8 classes, held-out actors 21-24",
                    RAVDESS_FEATURES.input_shape, Ravdess.classes, "vgg_audio", _ravdess,
                    lambda root: [dataset_dir("ravdess", root) / "metadata.csv"], RAVDESS_FEATURES),
    "fsdd": Task("fsdd", "Free Spoken Digit Dataset, official split (recording indices 0-4 = test)",
                 FSDD_FEATURES.input_shape, Fsdd.classes, "dscnn", _fsdd("official"),
                 lambda root: [dataset_dir("fsdd", root) / "metadata.csv"], FSDD_FEATURES),
    "fsdd_speaker": Task("fsdd_speaker", "Free Spoken Digit Dataset, speaker-independent split (test = theo)",
                         FSDD_FEATURES.input_shape, Fsdd.classes, "dscnn", _fsdd("speaker"),
                         lambda root: [dataset_dir("fsdd", root) / "metadata.csv"], FSDD_FEATURES),
    "cifar10": Task("cifar10", "CIFAR-10 (JPEG-degraded copy), 45k train / 5k val / 10k test",
                    (3, 32, 32), Cifar10.classes, "resnet10_cifar_slim",
                    lambda split, augment, root: Cifar10(root, split=split, augment=augment),
                    lambda root: [dataset_dir("cifar10", root) / f for f in
                                  ("cifar10_train_jpeg.npz", "cifar10_test_jpeg.npz")]),
    "mnist": Task("mnist", "MNIST, 55k train / 5k val / 10k test", (1, 28, 28), Mnist.classes,
                  "resnet10_cifar_slim",
                  lambda split, augment, root: Mnist(root, split=split),
                  lambda root: [dataset_dir("mnist", root) / "mnist.npz"]),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name]
