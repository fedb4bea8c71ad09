"""edgeopt.profile: where the time of one inference goes, layer by layer, against the machine's ceilings.

    result = edgeopt.profile(model, x)                       # one model
    result = edgeopt.profile(model, x, optimized=qmodel)     # a float model and its optimized twin
    print(result)                                            # the table; result.to_dict(), result.save(folder)

Per layer (edgeopt modules, torch layers, and the torch ops between them): time and share of the inference,
MACs, bytes moved, arithmetic intensity, achieved GMAC/s and GB/s, the fraction of the ceilings measured in
the same run (int8 chain or fp32 FMA, read bandwidth), and whether the layer is compute-bound, memory-bound or
overhead. With `optimized`, both models run in the same alternating blocks and layers are matched by name,
so the table shows which bottleneck an optimization removed and which remains. `peer="openvino"` adds
OpenVINO's own per-node times (PERF_COUNT) for the same model, exported to ONNX (fp32, or the static QDQ
int8 model when the twin is int8).

How times are taken: the model is traced and a clock is read after every node (edgeopt.perf.layer_timer),
so the steps of one call tile it; the plain and the instrumented model alternate call by call
(`PairedCalls`), and each model (and a peer) is one contender of the alternating blocks, whose first call
is not timed. Per-layer times are the mean over the calls whose total lies in the interquartile range; the
report states how far the layers' sum is from the plain model's median end-to-end time.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from edgeopt.perf import isa
from edgeopt.perf.ceilings import Ceilings, CeilingsUnavailable, measure_ceilings
from edgeopt.perf.cost import Cost
from edgeopt.perf.layer_timer import LayerTimer, Step
from edgeopt.perf.report import fmt, fmt_percent, markdown_table, text_table, write_json
from edgeopt.perf.timing import LoadRecord, Samples, alternating_blocks, quantile

# A layer whose work would take under this share of its measured time at the ceilings, and whose time beyond
# that is under OVERHEAD_SECONDS (the scale of a Python-level call), is overhead: its time is the per-call
# cost of running it, not its arithmetic or its memory traffic.
OVERHEAD_UNEXPLAINED = 0.25
OVERHEAD_SECONDS = 30e-6


# ------------------------------------------------------------------------------------------ per layer

@dataclass
class LayerTime:
    step: Step
    seconds: float
    share: float = math.nan
    bound: str = ""                 # "compute", "memory", "overhead" (empty without ceilings)
    compute_fraction: float = math.nan
    bandwidth_fraction: float = math.nan

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def cost(self) -> Cost:
        return self.step.cost

    @property
    def gmacs(self) -> float:
        return self.cost.macs / self.seconds / 1e9 if self.seconds > 0 else math.nan

    @property
    def gbs(self) -> float:
        return self.cost.bytes / self.seconds / 1e9 if self.seconds > 0 else math.nan

    def to_dict(self) -> dict:
        return {**self.step.to_dict(), "ms": self.seconds * 1e3, "share": self.share, "bound": self.bound,
                "gmacs": self.gmacs, "gbs": self.gbs, "compute_fraction": self.compute_fraction,
                "bandwidth_fraction": self.bandwidth_fraction}


def classify(cost: Cost, seconds: float, ceilings: Ceilings) -> tuple[str, float, float]:
    """(bound, fraction of the compute ceiling, fraction of read bandwidth) for `cost` done in `seconds`.

    The roofline decides between compute and memory: a layer whose intensity (MACs per byte) is above the
    ridge point (compute ceiling / bandwidth) can at best run at the compute ceiling, below it at
    intensity x bandwidth. Overhead: the work at the ceilings explains under a quarter of the time and the
    rest is a per-call-sized amount."""
    peak = ceilings.compute_gmacs(cost.int8) * 1e9
    bandwidth = ceilings.read_gbs * 1e9
    if not seconds > 0:
        return "", math.nan, math.nan
    compute_fraction = cost.macs / seconds / peak
    bandwidth_fraction = cost.bytes / seconds / bandwidth
    roofline = max(cost.macs / peak, cost.bytes / bandwidth)
    if roofline < OVERHEAD_UNEXPLAINED * seconds and seconds - roofline < OVERHEAD_SECONDS:
        return "overhead", compute_fraction, bandwidth_fraction
    ridge = peak / bandwidth
    return ("compute" if cost.macs and cost.intensity >= ridge else "memory"), compute_fraction, bandwidth_fraction


def per_layer_seconds(per_call: Sequence[Sequence[float]]) -> list[float]:
    """Per-step times from many instrumented calls: the mean over the calls whose total lies in the
    interquartile range, so the steps add up to a typical call (a per-step median would not add up)."""
    if not per_call:
        return []
    totals = [sum(d) for d in per_call]
    lo, hi = quantile(totals, 0.25), quantile(totals, 0.75)
    kept = [d for d, t in zip(per_call, totals) if lo <= t <= hi] or list(per_call)
    return [statistics.fmean(column) for column in zip(*kept)]


@dataclass
class ModelProfile:
    label: str
    layers: list[LayerTime]
    end_to_end: Samples             # the plain model, per call
    instrumented: Samples           # the instrumented model, per call
    mode: str = "fx"                # how layers were timed: "fx" (clock per graph node) or "hooks"
    opaque: list[str] = field(default_factory=list)
    trace_error: str | None = None
    peer: list | None = None        # NodeTime of the peer runtime
    peer_label: str = ""
    peer_end_to_end: Samples | None = None
    peer_note: str = ""

    @property
    def layers_seconds(self) -> float:
        return sum(layer.seconds for layer in self.layers)

    @property
    def accounting_error(self) -> float:
        """(sum of the per-layer times) / (median end-to-end time of the plain model) - 1."""
        return self.layers_seconds / self.end_to_end.median - 1

    def totals_by_bound(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for layer in self.layers:
            out[layer.bound or "?"] = out.get(layer.bound or "?", 0.0) + layer.seconds
        return out

    def to_dict(self) -> dict:
        return {"label": self.label, "end_to_end": self.end_to_end.to_dict(),
                "instrumented": self.instrumented.to_dict(), "layers_ms": self.layers_seconds * 1e3,
                "accounting_error": self.accounting_error, "mode": self.mode, "opaque_modules": self.opaque,
                "trace_error": self.trace_error, "by_bound_ms": {k: v * 1e3 for k, v in self.totals_by_bound().items()},
                "layers": [layer.to_dict() for layer in self.layers],
                "peer": None if self.peer is None else {
                    "label": self.peer_label, "note": self.peer_note,
                    "end_to_end": self.peer_end_to_end.to_dict() if self.peer_end_to_end else None,
                    "nodes": [n.to_dict() for n in self.peer]}}


def build_profile(label: str, timer: LayerTimer, per_call: Sequence[Sequence[float]], end_to_end: Samples,
                  instrumented: Samples, ceilings: Ceilings | None) -> ModelProfile:
    steps, seconds = timer.split_native(per_layer_seconds(per_call))
    total = sum(seconds) or math.nan
    layers = []
    for step, s in zip(steps, seconds):
        layer = LayerTime(step, s, share=s / total)
        if ceilings is not None:
            layer.bound, layer.compute_fraction, layer.bandwidth_fraction = classify(step.cost, s, ceilings)
        layers.append(layer)
    return ModelProfile(label, layers, end_to_end, instrumented, timer.mode, list(timer.opaque), timer.trace_error)


# ------------------------------------------------------------------------------------------ matching

@dataclass
class Row:
    """One line of the side-by-side table: a layer of the float model with what it became."""

    name: str
    before: list[LayerTime] = field(default_factory=list)
    after: list[LayerTime] = field(default_factory=list)
    peer: dict[str, list] = field(default_factory=dict)   # "before"/"after" -> NodeTime list

    def seconds(self, side: str) -> float:
        layers = getattr(self, side)
        return sum(layer.seconds for layer in layers) if layers else math.nan

    def peer_seconds(self, side: str) -> float:
        nodes = self.peer.get(side)
        return sum(n.seconds for n in nodes) if nodes else math.nan

    def main(self, side: str) -> LayerTime | None:
        """The layer that names the row on this side (the first timed layer), for op and bound columns."""
        layers = [layer for layer in getattr(self, side) if layer.step.kind == "layer"] or getattr(self, side)
        return layers[0] if layers else None


def match_rows(before: ModelProfile, after: ModelProfile | None) -> list[Row]:
    """Rows keyed by the float model's layers. A layer of the twin joins the row of the same name; the steps
    that have no namesake (a BatchNorm folded away, a ReLU fused, the ops between layers) join the row of
    the last named layer before them in their own model's execution order."""
    after_names = {layer.name for layer in after.layers if layer.step.kind == "layer"} if after else set()
    rows: list[Row] = []
    by_name: dict[str, Row] = {}
    for layer in before.layers:
        if layer.step.kind == "layer" and (layer.name in after_names or not rows or after is None):
            row = Row(layer.name)
            rows.append(row)
            by_name[layer.name] = row
        rows[-1].before.append(layer) if rows else None
    if after is None:
        return rows
    current = rows[0] if rows else None
    for layer in after.layers:
        if layer.step.kind == "layer" and layer.name in by_name:
            current = by_name[layer.name]
        elif layer.step.kind == "layer" and current is None:
            current = Row(layer.name)
            rows.append(current)
        if current is None:
            current = Row(layer.name)
            rows.append(current)
        current.after.append(layer)
    return rows


def assign_peer(rows: list[Row], side: str, nodes: list, known: set[str]) -> list:
    """Attaches peer nodes to rows by module name (see peers.module_name); a node of a container module
    (a residual add inside `layer1.0`) joins the row of that container's last layer on this side. Returns the
    nodes that match no row (graph input/output conversions, reorders)."""
    from edgeopt.perf.peers import module_name

    row_of: dict[str, Row] = {}
    order: list[tuple[str, Row]] = []
    for row in rows:
        for layer in getattr(row, side):
            if layer.step.kind == "layer":
                base = layer.name.split("#")[0]
                row_of.setdefault(base, row)
                order.append((base, row))
    unmatched = []
    for node in nodes:
        module = module_name(node.name, known)
        node.module = module
        row = row_of.get(module) if module else None
        if row is None and module:
            inside = [r for name, r in order if name.startswith(module + ".")]
            row = inside[-1] if inside else None
        if row is None:
            unmatched.append(node)
        else:
            row.peer.setdefault(side, []).append(node)
    return unmatched


# ------------------------------------------------------------------------------------------ the result

@dataclass
class ProfileResult:
    name: str
    threads: int
    path: str                       # the AVX2 mechanism and what ran
    load: LoadRecord
    ceilings: Ceilings | None
    before: ModelProfile
    after: ModelProfile | None = None
    rows: list[Row] = field(default_factory=list)
    peer_unmatched: dict[str, list] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # ---- text
    def header(self) -> list[str]:
        lines = [f"edgeopt profile: {self.name}, batch 1, {self.threads} thread{'s' if self.threads != 1 else ''}",
                 f"path: {self.path}", f"{self.load}"]
        lines.append(str(self.ceilings) if self.ceilings else "ceilings: not measured (no AVX2)")
        for p in filter(None, (self.before, self.after)):
            lines.append(f"{p.label}: end to end {p.end_to_end.median * 1e3:.3f} ms median, "
                         f"p95 {p.end_to_end.p95 * 1e3:.3f} ms ({p.end_to_end.n} calls); layers sum to "
                         f"{p.layers_seconds * 1e3:.3f} ms ({100 * p.accounting_error:+.1f}% of end to end; "
                         f"timed by {'a clock per graph node' if p.mode == 'fx' else 'forward hooks'}"
                         + (f"; kept whole: {', '.join(p.opaque)}" if p.opaque else "") + ")")
            if p.peer_end_to_end is not None:
                lines.append(f"  {p.peer_label}: end to end {p.peer_end_to_end.median * 1e3:.3f} ms median "
                             f"(same blocks, PERF_COUNT on); {p.peer_note}")
            elif p.peer_note:
                lines.append(f"  peer: {p.peer_note}")
        lines += self.notes
        return lines

    def layer_table(self, which: str = "before", markdown: bool = False) -> str:
        p = getattr(self, which)
        headers = ["layer", "op", "ms", "share", "MMAC", "KB", "MAC/B", "GMAC/s", "GB/s", "% compute", "% bw",
                   "bound"]
        rows = [[layer.name, f"{layer.step.op} {layer.step.detail}".strip(), fmt(layer.seconds * 1e3, 3),
                 fmt_percent(layer.share), fmt(layer.cost.macs / 1e6, 2), fmt(layer.cost.bytes / 1e3, 1),
                 fmt(layer.cost.intensity, 1), fmt(layer.gmacs, 1), fmt(layer.gbs, 1),
                 fmt_percent(layer.compute_fraction) if layer.cost.macs else "-",
                 fmt_percent(layer.bandwidth_fraction), layer.bound] for layer in p.layers]
        return (markdown_table if markdown else text_table)(headers, rows, "ll" + "r" * 9 + "l")

    def side_by_side(self, markdown: bool = False) -> str:
        has_peer = any(r.peer for r in self.rows)
        headers = ["layer", "before", "ms", "bound", "after", "ms", "bound", "speedup", "share after"]
        if has_peer:
            headers += ["peer before ms", "peer after ms", "vs peer"]
        total_after = self.after.layers_seconds if self.after else math.nan
        out = []
        for r in self.rows:
            b, a = r.main("before"), r.main("after")
            tb, ta = r.seconds("before"), r.seconds("after")
            cells = [r.name, _what(r.before), fmt(tb * 1e3, 3), _bound(r.before), _what(r.after), fmt(ta * 1e3, 3),
                     _bound(r.after), fmt(tb / ta, 2, "x") if ta > 0 else "-",
                     fmt_percent(ta / total_after) if ta > 0 else "-"]
            if has_peer:
                pa = r.peer_seconds("after")
                cells += [fmt(r.peer_seconds("before") * 1e3, 3), fmt(pa * 1e3, 3),
                          fmt(pa / ta, 2, "x") if ta > 0 and pa > 0 else "-"]
            out.append(cells)
            del b, a
        if has_peer and any(self.peer_unmatched.values()):
            side = {k: sum(n.seconds for n in v) for k, v in self.peer_unmatched.items()}
            out.append(["(peer only: input/output conversions, reorders)", "", "", "", "", "", "", "", "",
                        fmt(side.get("before", math.nan) * 1e3, 3), fmt(side.get("after", math.nan) * 1e3, 3), ""])
        return (markdown_table if markdown else text_table)(headers, out, "lllllllrr" + "rrr" * has_peer)

    def bound_summary(self) -> str:
        lines = []
        for p in filter(None, (self.before, self.after)):
            parts = sorted(p.totals_by_bound().items(), key=lambda kv: -kv[1])
            lines.append(f"{p.label}: " + ", ".join(f"{k} {v * 1e3:.2f} ms ({100 * v / p.layers_seconds:.0f}%)"
                                                      for k, v in parts))
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = ["\n".join(self.header()), ""]
        if self.after is None:
            parts.append(self.layer_table("before"))
        else:
            parts += [self.side_by_side(), "", "after, per layer:", self.layer_table("after")]
        parts += ["", "time by bound: ", self.bound_summary()]
        return "\n".join(parts)

    def markdown(self) -> str:
        parts = ["\n".join(f"- {line}" for line in self.header()), ""]
        if self.after is not None:
            parts += ["## Before and after, layer matched to layer", "", self.side_by_side(markdown=True), ""]
        parts += [f"## {self.before.label}, per layer", "", self.layer_table("before", markdown=True), ""]
        if self.after is not None:
            parts += [f"## {self.after.label}, per layer", "", self.layer_table("after", markdown=True), ""]
        parts += ["## Time by bound", "", self.bound_summary()]
        return "\n".join(parts) + "\n"

    def to_dict(self) -> dict:
        return {"name": self.name, "threads": self.threads, "path": self.path, "load": self.load.to_dict(),
                "ceilings": self.ceilings.to_dict() if self.ceilings else None,
                "before": self.before.to_dict(), "after": self.after.to_dict() if self.after else None,
                "rows": [{"name": r.name, "before_ms": r.seconds("before") * 1e3, "after_ms": r.seconds("after") * 1e3,
                          "before_layers": [layer.name for layer in r.before],
                          "after_layers": [layer.name for layer in r.after],
                          "peer_before_ms": r.peer_seconds("before") * 1e3,
                          "peer_after_ms": r.peer_seconds("after") * 1e3} for r in self.rows],
                "peer_unmatched": {k: [n.to_dict() for n in v] for k, v in self.peer_unmatched.items()},
                "notes": self.notes}

    def save(self, folder: str | Path, plots: bool = True) -> dict[str, Path]:
        """Writes profile.json, profile.md and (with matplotlib) roofline.png and layers.png; returns the paths."""
        from edgeopt.perf.report import atomic_write

        folder = Path(folder)
        written = {"json": write_json(folder / "profile.json", self.to_dict()),
                   "markdown": atomic_write(folder / "profile.md", self.markdown())}
        if plots:
            from edgeopt.perf import plots as plotting

            try:
                written["roofline"] = plotting.roofline(self, folder / "roofline.png")
                written["layers"] = plotting.layer_bars(self, folder / "layers.png")
            except plotting.PlotsUnavailable as exc:
                self.notes.append(str(exc))
        return written


def _what(layers: list[LayerTime]) -> str:
    named = [layer for layer in layers if layer.step.kind == "layer"]
    if not layers:
        return "-"
    first = named[0] if named else layers[0]
    extra = len(layers) - 1
    text = f"{first.step.op} {first.step.detail}".strip()
    return text + (f" +{extra}" if extra else "")


def _bound(layers: list[LayerTime]) -> str:
    """The bound of the step that takes most of the row's time."""
    if not layers:
        return "-"
    return max(layers, key=lambda layer: layer.seconds).bound or "?"


# ------------------------------------------------------------------------------------------ running

def _threads(n: int | None) -> int:
    from edgeopt.threads import get_num_threads

    return n or get_num_threads()


def profile(model: nn.Module, x: torch.Tensor, *, optimized: nn.Module | None = None, threads: int | None = None,
            blocks: int = 7, seconds_per_block: float = 0.3, ceilings: bool = True, ceiling_seconds: float = 0.1,
            peer: str | None = None,
            peer_model: tuple | None = None, name: str | None = None, labels: tuple[str, str] = ("before", "after"),
            progress=None) -> ProfileResult:
    """Profiles `model` (and its optimized twin) on the batch-1 input `x`.

    threads: for torch and edgeopt alike (default: edgeopt's current count). blocks, seconds_per_block: the
    alternating-blocks schedule (each model, plain and instrumented, gets one block per round). ceilings:
    measure them (each chain 3 x `ceiling_seconds`, before and after the blocks). peer:
    "openvino" adds OpenVINO's per-node times, from `peer_model` = (fp32 onnx path, int8 onnx path or None)
    or exported here from `model` (fp32 only: pass the QDQ file for an int8 twin)."""
    import edgeopt

    n_threads = _threads(threads)
    previous = (torch.get_num_threads(), None)
    torch.set_num_threads(n_threads)
    edgeopt.set_num_threads(n_threads)
    try:
        return _profile(model, x, optimized, n_threads, blocks, seconds_per_block, ceilings and ceiling_seconds, peer,
                        peer_model,
                        name or type(model).__name__, labels, progress)
    finally:
        torch.set_num_threads(previous[0])
        edgeopt.set_num_threads(None)


def _profile(model, x, optimized, threads, blocks, seconds_per_block, ceiling_seconds, peer, peer_model, name, labels,
             progress) -> ProfileResult:
    path = isa.describe()
    load = LoadRecord()
    models = {labels[0]: model.eval()}
    if optimized is not None and labels[0] == labels[1]:
        raise ValueError(f"edgeopt profile: the two labels must differ, got {labels}")
    if optimized is not None:
        models[labels[1]] = optimized.eval() if isinstance(optimized, nn.Module) else optimized
    timers = {label: LayerTimer(m, x) for label, m in models.items()}
    contenders, after, pairs = {}, {}, {}
    for label, m in models.items():
        pair = pairs[label] = PairedCalls(m, timers[label], x)
        contenders[label] = pair
        after[label] = pair.keep
    peers_run, peer_notes = _peer_runners(peer, peer_model, models, threads)
    for label, runner in peers_run.items():
        contenders[f"{label} peer"] = (lambda r=runner: r(x))
        after[f"{label} peer"] = (lambda _, r=runner: r.record())
    measured = None
    if ceiling_seconds:
        try:
            measured = measure_ceilings(threads, ceiling_seconds)
        except CeilingsUnavailable:
            measured = None
    for timer in timers.values():
        timer.reset_native()  # the plans' per-node clocks count the timed calls only
    samples = alternating_blocks(contenders, blocks=blocks, seconds_per_block=seconds_per_block, after=after,
                                 progress=progress)
    if measured is not None:  # twice, around the timing: the better of the two (noise only lowers a ceiling)
        again = measure_ceilings(threads, ceiling_seconds)
        measured = Ceilings(max(measured.int8_gmacs, again.int8_gmacs), max(measured.fp32_gmacs, again.fp32_gmacs),
                            max(measured.read_gbs, again.read_gbs), threads)
    load.stop()
    profiles = {}
    for label in models:
        pair = pairs[label]
        p = build_profile(label, timers[label], pair.per_call, pair.plain, pair.instrumented, measured)
        if label in peers_run:
            p.peer, p.peer_label = peers_run[label].node_times(), "OpenVINO"
            p.peer_end_to_end = samples[f"{label} peer"]
            p.peer_note = peers_run[label].meta.get("contender_isa", "")
        elif peer_notes.get(label):
            p.peer_note = peer_notes[label]
        profiles[label] = p
    before = profiles[labels[0]]
    after_profile = profiles[labels[1]] if optimized is not None else None
    result = ProfileResult(name, threads, path, load, measured, before, after_profile)
    result.rows = match_rows(before, after_profile)
    known = {n for n, _ in model.named_modules() if n}
    for label, p in profiles.items():
        if p.peer:
            side = "before" if label == labels[0] else "after"
            result.peer_unmatched[side] = assign_peer(result.rows, side, p.peer, known)
    if before.mode == "hooks":
        result.notes.append(f"{before.label}: not traceable ({before.trace_error}); timed with forward hooks, "
                            "which add per-module overhead")
    return result


class PairedCalls:
    """One contender of the alternating blocks: the plain model and its instrumented copy called in turn,
    call by call (which goes first alternates), so the end-to-end time and the per-layer times are taken
    under the same conditions and differ by the instrumentation, not by what else the machine did during
    one block or the other (separate blocks put ~5-10% of noise between them on a shared machine)."""

    def __init__(self, model, timer: LayerTimer, x: torch.Tensor):
        self.model, self.timer, self.x = model, timer, x
        self.plain, self.instrumented = Samples(), Samples()
        self.per_call: list[list[float]] = []
        self._plain_first = False

    def __call__(self) -> tuple[float, float, list[float]]:
        clock = time.perf_counter
        self._plain_first = not self._plain_first
        if self._plain_first:
            t0 = clock()
            self.model(self.x)
            t1 = clock()
            durations = self.timer.run(self.x)
            t2 = clock()
            return t1 - t0, t2 - t1, durations
        t0 = clock()
        durations = self.timer.run(self.x)
        t1 = clock()
        self.model(self.x)
        t2 = clock()
        return t2 - t1, t1 - t0, durations

    def keep(self, result: tuple[float, float, list[float]]) -> None:
        plain, instrumented, durations = result
        self.plain.add(plain)
        self.instrumented.add(instrumented)
        self.per_call.append(durations)


def _peer_runners(peer, peer_model, models, threads) -> tuple[dict, dict]:
    """OpenVINO compiled models with PERF_COUNT for each side that has an ONNX file; notes for the others."""
    runners, notes = {}, {}
    if peer is None:
        return runners, notes
    if peer != "openvino":
        raise ValueError(f"edgeopt profile: peer must be 'openvino' or None, got {peer!r}")
    from edgeopt.perf import peers, plots

    plots.preload()  # before the peer runs (see plots.preload)
    labels = list(models)
    files = dict(zip(labels, peer_model or ()))
    for label in labels:
        path = files.get(label)
        if path is None:
            notes[label] = "no ONNX model given for the peer on this side"
            continue
        try:
            runners[label] = peers.openvino_model(Path(path), threads, profiling=True)
        except peers.PeerUnavailable as exc:
            notes[label] = str(exc)
    return runners, notes


class _CallableModule(types.ModuleType):
    # `import edgeopt.profile` binds the package attribute to this module, so the module itself must be the
    # function for `edgeopt.profile(model, x)` to keep working after that import (as edgeopt.quantize).
    def __call__(self, *args, **kwargs):
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


# ------------------------------------------------------------------------------------------ command line

def resolve_model(spec: str, input_shape: Sequence[int] | None = None, log=print):
    """MODEL_OR_CHECKPOINT -> (subject, fp32 model, how its weights were made). Accepts a study model
    (ravdess, fsdd, cifar10, mnist_vit, resnet18, ...), a reference checkpoint name (ravdess_vgg_audio),
    a checkpoint file, or any registry model name (random init; give --input-shape)."""
    from dataclasses import replace

    from edgeopt.models import list_models, load_checkpoint
    from edgeopt.training.reference import RECIPES as REFERENCE
    from edgeopt.study import subjects

    shape = tuple(input_shape) if input_shape else None
    try:
        subject = subjects.get_subject(spec)
    except ValueError:
        subject = None
    if subject is None:
        for s in subjects.SUBJECTS.values():
            if s.checkpoint == spec:
                subject = s
    if subject is not None:
        if shape and shape != subject.input_shape:
            subject = replace(subject, input_shape=shape)
        model, how = subjects.load_model(subject, log=log)
        return subject, model, how
    if spec in REFERENCE or Path(spec).is_file():
        from edgeopt.models import load_pretrained

        model, meta = (load_pretrained(spec, with_metadata=True) if spec in REFERENCE else load_checkpoint(spec))
        shape = shape or tuple(meta.get("input_shape") or ())
        if not shape:
            raise ValueError(f"edgeopt profile: {spec} records no input shape; give --input-shape C,H,W")
        subject = subjects.Subject(Path(spec).stem, spec, meta["model_name"], shape, task=meta.get("task"))
        return subject, model.eval(), f"checkpoint {spec}"
    if spec in list_models():
        if not shape:
            raise ValueError(f"edgeopt profile: give --input-shape for registry model {spec} (e.g. 3,224,224)")
        subject = subjects.Subject(spec, f"{spec} (random init)", spec, shape)
        model, how = subjects.load_model(subject, log=log)
        return subject, model, how
    raise ValueError(f"edgeopt profile: {spec!r} is neither a study model ({', '.join(subjects.SUBJECTS)}), a "
                     f"reference checkpoint ({', '.join(REFERENCE)}), a checkpoint file nor a registry model")


def _built_twin(recipe, ctx, source: str):
    """The optimized twin, built once (calibration, kernel choice: heavy) and loaded from the cache after, so a
    timing run under /work/tools/quiet only loads it. Keyed like the study's built rows: the weights and
    edgeopt's code."""
    from edgeopt.perf.cache import cached_module
    from edgeopt.perf.peers import weights_key
    from edgeopt.study import recipes

    def build():
        print(f"building the {recipe.label} twin (calibration: {source})", file=sys.stderr)
        return recipes.build(recipe, ctx)

    if not recipe.pickles:
        return build()
    ctx._path("")  # the folder exists
    path = recipes.built_path(ctx.folder, recipe.name, weights_key(ctx.base))
    if path.is_file():
        print(f"the {recipe.label} twin from the cache: {path}", file=sys.stderr)
    return cached_module(path, build, log=lambda m: print(m, file=sys.stderr)).eval()


def run_cli(args) -> int:
    from edgeopt.perf import peers
    from edgeopt.study import recipes, subjects

    shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None
    subject, model, how = resolve_model(args.model, shape, log=lambda m: print(m, file=sys.stderr))
    x = subjects.example_input(subject) if subject.task else torch.randn(
        1, *subject.input_shape, generator=torch.Generator().manual_seed(4321))
    optimized, labels, notes = None, ("fp32", "optimized"), []
    calib = None
    if args.optimized or args.peer:
        calib, source = subjects.calibration(subject) if subject.task else (
            [torch.randn(4, *subject.input_shape, generator=torch.Generator().manual_seed(1234)) for _ in range(8)],
            "deterministic random-normal (seed 1234), 8x4")
    if args.optimized:
        recipe = recipes.get_recipe(args.optimized)
        if args.optimized not in recipes.PROFILE_RECIPES:
            raise ValueError(f"edgeopt profile: --optimized takes one of {', '.join(recipes.PROFILE_RECIPES)} "
                             f"(recipes whose result is a module the profiler can trace), got {args.optimized!r}")
        from edgeopt.models import cache_dir

        ctx = recipes.Context(subject, model, calib, x, threads=args.threads or 2,
                              folder=cache_dir() / "study" / "full" / subject.name,
                              log=lambda m: print(m, file=sys.stderr))
        optimized = _built_twin(recipe, ctx, source)
        notes = ctx.notes
        labels = ("fp32", recipe.name)
    peer_files = None
    if args.peer == "openvino":
        from edgeopt.models import cache_dir

        folder = cache_dir() / "profile" / "onnx"
        try:
            fp32_file = peers.export_fp32(model, (1, *subject.input_shape), folder, subject.name)
            int8_file = (peers.export_qdq(model, (1, *subject.input_shape), calib, folder, subject.name)
                         if args.optimized == "int8" else None)
            peer_files = (fp32_file, int8_file)
        except peers.PeerUnavailable as exc:
            notes.append(f"peer skipped: {exc}")
    bar = None
    if sys.stderr.isatty():
        from edgeopt.progress import Progress

        bar = Progress(1, "timing (alternating blocks)")

        def progress(done, total):
            bar.total = total
            bar.done = done - 1
            bar.advance()
    else:
        progress = None
    result = profile(model, x, optimized=optimized, threads=args.threads, blocks=args.blocks,
                     seconds_per_block=args.seconds, ceiling_seconds=args.ceiling_seconds, peer=args.peer if peer_files else None, peer_model=peer_files,
                     name=f"{subject.label}, {how}", labels=labels, progress=progress)
    if bar is not None:
        bar.close()
    result.notes += notes
    out = Path(args.out) if args.out else None
    if out is not None:
        written = result.save(out, plots=not args.no_plots)
        result.notes.append("wrote " + ", ".join(str(p) for p in written.values()))
    if args.json:
        write_json(args.json, result.to_dict())
    print(result)
    return 0


def register(subparsers) -> None:
    from edgeopt.cli_args import positive_float, positive_int

    p = subparsers.add_parser("profile", help="per-layer time, MACs, bytes and bound against measured ceilings",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT",
                   help="a study model (ravdess, fsdd, cifar10, mnist_vit, resnet18, mobilenet_v2, resnet50), a "
                        "reference checkpoint name, a checkpoint file, or a registry model (with --input-shape)")
    p.add_argument("--optimized", metavar="RECIPE", default=None,
                   help="also profile the optimized twin, layer matched to layer: int8, fp16, prune80_int8, "
                        "student_int8, ... (fine-tuned twins are the study's, trained once and cached)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for torch and edgeopt (default 2)")
    p.add_argument("--input-shape", default=None, help="one sample's shape, e.g. 3,224,224")
    p.add_argument("--peer", choices=["openvino"], default=None,
                   help="add OpenVINO's per-node times (PERF_COUNT) for the same model exported to ONNX")
    p.add_argument("--blocks", type=positive_int, default=7, help="alternating-block rounds (default 7)")
    p.add_argument("--seconds", type=positive_float, default=0.3, help="seconds per block per contender (default 0.3)")
    p.add_argument("--ceiling-seconds", type=positive_float, default=0.1, help="seconds per ceiling run (3 per chain)")
    p.add_argument("--out", default=None, help="folder for profile.json, profile.md, roofline.png, layers.png")
    p.add_argument("--json", default=None, help="write the JSON result here too")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(run=run_cli)
