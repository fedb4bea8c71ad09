"""Reading audio files with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.data.errors import DataCorruptError, DataNotFoundError


def read_audio(path: str | Path, expected_samples: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (FLAC, WAV, ...) as mono float32 in [-1, 1) and its sample rate.

    Multi-channel files keep channel 0: in RAVDESS the few stereo originals have identical channels,
    and averaging would change the samples the shared data was derived from.
    `expected_samples` (from a dataset's metadata) turns a silently truncated file into an error.
    """
    import soundfile  # imported here so image-only users do not need it

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"missing audio file: {path}")
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports corrupt data with several exception types
        raise DataCorruptError(f"cannot decode audio file {path}: {exc}") from exc
    if samples.shape[0] == 0:
        raise DataCorruptError(f"audio file {path} contains no samples")
    if expected_samples is not None and samples.shape[0] != expected_samples:
        raise DataCorruptError(
            f"audio file {path} has {samples.shape[0]} samples but its metadata says {expected_samples}"
        )
    return np.ascontiguousarray(samples[:, 0]), int(sample_rate)
