"""Datasets and the audio front end.

Loaders return torch datasets of ``(input, label)``; the data root is an argument, the ``EDGEOPT_DATA``
environment variable, or ``<repo>/../shared/data``. Missing or corrupt files raise `DataError`
subclasses that name the file.
"""
from edgeopt.data.audio import (
    LogMel,
    LogMelConfig,
    StreamingLogMel,
    StreamingResampler,
    frame,
    mel_filterbank,
    resample,
)
from edgeopt.data.audio_io import read_audio
from edgeopt.data.errors import DataCorruptError, DataError, DataNotFoundError
from edgeopt.data.images import CIFAR10_CLASSES, Cifar10, Mnist
from edgeopt.data.paths import DATA_ENV_VAR, data_root, file_sha1
from edgeopt.data.speech import FSDD_DIGITS, RAVDESS_ACTOR_SPLIT, RAVDESS_EMOTIONS, AudioClip, Fsdd, Ravdess

__all__ = [
    "AudioClip", "CIFAR10_CLASSES", "Cifar10", "DATA_ENV_VAR", "DataCorruptError", "DataError",
    "DataNotFoundError", "FSDD_DIGITS", "Fsdd", "LogMel", "LogMelConfig", "Mnist", "RAVDESS_ACTOR_SPLIT",
    "RAVDESS_EMOTIONS", "Ravdess", "StreamingLogMel", "StreamingResampler", "data_root", "file_sha1", "frame",
    "mel_filterbank", "read_audio", "resample",
]
