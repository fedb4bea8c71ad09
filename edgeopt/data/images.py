"""Image datasets: MNIST and the JPEG-degraded CIFAR-10 copy in the shared data.

Both return ``(image, label)`` with a normalised float32 ``CxHxW`` tensor. The arrays are small, so
each split is decoded once into memory (CIFAR-10 training JPEGs with Pillow, as the data README asks,
so the pixels are consistent with the stored test set).
"""
from __future__ import annotations

import io
import os
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeopt.data.errors import DataCorruptError
from edgeopt.data.paths import dataset_dir, require_file

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# the last 5,000 training images are class-balanced (the files interleave classes), so they make the
# validation hold-out for both datasets; "train+val" is the full official training set
_IMAGE_SPLITS = ("train", "val", "train+val", "test")
_VAL_SIZE = 5000


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    require_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataCorruptError(f"{path} lacks arrays {missing} (has {archive.files})")
            return {k: archive[k] for k in keys}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, DataCorruptError):
            raise
        raise DataCorruptError(f"cannot read {path}: {exc}") from exc


def _select(split: str, n_train: int) -> tuple[str, slice]:
    if split not in _IMAGE_SPLITS:
        raise ValueError(f"split must be one of {_IMAGE_SPLITS}, got {split!r}")
    return {
        "train": ("train", slice(0, n_train - _VAL_SIZE)),
        "val": ("train", slice(n_train - _VAL_SIZE, n_train)),
        "train+val": ("train", slice(0, n_train)),
        "test": ("test", slice(None)),
    }[split]


class _TensorImageDataset(Dataset):
    classes: tuple[str, ...] = ()

    def __init__(self, images_uint8_nhwc: np.ndarray, labels: np.ndarray, mean, std, augment: bool):
        x = torch.from_numpy(np.ascontiguousarray(images_uint8_nhwc)).permute(0, 3, 1, 2).float().div_(255)
        mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.images = (x - mean_t) / std_t
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.targets = self.labels.tolist()
        self.augment = augment

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.augment:
            image = self.random_crop_flip(image)
        return image, int(self.labels[index])

    @staticmethod
    def random_crop_flip(image: torch.Tensor, pad: int = 4) -> torch.Tensor:
        """The standard CIFAR augmentation: pad by 4 (zeros, i.e. the mean after normalisation), random
        32x32 crop, random horizontal flip. Uses torch's global RNG so `torch.manual_seed` makes it
        reproducible."""
        h, w = image.shape[-2:]
        padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
        top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
        image = padded[:, top : top + h, left : left + w]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


class Mnist(_TensorImageDataset):
    """MNIST, ``1x28x28`` normalised; splits ``train`` (first 55k), ``val`` (last 5k), ``train+val``, ``test``."""

    classes = tuple(str(d) for d in range(10))

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", augment: bool = False):
        if augment:
            raise ValueError("MNIST has no augmentation here (flips would change digits)")
        part, rows = _select(split, 60000)
        path = dataset_dir("mnist", root) / "mnist.npz"
        arrays = _load_npz(path, (f"x_{part}", f"y_{part}"))
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.shape[0] != y.shape[0]:
            raise DataCorruptError(f"{path}: unexpected MNIST shapes x={x.shape}, y={y.shape}")
        super().__init__(x[rows, :, :, None], y[rows], MNIST_MEAN, MNIST_STD, augment=False)


@lru_cache(maxsize=2)
def _decoded_cifar_train(path: str, mtime: float) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # only needed for the training set

    arrays = _load_npz(Path(path), ("jpeg", "offsets", "y_train"))
    jpeg, offsets, labels = arrays["jpeg"], arrays["offsets"], arrays["y_train"]
    if offsets.shape[0] != labels.shape[0] + 1 or offsets[-1] != jpeg.shape[0]:
        raise DataCorruptError(f"{path}: offsets do not match the JPEG byte array")
    images = np.empty((labels.shape[0], 32, 32, 3), np.uint8)
    for i in range(labels.shape[0]):
        try:
            with Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())) as img:
                images[i] = np.asarray(img.convert("RGB"))
        except Exception as exc:
            raise DataCorruptError(f"{path}: training image {i} does not decode as a 32x32 JPEG: {exc}") from exc
    return images, labels


class Cifar10(_TensorImageDataset):
    """CIFAR-10 (JPEG-degraded copy), ``3x32x32`` normalised.

    Splits: ``train`` (first 45k training images), ``val`` (last 5k), ``train+val`` (all 50k), ``test``.
    `augment` applies random crop + horizontal flip on every access (for training).
    """

    classes = CIFAR10_CLASSES

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", augment: bool = False):
        part, rows = _select(split, 50000)
        folder = dataset_dir("cifar10", root)
        if part == "test":
            path = folder / "cifar10_test_jpeg.npz"
            arrays = _load_npz(path, ("x_test", "y_test"))
            x, y = arrays["x_test"], arrays["y_test"]
        else:
            path = require_file(folder / "cifar10_train_jpeg.npz")
            x, y = _decoded_cifar_train(str(path), path.stat().st_mtime)
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.shape[0] != y.shape[0]:
            raise DataCorruptError(f"{path}: unexpected CIFAR-10 shapes x={x.shape}, y={y.shape}")
        super().__init__(x[rows], y[rows], CIFAR10_MEAN, CIFAR10_STD, augment)
