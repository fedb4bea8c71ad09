"""Loads the compiled core, with an error that says what to do when it is missing."""
from __future__ import annotations

try:
    from edgeopt import _C
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "edgeopt's native extension edgeopt._C is not built or does not load "
        f"({exc}). Install the package with `pip install .` (or `pip install --no-build-isolation -e .` "
        "for development) from the repository root."
    ) from exc

__all__ = ["_C"]
