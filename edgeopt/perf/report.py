"""Writing results: Markdown and terminal tables, JSON files written atomically, number formats."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence


def fmt(value, digits: int = 2, unit: str = "") -> str:
    """A number for a table cell: '-' for None / nan, fixed digits otherwise."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{value:.{digits}f}{unit}"


def fmt_ratio(value) -> str:
    return fmt(value, 2, "x")


def fmt_percent(fraction) -> str:
    return "-" if fraction is None or not math.isfinite(fraction) else f"{100 * fraction:.0f}%"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A GitHub Markdown table; align is one character per column, 'l' or 'r' (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(str(h) for h in headers) + " |",
             "|" + "|".join(" ---: " if a == "r" else " --- " for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """The same table padded for a terminal."""
    rows = [[str(c) for c in row] for row in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max([len(str(h))] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align))

    return "\n".join([line([str(h) for h in headers]), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Writes a file under a temporary name and renames it: readers never see half a file."""
    from edgeopt.files import atomic_write as write

    return write(path, data)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, obj) -> Path:
    """JSON with nan/inf as null and objects with to_dict() expanded."""
    return atomic_write(path, json.dumps(_jsonable(obj), indent=2, default=str) + "\n")
