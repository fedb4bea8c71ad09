"""The demo's processes and how windows reach the models.

    main process      the page / terminal view and the statistics (never runs a model)
    stream process    audio at real-time pace -> streaming log-mel -> a window every 1/30 s -> `WindowRing`
    baseline process  float model, eager PyTorch, `threads` threads
    optimized process edgeopt int8 model, `threads` threads
    busy process      (switch) a spinning loop pinned to one core: "the laptop is doing something else"

Each model runs in its own process so that its CPU time is its own (`time.process_time` of the process:
every thread, spinning included) and neither the web server nor the other model shares its interpreter.
The stream publishes windows into shared memory (`WindowRing`); each model takes them in order. A model
that falls more than `QUEUE_CAPACITY` windows behind skips the oldest ones and counts them as dropped, so
its backlog is bounded and what it loses is visible. Results (prediction, timestamps, backlog, CPU time)
come back on one queue.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgeopt.perf.busy import BusyCore

ROLES = ("baseline", "optimized")
RING_SLOTS = 64
QUEUE_CAPACITY = 15  # windows (0.5 s at 30/s) a model may fall behind before the oldest are dropped
AUDIO_RING = 1 << 16  # samples of recent audio kept for the waveform display (4 s at 16 kHz)
STATUS_PERIOD = 0.5  # s between the stream process's status messages
WARMUP_CALLS = 20


class WindowRing:
    """Windows in shared memory: one writer (the stream), any number of readers.

    Slot ``seq % slots`` holds window `seq`; its stamp is cleared while the slot is rewritten, so a
    reader that copies a slot and finds the same stamp before and after knows it got that window whole.
    """

    def __init__(self, ctx, n_mels: int, frames: int, slots: int = RING_SLOTS, audio_len: int = AUDIO_RING):
        self.shape = (n_mels, frames)
        self.slots = slots
        self._data = ctx.RawArray("f", slots * n_mels * frames)
        self._meta = ctx.RawArray("d", slots * 4)  # seq stamp, audio time, truth clip id, playing clip id
        self._latest = ctx.RawValue("q", -1)
        self._cond = ctx.Condition()
        self._audio = ctx.RawArray("f", audio_len)
        self._audio_written = ctx.RawValue("q", 0)
        self._views = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_views"] = None
        return state

    def _arrays(self):
        if self._views is None:
            self._views = (np.frombuffer(self._data, np.float32).reshape(self.slots, *self.shape),
                           np.frombuffer(self._meta, np.float64).reshape(self.slots, 4),
                           np.frombuffer(self._audio, np.float32))
        return self._views

    def publish(self, seq: int, window: np.ndarray, audio_time: float, clip: int, chunk: np.ndarray,
                playing: int = -1) -> None:
        data, meta, audio = self._arrays()
        slot = seq % self.slots
        meta[slot, 0] = -1.0
        data[slot] = window
        meta[slot, 1:] = (audio_time, clip, playing)
        meta[slot, 0] = seq
        n, written = audio.size, self._audio_written.value
        chunk = chunk[-n:]
        idx = (written + np.arange(chunk.size)) % n
        audio[idx] = chunk
        self._audio_written.value = written + chunk.size
        with self._cond:
            self._latest.value = seq
            self._cond.notify_all()

    def latest(self) -> int:
        return self._latest.value

    def wait_for(self, seq: int, timeout: float) -> int:
        """Block until window `seq` is published (or `timeout` s); return the latest sequence number."""
        with self._cond:
            self._cond.wait_for(lambda: self._latest.value >= seq, timeout)
            return self._latest.value

    def read(self, seq: int) -> tuple[np.ndarray, float, int, int] | None:
        """``(window copy, audio time, truth clip id, playing clip id)``, or None if the slot already holds a
        newer window."""
        data, meta, _ = self._arrays()
        slot = seq % self.slots
        if meta[slot, 0] != seq:
            return None
        window = data[slot].copy()
        audio_time, clip, playing = float(meta[slot, 1]), int(meta[slot, 2]), int(meta[slot, 3])
        if meta[slot, 0] != seq:
            return None
        return window, audio_time, clip, playing

    def recent_audio(self, n: int) -> np.ndarray:
        _, _, audio = self._arrays()
        written = self._audio_written.value
        n = min(n, audio.size, written)
        return audio[(written - n + np.arange(n)) % audio.size]


# --------------------------------------------------------------------------------------- child processes

class _Orphaned:
    """True once the process that started this one is gone (killed without the chance to stop us)."""

    def __init__(self):
        self.parent = os.getppid()

    def __call__(self) -> bool:
        return os.getppid() != self.parent


@dataclass(frozen=True)
class SourceSpec:
    mic: bool = False
    playlist_limit: int | None = None  # first N sentences only (tests)
    data_root: str | None = None


def stream_main(spec: SourceSpec, ring: WindowRing, messages, go, stop) -> None:
    """The stream process: audio at real-time pace -> windows in the ring."""
    orphaned = _Orphaned()
    try:
        import torch

        torch.set_num_threads(1)
        from edgeopt.demo.stream import Microphone, Playlist, live_ticks, ticks

        if spec.mic:
            mic = Microphone()
            tick_iter = live_ticks(mic.chunks(), mic.device_rate)
            info = {"kind": "mic", "device": mic.device_name, "device_rate": mic.device_rate, "utterances": []}
            paced = False
        else:
            playlist = Playlist.ravdess(limit=spec.playlist_limit, root=spec.data_root)
            tick_iter = ticks(playlist)
            info = {"kind": "files", "seconds": playlist.seconds,
                    "utterances": [(u.label, u.name, u.actor) for u in playlist.utterances]}
            paced = True
        messages.put(("stream-ready", info))
        while not go.wait(0.5):
            if orphaned():
                return
        start, first_audio, cpu0 = time.perf_counter(), None, time.process_time()
        next_status, late_max = start + STATUS_PERIOD, 0.0
        for tick in tick_iter:
            if stop.is_set() or orphaned():
                break
            now = time.perf_counter()
            if paced:
                first_audio = tick.audio_time if first_audio is None else first_audio
                due = start + tick.audio_time - first_audio
                if due > now:
                    time.sleep(due - now)
                    now = time.perf_counter()
            else:
                due = now
            ring.publish(tick.seq, tick.window, due, tick.clip, tick.chunk, tick.playing)
            late_max = max(late_max, now - due)
            if now >= next_status:
                messages.put(("stream", {"t": now, "cpu": time.process_time() - cpu0, "ticks": tick.seq + 1,
                                         "late_max": late_max, "audio_seconds": tick.audio_time}))
                next_status, late_max = now + STATUS_PERIOD, 0.0
    except BaseException as exc:  # report, never die silently
        if not isinstance(exc, KeyboardInterrupt):
            messages.put(("error", "stream", "".join(traceback.format_exception(exc))))


def model_main(role: str, optimized_path: str | None, ring: WindowRing, messages, stop, threads: int,
               capacity: int) -> None:
    """A model process: windows from the ring in order -> predictions, timestamps, CPU time."""
    orphaned = _Orphaned()
    try:
        import edgeopt  # noqa: F401  (before torch: its OpenMP spin setting)
        import torch

        from edgeopt.demo import isa, models

        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        model, info = models.load(role, Path(optimized_path) if optimized_path else None)
        x = torch.zeros(models.INPUT_SHAPE)
        with torch.inference_mode():
            for _ in range(WARMUP_CALLS):
                model(x)
        messages.put(("ready", role, {**info.__dict__, **isa.report(role), "threads": torch.get_num_threads(),
                                      "load_seconds": time.perf_counter() - t0, "pid": os.getpid()}))
        next_seq, dropped = 0, 0
        while not stop.is_set() and not orphaned():
            latest = ring.wait_for(next_seq, 0.25)
            if latest < next_seq:
                continue
            if latest - next_seq >= capacity:  # too far behind: skip to the newest `capacity` windows
                dropped += latest - capacity + 1 - next_seq
                next_seq = latest - capacity + 1
            got = ring.read(next_seq)
            if got is None:  # overwritten while this process was descheduled
                dropped += 1
                next_seq += 1
                continue
            window, audio_time, clip, _ = got
            backlog = latest - next_seq
            start = time.perf_counter()
            with torch.inference_mode():
                logits = model(torch.from_numpy(window).view(models.INPUT_SHAPE))
            end = time.perf_counter()
            probs = torch.softmax(logits[0], 0).tolist()
            messages.put(("result", role, next_seq, clip, probs, audio_time, start, end, backlog, dropped,
                          time.process_time()))
            next_seq += 1
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):
            messages.put(("error", role, "".join(traceback.format_exception(exc))))


# --------------------------------------------------------------------------------------- the main side

@contextmanager
def _environment(extra: dict):
    """Children started inside inherit `extra` (spawn copies os.environ when it starts the process)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class DemoError(RuntimeError):
    """A demo process failed; the message holds its traceback."""


class Engine:
    """Starts the processes, feeds their messages to `stats`, and stops everything on `close`."""

    def __init__(self, stats, threads: int = 2, source: SourceSpec = SourceSpec(), child_env: dict | None = None,
                 optimized_path: Path | None = None, capacity: int = QUEUE_CAPACITY, roles=ROLES):
        from edgeopt.training.tasks import RAVDESS_FEATURES

        self.stats = stats
        self.threads = threads
        self.source = source
        self.child_env = dict(child_env or {})
        self.optimized_path = optimized_path
        self.capacity = capacity
        self.roles = tuple(roles)
        if not self.roles or set(self.roles) - set(ROLES):
            raise ValueError(f"roles must be a non-empty subset of {ROLES}, got {roles!r}")
        self.ctx = mp.get_context("spawn")
        f = RAVDESS_FEATURES
        self.ring = WindowRing(self.ctx, f.logmel.n_mels, f.frames)
        self.messages = self.ctx.Queue()
        self.stop_event = self.ctx.Event()
        self.go = self.ctx.Event()
        self.busy = BusyCore()
        self.processes: dict[str, mp.Process] = {}
        self._collector: threading.Thread | None = None
        self.error: str | None = None
        self.collector_cpu = 0.0  # CPU seconds of the statistics thread (part of the dashboard's cost)

    def start(self, log: Callable[[str], None] = print, timeout: float = 300.0) -> None:
        targets = {"stream": (stream_main, (self.source, self.ring, self.messages, self.go, self.stop_event))}
        for role in self.roles:
            targets[role] = (model_main, (role, str(self.optimized_path) if self.optimized_path else None, self.ring,
                                          self.messages, self.stop_event, self.threads, self.capacity))
        with _environment(self.child_env):
            for name, (target, args) in targets.items():
                p = self.ctx.Process(target=target, args=args, name=f"edgeopt-demo-{name}", daemon=True)
                p.start()
                self.processes[name] = p
        waiting = {"stream", *self.roles}
        deadline = time.monotonic() + timeout
        t0 = time.perf_counter()
        while waiting:
            try:
                msg = self.messages.get(timeout=0.5)
            except queue.Empty:
                dead = [n for n in waiting if not self.processes[n].is_alive()]
                if dead:
                    raise DemoError(f"the {dead[0]} process exited (code {self.processes[dead[0]].exitcode}) "
                                    "while starting")
                if time.monotonic() > deadline:
                    raise DemoError(f"{', '.join(sorted(waiting))} not ready after {timeout:.0f} s")
                continue
            if msg[0] == "error":
                raise DemoError(f"the {msg[1]} process failed while starting:\n{msg[2]}")
            if msg[0] == "stream-ready":
                self.stats.set_source(msg[1])
                waiting.discard("stream")
                log(f"  stream ready: {self._describe_source(msg[1])} ({time.perf_counter() - t0:.1f} s)")
            elif msg[0] == "ready":
                self.stats.set_model_info(msg[1], msg[2])
                waiting.discard(msg[1])
                log(f"  {msg[1]} ready: {msg[2]['title']}, {msg[2]['method']}, torch {msg[2]['torch_cpu_capability']}"
                    f" ({msg[2]['load_seconds']:.1f} s)")
        self._collector = threading.Thread(target=self._collect, name="edgeopt-demo-stats", daemon=True)
        self._collector.start()
        self.stats.start_clock()
        self.go.set()

    @staticmethod
    def _describe_source(info: dict) -> str:
        if info["kind"] == "mic":
            return f"microphone {info['device']} at {info['device_rate']} Hz"
        return f"{len(info['utterances'])} held-out sentences, {info['seconds']:.0f} s of audio"

    def _collect(self) -> None:
        while not self.stop_event.is_set():
            try:
                msg = self.messages.get(timeout=0.2)
            except queue.Empty:
                self._check_alive()
                self.collector_cpu = time.thread_time()
                continue
            kind = msg[0]
            if kind == "result":
                self.stats.add_result(msg[1], *msg[2:], busy=self.busy.on)
            elif kind == "stream":
                self.stats.set_stream_status(msg[1])
            elif kind == "error":
                self.error = f"the {msg[1]} process failed:\n{msg[2]}"
                self.stats.set_error(self.error)
            self.collector_cpu = time.thread_time()

    def _check_alive(self) -> None:
        if self.error is None:
            for name, p in self.processes.items():
                if not p.is_alive():
                    self.error = f"the {name} process exited unexpectedly (code {p.exitcode})"
                    self.stats.set_error(self.error)

    def current(self) -> tuple[np.ndarray, int] | None:
        """The newest window and the id of the sentence playing now (for the views)."""
        seq = self.ring.latest()
        got = self.ring.read(seq) if seq >= 0 else None
        return None if got is None else (got[0], got[3])

    def live(self) -> dict:
        """The statistics' live state, with what is playing now."""
        current = self.current()
        return self.stats.live(playing=None if current is None else current[1])

    def set_busy(self, on: bool) -> None:
        self.busy.set(on)
        self.stats.set_busy(self.busy.on)

    def close(self) -> None:
        self.stop_event.set()
        self.go.set()
        self.busy.set(False)
        if self._collector is not None:
            self._collector.join(2)
        for p in self.processes.values():
            p.join(3)
            if p.is_alive():
                p.terminate()
                p.join(2)
        self.messages.close()
        self.messages.cancel_join_thread()
