"""One core kept busy by another process: how a model holds up when the laptop is doing something else.

The demo's switch, the study's loaded rows and the bench programs' "one core busy" runs all use this one
spinner. It is pinned to the last CPU this process may use (where the OS allows it) and it ends by itself
when the process that started it is gone, so a run killed outright never leaves a core spinning.
"""
from __future__ import annotations

import os
import subprocess
import sys



def busy_loop(parent_pid: int) -> str:
    """The spinner's program: it spins while `parent_pid` is its parent, checked every few milliseconds. The
    pid is given, not read at start-up, so a parent killed before the child got going still ends it."""
    return f"import os\nwhile os.getppid() == {int(parent_pid)}:\n    for _ in range(200000):\n        pass\n"


class BusyCore:
    """A spinning process, switched on and off with `set`, or used as a context manager (on inside)."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None

    @property
    def on(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def set(self, on: bool) -> None:
        if on and not self.on:
            self._proc = subprocess.Popen([sys.executable, "-c", busy_loop(os.getpid())],
                                          stdin=subprocess.DEVNULL)
            if hasattr(os, "sched_setaffinity"):
                try:
                    os.sched_setaffinity(self._proc.pid, {sorted(os.sched_getaffinity(0))[-1]})
                except OSError:
                    pass
        elif not on and self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> "BusyCore":
        self.set(True)
        return self

    def __exit__(self, *exc) -> None:
        self.set(False)
