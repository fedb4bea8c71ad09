"""Thread count for edgeopt's kernels: follows torch.get_num_threads() unless set here."""
from __future__ import annotations

import torch

_num_threads: int | None = None


def set_num_threads(n: int | None) -> None:
    """Fix edgeopt's thread count (None: follow torch.get_num_threads() again)."""
    global _num_threads
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"edgeopt.set_num_threads: expected a positive int or None, got {n!r}")
    _num_threads = n


def get_num_threads() -> int:
    return _num_threads if _num_threads is not None else torch.get_num_threads()
