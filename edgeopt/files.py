"""Every file edgeopt writes is written whole or not at all: into a temporary file beside the target, flushed to
disk, then renamed over it (a rename within a directory is atomic on POSIX). A run killed mid-write leaves the
previous file (or none) under the real name, never half of one; the temporary file is removed when the write
fails in Python and, when the process is killed, left with a name no reader looks for."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: once, at import, not per write (threads)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def _replacing(path: Path, prefix: str, suffix: str) -> Iterator[tuple[int, str]]:
    """(fd, name) of a new temporary file beside `path` that replaces `path` when the block finishes (with the
    permissions a plain open would have given) and is removed when it raises. The name is unique (pid and a
    random part), so concurrent runs never write the same one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=suffix, dir=path.parent)
    try:
        yield fd, tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_directory(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """`with atomic_file(path) as f: ...` writes f to `path` when the block finishes, and nothing when it raises."""
    if mode not in ("w", "wb"):
        raise ValueError(f"edgeopt atomic_file: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    with _replacing(path, f".{path.name}.", TMP_SUFFIX) as (fd, _):
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Writes `data` (text as UTF-8, or bytes) to `path` atomically."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save(obj, path), atomically."""
    import torch

    with atomic_file(path) as f:
        torch.save(obj, f)
    return Path(path)


def atomic_by_name(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """For writers that take a file name, not a file (ONNX export, matplotlib's savefig): write(tmp_name) is
    called with a temporary name in the target's directory, which then replaces `path`. The temporary name
    keeps the target's suffix, which some writers read to pick the format."""
    path = Path(path)
    with _replacing(path, f".{path.stem}.", TMP_SUFFIX + path.suffix) as (fd, tmp):
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    return path


def _sync_directory(directory: Path) -> None:
    """The rename itself reaches the disk (otherwise a power cut can undo it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
