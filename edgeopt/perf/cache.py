"""Cached build artefacts (quantized models, ONNX files, fine-tuned weights) for the benchmarks and the study.

Building a contender (calibrating, GPTQ, fine-tuning) costs far more than timing it, and timing runs must fit
in short quiet windows, so builds are done once and loaded afterwards. A cached module is keyed by what made
it: the weights it came from, the recipe, and a fingerprint of edgeopt's own code (its Python sources and the
native extension), so a change to a kernel, a pass or a packed format never loads a stale artefact.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from edgeopt.files import atomic_save


def cache_root() -> Path:
    from edgeopt.models import cache_dir

    return cache_dir()


# edgeopt's measuring and command-line code: editing it must not invalidate built artefacts
_MEASURING = {"perf", "study", "demo", "profile.py", "cli.py", "demo_cli.py", "info.py", "progress.py", "__main__.py"}


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Short hash of edgeopt's Python sources and the built extension (size and mtime)."""
    import edgeopt
    from edgeopt._native import _C

    root = Path(edgeopt.__file__).resolve().parent
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in _MEASURING or rel.name in _MEASURING:  # they do not change what is built
            continue
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    so = Path(_C.__file__)
    st = so.stat()
    h.update(f"{so.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]


def cached_module(path: Path, build: Callable[[], object], log=None):
    """Loads the pickled module at `path`, or builds it, saves it atomically and returns it. A file that no
    longer unpickles (code changed underneath) is rebuilt."""
    path = Path(path)
    if path.is_file():
        try:
            return torch.load(path, weights_only=False)
        except Exception as exc:  # noqa: BLE001  (stale or partial pickle: build it again)
            if log:
                log(f"cannot load {path} ({type(exc).__name__}: {exc}); building again")
    module = build()
    save(path, module)
    return module


def save(path: Path, obj) -> Path:
    return atomic_save(obj, path)
