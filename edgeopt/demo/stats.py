"""The demo's figures, from the results the model processes send back.

Definitions (the page and the summary use the same ones):
- latency: wall time of one ``model(window)`` call in the model's process (batch 1);
- lag: from the moment the window's last audio sample arrived to the end of its prediction (queueing and
  the stream's own delay included): what a listener waits;
- sustainable predictions/s: ``1 / median latency``, the rate the model could keep up back to back;
- real-time factor: compute time per second of audio at the demo's rate, ``mean latency x rate``
  (below 1 keeps up; 0.1 = a tenth of real time);
- CPU: the model process's CPU time (all its threads, spinning included) per wall second, in % of one
  core, at the demo's prediction rate;
- accuracy: on *scored* windows (those that hold a sentence, `edgeopt.demo.stream`); "clips" votes the
  mean probability over a sentence's scored windows; "paired" compares the two models on the windows both
  processed;
- dropped: windows a model skipped because it was more than the queue capacity behind.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

ROLLING_SECONDS = 10.0  # latency / lag percentiles and backlog on the page
CPU_SECONDS = 5.0  # CPU share and delivered rate on the page
ACCURACY_SECONDS = 60.0  # rolling accuracy on the page
PHASES = ("quiet", "busy")  # the busy-core switch off / on


@dataclass(slots=True)
class Result:
    seq: int
    clip: int
    pred: int
    conf: float
    audio_time: float
    start: float
    end: float
    backlog: int
    dropped: int  # cumulative in the model process
    cpu: float  # process CPU seconds at `end`
    busy: bool
    label: int  # the window's truth, -1: not scored

    @property
    def correct(self) -> bool | None:
        return None if self.label < 0 else self.pred == self.label

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def lag(self) -> float:
        return self.end - self.audio_time


@dataclass
class _Segment:
    """Consecutive results with the busy switch in one position."""

    busy: bool
    dropped_before: int
    results: list[Result] = field(default_factory=list)


def _percentile(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


class ModelStats:
    def __init__(self, role: str, rate: float):
        self.role = role
        self.rate = rate
        self.info: dict | None = None
        self.recent: deque[Result] = deque()
        self.segments: list[_Segment] = []
        self.last_probs: list[float] | None = None
        self.correct_by_seq: dict[int, bool] = {}
        self.scored = self.correct = 0
        self.recent_scored: deque[tuple[float, bool]] = deque()
        self._clip: int = -1
        self._clip_probs: np.ndarray | None = None
        self._clip_label = -1
        self.clips_done = self.clips_correct = 0

    @property
    def processed(self) -> int:
        return sum(len(s.results) for s in self.segments)

    @property
    def dropped(self) -> int:
        return self.segments[-1].results[-1].dropped if self.segments and self.segments[-1].results else 0

    def add(self, r: Result, probs: list[float], label: int) -> None:
        if not self.segments or self.segments[-1].busy != r.busy:
            self.segments.append(_Segment(r.busy, self.dropped))
        self.segments[-1].results.append(r)
        self.recent.append(r)
        while self.recent and self.recent[0].end < r.end - max(ROLLING_SECONDS, CPU_SECONDS):
            self.recent.popleft()
        self.last_probs = probs
        if r.clip != self._clip:
            self._finish_clip()
        if r.correct is not None:
            self.scored += 1
            self.correct += r.correct
            self.correct_by_seq[r.seq] = r.correct
            self.recent_scored.append((r.end, r.correct))
            if self._clip_probs is None:
                self._clip, self._clip_probs, self._clip_label = r.clip, np.zeros(len(probs)), label
            self._clip_probs += probs
        while self.recent_scored and self.recent_scored[0][0] < r.end - ACCURACY_SECONDS:
            self.recent_scored.popleft()

    def _finish_clip(self) -> None:
        if self._clip_probs is not None:
            self.clips_done += 1
            self.clips_correct += int(np.argmax(self._clip_probs)) == self._clip_label
        self._clip, self._clip_probs = -1, None

    def live(self, now: float) -> dict:
        """The rolling figures the page and the terminal view show."""
        out = {"role": self.role, "info": self.info, "processed": self.processed, "dropped": self.dropped,
               "accuracy": self.scored and self.correct / self.scored, "scored": self.scored,
               "rolling_accuracy": None, "rolling_scored": len(self.recent_scored),
               "clip_accuracy": self.clips_done and self.clips_correct / self.clips_done, "clips": self.clips_done}
        if self.recent_scored:
            out["rolling_accuracy"] = sum(c for _, c in self.recent_scored) / len(self.recent_scored)
        if not self.recent:
            return out
        last = self.recent[-1]
        window = [r for r in self.recent if r.end >= last.end - ROLLING_SECONDS]
        latency = [r.latency for r in window]
        p50 = _percentile(latency, 50)
        out.update(pred=last.pred, conf=last.conf, probs=self.last_probs, seq=last.seq, clip=last.clip,
                   truth=last.label, correct=last.correct, latency_p50_ms=1e3 * p50, latency_p95_ms=1e3 * _percentile(latency, 95),
                   sustainable_per_s=1 / p50 if p50 else None, rtf=float(np.mean(latency)) * self.rate,
                   lag_p95_ms=1e3 * _percentile([r.lag for r in window], 95), backlog=last.backlog,
                   backlog_max=max(r.backlog for r in window), stale_s=max(0.0, now - last.end))
        cpu_window = [r for r in self.recent if r.end >= last.end - CPU_SECONDS]
        first = cpu_window[0]
        if last.end - first.end > 0.5:
            out["cpu_percent"] = 100 * (last.cpu - first.cpu) / (last.end - first.end)
            out["delivered_per_s"] = (len(cpu_window) - 1) / (last.end - first.end)
        return out

    def phase_summary(self, busy: bool) -> dict | None:
        """Whole-run figures over the results taken with the busy switch at `busy`."""
        segments = [s for s in self.segments if s.busy == busy and s.results]
        if not segments:
            return None
        results = [r for s in segments for r in s.results]
        latency = np.array([r.latency for r in results])
        lag = np.array([r.lag for r in results])
        cpu = sum(s.results[-1].cpu - s.results[0].cpu for s in segments)
        wall = sum(s.results[-1].end - s.results[0].end for s in segments)
        dropped = sum(s.results[-1].dropped - s.dropped_before for s in segments)
        backlog = np.array([r.backlog for r in results])
        third = max(1, len(backlog) // 3)
        scored = [r.correct for r in results if r.correct is not None]
        p50 = float(np.median(latency))
        return {
            "processed": len(results), "dropped": int(dropped), "seconds": wall,
            "latency_p50_ms": 1e3 * p50, "latency_p95_ms": 1e3 * float(np.percentile(latency, 95)),
            "latency_max_ms": 1e3 * float(latency.max()), "sustainable_per_s": 1 / p50,
            "rtf": float(latency.mean()) * self.rate,
            "lag_p50_ms": 1e3 * float(np.median(lag)), "lag_p95_ms": 1e3 * float(np.percentile(lag, 95)),
            "lag_max_ms": 1e3 * float(lag.max()),
            "cpu_percent": 100 * cpu / wall if wall > 0 else None,
            "delivered_per_s": (len(results) - len(segments)) / wall if wall > 0 else None,
            "backlog_max": int(backlog.max()), "backlog_mean_first_third": float(backlog[:third].mean()),
            "backlog_mean_last_third": float(backlog[-third:].mean()),
            "accuracy": float(np.mean(scored)) if scored else None, "scored": len(scored),
        }


class DemoStats:
    """Everything the views show, updated by the engine's collector thread, read by the views."""

    def __init__(self, rate: float, classes):
        self.rate = rate
        self.classes = list(classes)
        self.models = {role: ModelStats(role, rate) for role in ("baseline", "optimized")}
        self.lock = threading.Lock()
        self.source: dict | None = None
        self.stream: dict = {}
        self._stream_first: dict | None = None
        self.busy = False
        self.error: str | None = None
        self.started: float | None = None
        self.paired_n = self.paired_base = self.paired_opt = 0
        self.page: dict = {}
        self.isa_mechanism = ""
        self.threads = 0

    # -- updates (collector thread)
    def set_source(self, info: dict) -> None:
        with self.lock:
            self.source = info

    def set_model_info(self, role: str, info: dict) -> None:
        with self.lock:
            self.models[role].info = info

    def start_clock(self) -> None:
        self.started = time.perf_counter()

    def label_of(self, clip: int) -> int:
        utterances = self.source["utterances"] if self.source else []
        return utterances[clip % len(utterances)][0] if clip >= 0 and utterances else -1

    def add_result(self, role, seq, clip, probs, audio_time, start, end, backlog, dropped, cpu, busy=False) -> None:
        label = self.label_of(clip)
        pred = int(np.argmax(probs))
        r = Result(seq, clip, pred, float(probs[pred]), audio_time, start, end, backlog, dropped, cpu, busy, label)
        with self.lock:
            self.models[role].add(r, probs, label)
            if r.correct is not None:
                other = self.models["optimized" if role == "baseline" else "baseline"].correct_by_seq.pop(seq, None)
                if other is not None:
                    self.models[role].correct_by_seq.pop(seq)
                    mine_base = r.correct if role == "baseline" else other
                    mine_opt = other if role == "baseline" else r.correct
                    self.paired_n += 1
                    self.paired_base += mine_base
                    self.paired_opt += mine_opt

    def set_stream_status(self, status: dict) -> None:
        with self.lock:
            if self._stream_first is None:
                self._stream_first = status
            self.stream = status

    def set_busy(self, on: bool) -> None:
        with self.lock:
            self.busy = on

    def set_error(self, message: str) -> None:
        with self.lock:
            self.error = message

    def set_page_cost(self, **figures) -> None:
        with self.lock:
            self.page.update(figures)

    # -- reads (views)
    def stream_cpu_percent(self) -> float | None:
        a, b = self._stream_first, self.stream
        if not a or not b or b["t"] - a["t"] < 0.5:
            return None
        return 100 * (b["cpu"] - a["cpu"]) / (b["t"] - a["t"])

    def live(self, playing: int | None = None) -> dict:
        """The rolling figures; `playing`: the id of the sentence playing now (from the window ring)."""
        now = time.perf_counter()
        with self.lock:
            models = {role: m.live(now) for role, m in self.models.items()}
            base, opt = models["baseline"], models["optimized"]
            ratio = {"cpu": _ratio(opt.get("cpu_percent"), base.get("cpu_percent")),
                     "latency": _ratio(base.get("latency_p50_ms"), opt.get("latency_p50_ms")),
                     "paired_n": self.paired_n,
                     "accuracy_delta_points": (100 * (self.paired_opt - self.paired_base) / self.paired_n
                                               if self.paired_n else None)}
            source = self.source or {}
            return {"t": now - (self.started or now), "models": models, "ratio": ratio, "busy": self.busy,
                    "error": self.error, "now_playing": self.describe(playing),
                    "stream_cpu_percent": self.stream_cpu_percent(),
                    "stream_late_ms": 1e3 * self.stream.get("late_max", 0.0), "page": dict(self.page),
                    "source_kind": source.get("kind")}

    def describe(self, clip: int | None) -> dict | None:
        """What the page says about a sentence of the playlist (`clip` as in `Playlist.truth`)."""
        utterances = (self.source or {}).get("utterances")
        if clip is None or clip < 0 or not utterances:
            return None
        label, name, actor = utterances[clip % len(utterances)]
        return {"label": label, "emotion": self.classes[label], "name": name, "actor": actor,
                "index": clip % len(utterances) + 1, "of": len(utterances), "lap": clip // len(utterances) + 1}

    def summary(self) -> dict:
        with self.lock:
            out = {"rate": self.rate, "threads": self.threads, "isa": self.isa_mechanism,
                   "seconds": time.perf_counter() - (self.started or time.perf_counter()),
                   "stream_cpu_percent": self.stream_cpu_percent(), "source": {
                       k: v for k, v in (self.source or {}).items() if k != "utterances"},
                   "models": {}, "phases": {}, "error": self.error, "page": dict(self.page),
                   "paired": {"windows": self.paired_n,
                              "baseline_accuracy": self.paired_base / self.paired_n if self.paired_n else None,
                              "optimized_accuracy": self.paired_opt / self.paired_n if self.paired_n else None}}
            for role, m in self.models.items():
                out["models"][role] = {"info": m.info, "processed": m.processed, "dropped": m.dropped,
                                       "accuracy": m.correct / m.scored if m.scored else None, "scored": m.scored,
                                       "clip_accuracy": m.clips_correct / m.clips_done if m.clips_done else None,
                                       "clips": m.clips_done}
            for phase, busy in zip(PHASES, (False, True)):
                figures = {role: m.phase_summary(busy) for role, m in self.models.items()}
                if any(figures.values()):
                    b, o = figures["baseline"] or {}, figures["optimized"] or {}
                    figures["ratio"] = {"cpu": _ratio(o.get("cpu_percent"), b.get("cpu_percent")),
                                        "latency": _ratio(b.get("latency_p50_ms"), o.get("latency_p50_ms"))}
                    out["phases"][phase] = figures
            return out
