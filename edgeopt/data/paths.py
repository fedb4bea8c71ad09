"""Where the datasets live.

The root is resolved in this order: an explicit argument, the ``EDGEOPT_DATA`` environment variable,
then the repository default ``<repo>/../shared/data``. The default is computed from this file's
location rather than the working directory, so tests and CI (a fresh clone with ``shared/`` beside it)
find the data wherever they are started from. A regular (non-editable) install lives in site-packages,
away from the repository; there the default is ``../shared/data`` of the working directory, which is
right when the installed commands are run from the repository root, as README.md does.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from edgeopt.data.errors import DataNotFoundError

DATA_ENV_VAR = "EDGEOPT_DATA"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root directory, raising `DataNotFoundError` if it does not exist."""
    if root is not None:
        source, path = "the root argument", Path(root)
    elif os.environ.get(DATA_ENV_VAR):
        source, path = f"${DATA_ENV_VAR}", Path(os.environ[DATA_ENV_VAR])
    elif DEFAULT_DATA_ROOT.is_dir() or not (Path.cwd().parent / "shared" / "data").is_dir():
        source, path = "the repository default", DEFAULT_DATA_ROOT
    else:
        source, path = "the working directory's ../shared/data", Path.cwd().parent / "shared" / "data"
    path = path.expanduser()
    if not path.is_dir():
        raise DataNotFoundError(
            f"data root {path} (from {source}) is not a directory; pass root=... or set "
            f"{DATA_ENV_VAR} to the folder that holds ravdess/, fsdd/, mnist/ and cifar10/"
        )
    return path


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Return ``<data root>/<name>``; `root` may also point directly at the dataset folder."""
    if root is not None and Path(root).name == name and Path(root).is_dir():
        return Path(root)
    path = data_root(root) / name
    if not path.is_dir():
        raise DataNotFoundError(f"dataset folder {path} does not exist")
    return path


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataNotFoundError(f"missing dataset file: {path}")
    return path


def file_sha1(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes: the 'data version' recorded next to trained checkpoints."""
    digest = hashlib.sha1()
    with open(require_file(Path(path)), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
