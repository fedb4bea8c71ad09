"""The one-core-busy spinner of the demo, the study and the bench programs."""
import os
import subprocess
import sys
import time

from edgeopt.perf.busy import BusyCore, busy_loop


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_busy_core_spins_while_on_and_stops_when_switched_off():
    with BusyCore() as busy:
        assert busy.on
        pid = busy._proc.pid
        start = time.process_time()
        time.sleep(0.3)
        assert _running(pid)
        assert time.process_time() - start < 0.2  # the spinning is the child's, not ours
    assert not busy.on
    assert not _running(pid)


def test_spinner_ends_when_the_process_that_started_it_is_killed():
    # A demo or benchmark killed outright (SIGKILL, no cleanup) must not leave a core busy.
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
                               "import os\n"
                               "from edgeopt.perf.busy import busy_loop\n"
                               "c = subprocess.Popen([sys.executable, '-c', busy_loop(os.getpid())])\n"
                               "print(c.pid, flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    spinner = int(starter.stdout.readline())
    assert _running(spinner)
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 5
    while _running(spinner) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(spinner)
