"""Speech datasets: RAVDESS (emotion) and the Free Spoken Digit Dataset.

Each returns ``(waveform, label)`` with a 1-D float32 waveform at the dataset's `sample_rate`
(files at another rate are resampled with `edgeopt.data.audio.resample`). Feature extraction is left to
a `transform` or to `edgeopt.training`, so the loaders only know about files and labels.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeopt.data.audio import resample
from edgeopt.data.audio_io import read_audio
from edgeopt.data.errors import DataCorruptError, DataNotFoundError
from edgeopt.data.paths import dataset_dir, require_file

RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
# the shared data's recommended actor-independent, gender-balanced split; also used for the original
# release layout, which has no metadata.csv, so both layouts give the same split
RAVDESS_ACTOR_SPLIT = {"train": tuple(range(1, 19)), "val": (19, 20), "test": (21, 22, 23, 24)}
FSDD_DIGITS = tuple(str(d) for d in range(10))
FSDD_SPLIT_SCHEMES = ("official", "speaker")

_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@dataclass(frozen=True)
class AudioClip:
    path: Path
    label: int
    speaker: str
    split: str
    num_samples: int | None = None  # at the file's own rate, from metadata; None if unknown


class AudioClassificationDataset(Dataset):
    """A list of labelled audio files; subclasses only decide which files and labels."""

    classes: Sequence[str] = ()

    def __init__(self, clips: Sequence[AudioClip], sample_rate: int, transform: Callable | None = None):
        if not clips:
            raise DataNotFoundError(f"{type(self).__name__}: no audio files selected")
        self.clips = list(clips)
        self.sample_rate = sample_rate
        self.transform = transform
        self.targets = [c.label for c in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def load_waveform(self, index: int) -> torch.Tensor:
        clip = self.clips[index]
        samples, file_rate = read_audio(clip.path, clip.num_samples)
        waveform = torch.from_numpy(samples)
        if file_rate != self.sample_rate:
            waveform = resample(waveform, file_rate, self.sample_rate)
        return waveform

    def __getitem__(self, index: int):
        waveform = self.load_waveform(index)
        if self.transform is not None:
            waveform = self.transform(waveform)
        return waveform, self.clips[index].label


def _read_metadata(path: Path) -> list[dict]:
    require_file(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataCorruptError(f"cannot parse {path}: {exc}") from exc
    if not rows:
        raise DataCorruptError(f"{path} has no rows")
    return rows


def _check_split(split: str, allowed: Iterable[str]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {sorted(allowed)}, got {split!r}")


class Ravdess(AudioClassificationDataset):
    """RAVDESS emotional speech, 8 classes (`RAVDESS_EMOTIONS`), split by actor.

    `root` may be the shared data root (holding ``ravdess/``), the ``ravdess`` folder itself, or a copy of
    the original release (``Actor_01 ... Actor_24/*.wav``, labels from the file names, no metadata.csv).
    `split` is ``train`` (actors 1-18), ``val`` (19-20), ``test`` (21-24) or ``all``; `actors` overrides
    it with an explicit list, for example for actor-grouped cross-validation.
    """

    classes = RAVDESS_EMOTIONS

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        actors: Iterable[int] | None = None,
        sample_rate: int = 16000,
        transform: Callable | None = None,
    ):
        folder = self._locate(root)
        metadata = folder / "metadata.csv"
        clips = self._from_metadata(metadata) if metadata.is_file() else self._from_release_layout(folder)
        if actors is not None:
            wanted = {int(a) for a in actors}
        else:
            _check_split(split, [*RAVDESS_ACTOR_SPLIT, "all"])
            wanted = set(range(1, 25)) if split == "all" else set(RAVDESS_ACTOR_SPLIT[split])
        self.folder = folder
        self.layout = "metadata" if metadata.is_file() else "release"
        super().__init__([c for c in clips if int(c.speaker) in wanted], sample_rate, transform)

    @staticmethod
    def _locate(root) -> Path:
        if root is not None:
            root = Path(root)
            if (root / "metadata.csv").is_file() or any(root.glob("Actor_[0-9][0-9]")):
                return root
        return dataset_dir("ravdess", root)

    @staticmethod
    def _from_metadata(metadata: Path) -> list[AudioClip]:
        clips = []
        for row in _read_metadata(metadata):
            try:
                clips.append(AudioClip(metadata.parent / row["path"], int(row["label"]), str(int(row["actor"])),
                                       row["split"], int(row["num_samples"])))
            except (KeyError, ValueError) as exc:
                raise DataCorruptError(f"{metadata}: bad row {row}: {exc!r}") from exc
        return clips

    @staticmethod
    def parse_filename(path: Path) -> tuple[int, int] | None:
        """``(emotion label 0-7, actor)`` from an original RAVDESS name; None for song files."""
        m = _RAVDESS_NAME.match(path.stem)
        if m is None:
            raise DataCorruptError(f"{path}: not a RAVDESS file name (expected MM-VV-EE-II-SS-RR-AA)")
        modality, vocal, emotion, intensity, statement, repetition, actor = (int(g) for g in m.groups())
        if vocal == 2:  # song: a different task with 6 emotions, not part of this dataset
            return None
        if vocal != 1 or not 1 <= emotion <= 8 or not 1 <= actor <= 24:
            raise DataCorruptError(f"{path}: fields out of range in RAVDESS file name")
        return emotion - 1, actor

    @classmethod
    def _from_release_layout(cls, folder: Path) -> list[AudioClip]:
        files = sorted(p for p in folder.glob("Actor_[0-9][0-9]/*") if p.suffix.lower() in (".wav", ".flac"))
        if not files:
            raise DataNotFoundError(f"{folder} has neither metadata.csv nor Actor_XX/*.wav files")
        split_of = {a: s for s, actors in RAVDESS_ACTOR_SPLIT.items() for a in actors}
        clips = []
        for path in files:
            parsed = cls.parse_filename(path)
            if parsed is not None:
                label, actor = parsed
                clips.append(AudioClip(path, label, str(actor), split_of[actor]))
        return clips


class Fsdd(AudioClassificationDataset):
    """Free Spoken Digit Dataset, digits 0-9 at 8 kHz.

    `scheme` picks the split column: ``official`` (indices 0-4 test, 5-9 val, 10-49 train; not speaker-
    independent) or ``speaker`` (theo = test, lucas = val, the other four = train).
    """

    classes = FSDD_DIGITS

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        scheme: str = "official",
        sample_rate: int = 8000,
        transform: Callable | None = None,
    ):
        if scheme not in FSDD_SPLIT_SCHEMES:
            raise ValueError(f"scheme must be one of {FSDD_SPLIT_SCHEMES}, got {scheme!r}")
        _check_split(split, ("train", "val", "test", "all"))
        root_path = Path(root) if root is not None else None
        folder = root_path if root_path is not None and (root_path / "metadata.csv").is_file() else dataset_dir("fsdd", root)
        metadata = folder / "metadata.csv"
        clips = []
        for row in _read_metadata(metadata):
            try:
                clip = AudioClip(folder / row["path"], int(row["label"]), row["speaker"],
                                 row[f"split_{scheme}"], int(row["num_samples"]))
            except (KeyError, ValueError) as exc:
                raise DataCorruptError(f"{metadata}: bad row {row}: {exc!r}") from exc
            if split in ("all", clip.split):
                clips.append(clip)
        self.folder = folder
        self.scheme = scheme
        super().__init__(clips, sample_rate, transform)
