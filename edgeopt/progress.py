"""A dependency-free progress display: a live bar on a terminal, a few plain lines otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, stream=None):
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self.interactive = self.stream.isatty()
        self._last_percent = -1

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        percent = 100 * self.done // self.total
        if self.interactive:
            filled = 30 * self.done // self.total
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"\r  {self.label:38s} [{'#' * filled}{'.' * (30 - filled)}] {percent:3d}% {elapsed:5.1f}s")
            self.stream.flush()
        elif percent // 25 > self._last_percent // 25:  # 0, 25, 50, 75, 100%
            self.stream.write(f"  {self.label}: {percent}%\n")
            self.stream.flush()
        self._last_percent = percent

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
