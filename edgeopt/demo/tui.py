"""`edgeopt demo --tui`: the live figures as a terminal table (Rich), for SSH and machines without a browser.

Keys (on a terminal): ``b`` switches the busy core on or off, ``q`` quits.
"""
from __future__ import annotations

import select
import sys
import time
from contextlib import contextmanager

from edgeopt.demo.views import live_rows

REFRESH_PER_SECOND = 4


@contextmanager
def _keys():
    """Single key presses from stdin without waiting for Enter (POSIX terminals); none elsewhere."""
    if not sys.stdin.isatty():
        yield lambda: None
        return
    try:
        import termios
        import tty
    except ImportError:  # Windows
        yield lambda: None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read():
        if select.select([sys.stdin], [], [], 0)[0]:
            return sys.stdin.read(1)
        return None

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _table(state: dict, classes, header: str):
    from rich.table import Table

    busy = "[bold yellow]on[/]" if state["busy"] else "off"
    table = Table(title=f"{header}\n[dim]t = {state['t']:.0f} s, one core busy: {busy}  (b: switch, q: quit)[/]",
                  title_justify="left", expand=False)
    table.add_column("")
    table.add_column("baseline", style="bright_blue")
    table.add_column("optimized", style="green")
    table.add_column("optimized vs baseline", style="bold")
    for row in live_rows(state, classes):
        table.add_row(*row)
    if state.get("error"):
        table.caption = f"[red]{state['error'][:400]}[/]"
    return table


def run(engine, classes, header: str, seconds: float | None, busy_after: float | None) -> None:
    try:
        from rich.live import Live
    except ImportError as exc:
        raise SystemExit("edgeopt demo --tui needs rich: pip install 'edgeopt[tui]'") from exc
    start = time.monotonic()
    with _keys() as key, Live(_table(engine.live(), classes, header), refresh_per_second=REFRESH_PER_SECOND,
                              transient=False) as live:
        while seconds is None or time.monotonic() - start < seconds:
            if busy_after is not None and time.monotonic() - start >= busy_after and not engine.busy.on:
                engine.set_busy(True)
                busy_after = None
            pressed = key()
            if pressed in ("q", "Q"):
                break
            if pressed in ("b", "B"):
                engine.set_busy(not engine.busy.on)
            live.update(_table(engine.live(), classes, header))
            if engine.error:
                break
            time.sleep(1 / REFRESH_PER_SECOND)
