"""Thread count for edgeopt's kernels: follows torch.get_num_threads() unless set here."""
from __future__ import annotations

import torch

# The pool makes one worker per thread asked for; beyond this a count is a mistake, not a machine.
MAX_THREADS = 1024

_num_threads: int | None = None


def set_num_threads(n: int | None) -> None:
    """Fix edgeopt's thread count to n in [1, MAX_THREADS] (None: follow torch.get_num_threads() again).
    Safe to change while other Python threads run edgeopt layers: each call reads the count once."""
    global _num_threads
    if n is not None and (type(n) is not int or not 1 <= n <= MAX_THREADS):  # type(): True is an int
        raise ValueError(f"edgeopt.set_num_threads: expected an int in [1, {MAX_THREADS}] or None, got {n!r}")
    _num_threads = n


def get_num_threads() -> int:
    return _num_threads if _num_threads is not None else torch.get_num_threads()
