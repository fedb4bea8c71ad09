"""The one report every pass returns: per layer what was applied, the kernel chosen, MACs, bytes, SQNR
vs float and measured time; for the model, accuracy and latency before/after, size, what was backed off.

`edgeopt.quantize`, `edgeopt.sparsify`, `edgeopt.low_rank`, `edgeopt.prune(...).report()`,
`quantize_linear_layers` and `edgeopt.optimize` all return a `Report`; `optimize` merges the reports of
its steps into one (a layer's row collects every step's entry in `applied`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class LayerReport:
    name: str
    kind: str                                  # the layer as it was, e.g. "Conv2d 64->128 3x3 s2"
    converted: bool = False                    # the pass changed this layer
    reason: str = ""                           # why it stayed as it was (empty when converted)
    applied: list[str] = field(default_factory=list)        # what was done to it, in order
    kernel: str = ""                           # what runs it now, e.g. "sparse int8", "dense int8", "torch fp32"
    kernel_us: dict[str, float] = field(default_factory=dict)  # measured microseconds per candidate kernel
    time_us: float | None = None               # measured time of the chosen kernel (batch of `timing_rows`)
    macs: int | None = None                    # per sample, as the chosen kernel runs it
    macs_before: int | None = None             # per sample, the float layer
    weight_bytes: int | None = None
    weight_bytes_before: int | None = None
    sqnr_db: float | None = None               # output vs the float layer (BatchNorm folded), calibration data
    # int8 lowering
    activation: str | tuple[float, float] | None = None    # fused activation
    folded_bn: str | None = None               # name of the BatchNorm folded into it
    input_range: tuple[float, float] | None = None          # the observed (clipped) input range
    observed_min_max: tuple[float, float] | None = None     # raw min/max of the input
    u8_output: bool = False                    # emits uint8 straight into the next quantized layer(s)
    u8_output_to: tuple[str, ...] = ()
    weight_rounding: str = "nearest"
    channels_last_output: bool = False         # hands NHWC output to consumers that do not care
    residual_add: bool = False                 # `act(out + residual)` computed in the layer's epilogue
    # structure
    sparsity: float | None = None              # fraction of zero weights
    block_density: float | None = None         # stored blocks / blocks of the packed sparse layout
    rank: int | None = None                    # low rank: the rank chosen (0: none saves MACs)
    full_rank: int | None = None
    rel_error: float | None = None             # low rank: ||W - U V^T|| / ||W||
    energy: float | None = None                # low rank: fraction of sum(s^2) kept
    channels: tuple[int, int] | None = None    # channel pruning: (before, after)

    @property
    def speedup(self) -> float:
        """Measured time of the float layer's kernel over the chosen one's (nan when not measured)."""
        before = self.kernel_us.get("torch fp32")
        if before is None or not self.time_us:
            return math.nan
        return before / self.time_us

    def merge(self, later: "LayerReport") -> None:
        """Fold a later pass's entry for this layer into this one: its actions are appended, what it
        measured replaces what was known."""
        self.applied += [a for a in later.applied if a not in self.applied]
        defaults = LayerReport(later.name, later.kind)
        for f in fields(self):
            if f.name in ("name", "kind", "applied", "macs_before", "weight_bytes_before"):
                continue
            value = getattr(later, f.name)
            if value != getattr(defaults, f.name):
                setattr(self, f.name, value)
        self.converted = self.converted or later.converted
        if self.macs_before is None:
            self.macs_before = later.macs_before
        if self.weight_bytes_before is None:
            self.weight_bytes_before = later.weight_bytes_before

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["activation"] = list(self.activation) if isinstance(self.activation, tuple) else self.activation
        return d


@dataclass
class BackOff:
    """One step of the accuracy-aware mode: a layer moved to a less aggressive kernel."""
    layer: str
    from_kernel: str
    to_kernel: str
    accuracy_gain: float                       # points, measured with this layer backed off alone
    ms_lost: float                             # measured latency cost of the back-off
    accuracy_after: float                      # model accuracy after this step


@dataclass
class Report:
    layers: list[LayerReport] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)        # what ran, in order
    # the model
    accuracy_before: float | None = None       # in points (percent), on the evaluation data given
    accuracy_after: float | None = None
    latency_ms_before: float | None = None     # measured batch-1 forward, this process
    latency_ms_after: float | None = None
    size_bytes_before: int | None = None
    size_bytes_after: int | None = None
    macs_before: int | None = None             # per sample
    macs_after: int | None = None
    sparsity: float | None = None              # zero weights / weights of the pruned layers
    model_sqnr_db: float | None = None         # model output vs the float model, first calibration batch
    threads: int | None = None
    max_accuracy_drop: float | None = None
    backed_off: list[BackOff] = field(default_factory=list)
    # the int8 lowering
    observer: str | None = None
    percentile: float | None = None
    calibration_batches: int = 0
    calibration_samples: int = 0
    traced: bool | None = None
    trace_error: str | None = None
    u8_between_layers: bool = False
    notes: list[str] = field(default_factory=list)

    # --- access ---
    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, key: str | int) -> LayerReport:
        if isinstance(key, int):
            return self.layers[key]
        for layer in self.layers:
            if layer.name == key:
                return layer
        raise KeyError(f"no layer named {key!r} in the report")

    def get(self, name: str) -> LayerReport | None:
        return next((layer for layer in self.layers if layer.name == name), None)

    @property
    def converted(self) -> list[LayerReport]:
        return [layer for layer in self.layers if layer.converted]

    @property
    def not_converted(self) -> list[LayerReport]:
        return [layer for layer in self.layers if not layer.converted]

    def merge(self, later: "Report") -> "Report":
        """This report with a later pass's folded in (layers by name; model figures the later pass
        measured replace earlier ones). Returns self."""
        for layer in later.layers:
            mine = self.get(layer.name)
            if mine is None:
                self.layers.append(layer)
            else:
                mine.merge(layer)
        self.passes += later.passes
        self.notes += [n for n in later.notes if n not in self.notes]
        self.backed_off += later.backed_off
        defaults = Report()
        for f in fields(self):
            if f.name in ("layers", "passes", "notes", "backed_off"):
                continue
            value = getattr(later, f.name)
            if value != getattr(defaults, f.name) and not (f.name.endswith("_before") and getattr(self, f.name)
                                                           is not None):
                setattr(self, f.name, value)
        return self

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("layers", "backed_off")}
        d["layers"] = [layer.to_dict() for layer in self.layers]
        d["backed_off"] = [dict(b.__dict__) for b in self.backed_off]
        return d

    # --- text ---
    def summary(self) -> list[str]:
        lines = []
        if self.passes:
            lines.append("edgeopt: " + " -> ".join(self.passes))
        if self.observer is not None:
            obs = f"percentile {self.percentile}" if self.observer == "percentile" else self.observer
            mode = "torch.fx graph" if self.traced else "leaf modules only (not traceable: no BN folding or fusion)"
            int8 = [r for r in self.layers if "int8" in r.kernel]
            gptq = sum(r.weight_rounding == "gptq" for r in self.layers)
            lines.append(f"  lowering: {len(int8)}/{len(self.layers)} layers int8 ({gptq} with GPTQ weight "
                         f"rounding), observer {obs}, {self.calibration_samples} calibration samples in "
                         f"{self.calibration_batches} batches, {mode}")
        if self.trace_error:
            lines.append(f"  trace error: {self.trace_error}")

        def pair(name, before, after, fmt, unit=""):
            if before is None and after is None:
                return
            b = "-" if before is None else fmt.format(before)
            a = "-" if after is None else fmt.format(after)
            ratio = ""
            if before and after and name in ("latency", "size", "MACs"):
                ratio = f" ({before / after:.2f}x)"
            elif before is not None and after is not None and name == "accuracy":
                ratio = f" ({after - before:+.2f} points)"
            lines.append(f"  {name}: {b} -> {a}{unit}{ratio}")

        pair("accuracy", self.accuracy_before, self.accuracy_after, "{:.2f}", "%")
        threads = f" ms (batch 1, {self.threads} threads)" if self.threads else " ms"
        pair("latency", self.latency_ms_before, self.latency_ms_after, "{:.3f}", threads)
        pair("size", _mb(self.size_bytes_before), _mb(self.size_bytes_after), "{:.3f}", " MB")
        pair("MACs", self.macs_before and self.macs_before / 1e6, self.macs_after and self.macs_after / 1e6,
             "{:.2f}", " M per sample")
        if self.model_sqnr_db is not None:
            lines.append(f"  model output SQNR vs float: {self.model_sqnr_db:.1f} dB")
        if self.max_accuracy_drop is not None:
            lines.append(f"  accuracy budget: {self.max_accuracy_drop:g} points; backed off {len(self.backed_off)} "
                         "layer(s)")
            for b in self.backed_off:
                lines.append(f"    {b.layer}: {b.from_kernel} -> {b.to_kernel} (+{b.accuracy_gain:.2f} points "
                             f"measured alone, {b.ms_lost:+.3f} ms; model {b.accuracy_after:.2f}%)")
        return lines

    def __str__(self) -> str:
        lines = self.summary()
        rows = [("layer", "kind", "kernel", "applied", "MACs", "KB", "SQNR dB", "us", "notes")]
        for r in self.layers:
            notes = []
            if r.input_range:
                notes.append(f"in {_fmt_range(r.input_range)}")
            if r.u8_output:
                notes.append("u8 out")
            elif r.channels_last_output:
                notes.append("NHWC out")
            if r.kernel_us and len(r.kernel_us) > 1:
                notes.append("measured " + ", ".join(f"{k} {v:.0f}" for k, v in r.kernel_us.items()))
            if r.reason:
                notes.append(r.reason)
            macs = "-" if r.macs is None else _fmt_count(r.macs)
            if r.macs_before is not None and r.macs is not None and r.macs_before != r.macs:
                macs = f"{_fmt_count(r.macs_before)}->{macs}"
            kb = "-" if r.weight_bytes is None else f"{r.weight_bytes / 1024:.1f}"
            rows.append((r.name, r.kind, r.kernel or ("-" if not r.converted else "changed"),
                         ", ".join(r.applied) or "-", macs, kb,
                         f"{r.sqnr_db:.1f}" if r.sqnr_db is not None else "-",
                         f"{r.time_us:.0f}" if r.time_us is not None else "-", "; ".join(notes)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for i, row in enumerate(rows):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths) + "  -----")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def format(self) -> str:
        return str(self)


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 1e6


def _fmt_range(r) -> str:
    return f"[{r[0]:.4g}, {r[1]:.4g}]"


def _fmt_count(n: int) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


def describe_activation(act: Any) -> str:
    if act in (None, "none"):
        return ""
    return act if isinstance(act, str) else f"clamp{_fmt_range(act)}"
