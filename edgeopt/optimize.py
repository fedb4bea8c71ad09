"""edgeopt.optimize(model, steps, data=...): pruning, low rank, distillation and int8 composed into one
fast model, with one report.

    model, report = edgeopt.optimize(model, [edgeopt.Prune(0.8, block=(16, 4)), edgeopt.Quantize()],
                                     data=batches)            # one shot: a quick speed check
    model, report = edgeopt.optimize(model, [
        edgeopt.LowRank(rank=0.25), edgeopt.Prune(0.8, block=(16, 4)), edgeopt.Distill(),
        edgeopt.FineTune(train_set, epochs=5, val_data=val_set), edgeopt.Quantize()],
        data=calibration_batches, eval_data=val_set, max_accuracy_drop=1.0)
    print(report)

Steps are declarative configs; whatever order the list gives, they run in the one order that works:

    structure (PruneChannels -> LowRank -> Prune) -> fine-tune (FineTune, with Distill) -> lower (Quantize)

Pruning before factorizing would factorize zeros; lowering first would leave the structure passes nothing
to find; fine-tuning must see the final structure (masks, trainable factors) and come before the int8
ranges are calibrated. A combination the pipeline cannot do raises ValueError saying why: a step given
twice, Distill without FineTune, Quantize or a conv factorization without calibration data,
max_accuracy_drop without a way to evaluate or without Quantize.

With FineTune, Prune follows a cubic schedule over the first `ramp` of the fine-tuning steps and LowRank
makes trainable factors; Distill makes the fine-tuning a distillation from the model as it was given (or
the teacher named). Without FineTune, structure steps are one shot and BatchNorm statistics are
re-estimated on `data` (a pruned network's old statistics no longer fit).

Accuracy-aware mode (`max_accuracy_drop`, points, with `eval_fn` or `eval_data`): after lowering, every
layer's less aggressive alternatives -- float instead of int8, its weights from before pruning / low rank
-- are tried one at a time; they are applied in order of accuracy gained per millisecond of measured
latency lost until the model is within the budget (or nothing is left). The report lists each back-off.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from edgeopt.passes.common import callable_module, model_inputs
from edgeopt.perf.cost import macs_per_sample, weight_bytes
from edgeopt.passes.report import BackOff, Report
from edgeopt.passes.timing import time_model_ms

OWNER = "edgeopt.optimize"


class Step:
    """Base of the step configs. `phase` fixes where a step runs whatever its place in the list."""
    phase = 0

    def describe(self) -> str:
        given = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.repr and getattr(self, f.name) != f.default and not isinstance(getattr(self, f.name),
                                                                                  (nn.Module, torch.utils.data.Dataset))]
        return f"{type(self).__name__}({', '.join(given)})"


@dataclass
class PruneChannels(Step):
    """Remove `amount` of the output channels of every prunable channel group (residual blocks included):
    a physically smaller dense model (edgeopt.prune.prune_channels)."""
    amount: float
    round_to: int = 8
    skip: Sequence[str] = ()
    phase = 1


@dataclass
class LowRank(Step):
    """Truncated-SVD factorization of the Linear layers (and convs with conv="tucker2" | "separable"),
    where measured faster (edgeopt.low_rank). Exactly one of rank, energy, speedup."""
    rank: int | float | None = None
    energy: float | None = None
    speedup: float | None = None
    conv: str | None = None
    weight_dtype: str = "fp32"
    measure: bool = True
    min_gain: float = 1.05
    skip: Sequence[str] = ()
    phase = 2


@dataclass
class Prune(Step):
    """Block magnitude pruning to `sparsity` (edgeopt.prune); blocks of (out, in) weights, (16, 4) being
    what the sparse int8 kernels skip. With FineTune: cubic schedule over the first `ramp` of its steps."""
    sparsity: float
    block: tuple[int, int] = (16, 4)
    scope: str = "global"
    ramp: float = 0.5
    min_weights: int = 4096
    skip: Sequence[str] = ()
    phase = 3


@dataclass
class Distill(Step):
    """Fine-tune by distillation from `teacher` (default: the model as given to optimize): the loss is
    alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * cross-entropy. Needs FineTune."""
    teacher: nn.Module | None = field(default=None, repr=False)
    temperature: float = 4.0
    alpha: float = 0.9
    phase = 4


@dataclass
class FineTune(Step):
    """Fine-tune with edgeopt.training.fit on `data` (a Dataset of (input, label)) after the structure
    steps. `checkpoint` makes it resumable; `max_epochs` runs a segment of at most that many epochs
    (optimize then stops after the fine-tuning and says so: call it again with the same arguments)."""
    data: torch.utils.data.Dataset = field(repr=False)
    epochs: int = 5
    val_data: torch.utils.data.Dataset | None = field(default=None, repr=False)
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    label_smoothing: float = 0.0
    seed: int = 0
    select_best: bool = True
    checkpoint: str | Path | None = None
    max_epochs: int | None = None
    progress: bool = True
    phase = 5


@dataclass
class Quantize(Step):
    """The int8 lowering (edgeopt.quantize) with `data` as calibration: dense, block-sparse and low-rank
    layers, each on the kernel measured fastest here. dtype="fp32" picks among float kernels only."""
    dtype: str = "int8"
    kernels: Sequence[str] | Mapping[str, str] = ("dense", "sparse", "low-rank")
    measure: bool = True
    observer: str = "percentile"
    percentile: float = 99.99
    weight_rounding: str = "gptq"
    u8_between_layers: bool = True
    timing_rows: int = 1
    keep_int8_under_us: float = 0.0   # see edgeopt.quantize: ~50 for a model that goes to edgeopt.runtime
    skip: Sequence[str] = ()
    phase = 6


STEP_TYPES = (PruneChannels, LowRank, Prune, Distill, FineTune, Quantize)


def plan_steps(steps: Iterable[Step]) -> list[Step]:
    """The steps in the order they run; raises for combinations the pipeline cannot do."""
    steps = list(steps)
    for s in steps:
        if not isinstance(s, Step):
            raise TypeError(f"{OWNER}: steps must be edgeopt step configs ({', '.join(t.__name__ for t in STEP_TYPES)}), "
                            f"got {type(s).__name__}")
    seen: dict[type, Step] = {}
    for s in steps:
        if type(s) in seen:
            raise ValueError(f"{OWNER}: {type(s).__name__} is given twice; give each step once (one Prune with the "
                             "final sparsity, one FineTune with all its epochs)")
        seen[type(s)] = s
    if Distill in seen and FineTune not in seen:
        raise ValueError(f"{OWNER}: Distill needs a FineTune step (distillation is a way of fine-tuning: give "
                         "FineTune(train_data, epochs=...) too)")
    low_rank = seen.get(LowRank)
    if low_rank is not None and sum(v is not None for v in (low_rank.rank, low_rank.energy, low_rank.speedup)) != 1:
        raise ValueError(f"{OWNER}: LowRank needs exactly one of rank=, energy= or speedup=")
    prune = seen.get(Prune)
    if prune is not None and not 0.0 <= prune.sparsity < 1.0:
        raise ValueError(f"{OWNER}: Prune sparsity must be in [0, 1), got {prune.sparsity!r}")
    return sorted(steps, key=lambda s: s.phase)


def _eval_with(eval_fn, eval_data) -> Callable[[nn.Module], float] | None:
    if eval_fn is not None and eval_data is not None:
        raise ValueError(f"{OWNER}: give eval_fn or eval_data, not both")
    if eval_data is None:
        return eval_fn
    from edgeopt.training.evaluate import predict

    def accuracy(model: nn.Module) -> float:
        pred, target = predict(model, eval_data)
        return 100.0 * float((pred == target).mean())

    return accuracy


def _recalibrate_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> bool:
    """Re-estimate BatchNorm running statistics on `batches` (cumulative average); True if there were any."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return False
    saved = [(m, m.momentum) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    return True


def _model_figures(model: nn.Module, x1: torch.Tensor | None, measure: bool) -> tuple:
    size = weight_bytes(model)
    if x1 is None:
        return None, size, None
    was = model.training
    model.eval()
    try:
        macs = macs_per_sample(model, x1)
        latency = time_model_ms(model, x1) if measure else None
    finally:
        model.train(was)
    return latency, size, macs


def optimize(model: nn.Module, steps: Iterable[Step], data=None, *, eval_fn: Callable[[nn.Module], float] | None = None,
             eval_data=None, max_accuracy_drop: float | None = None, latency_input: torch.Tensor | None = None,
             measure: bool = True, progress: bool = True, inplace: bool = False) -> tuple[nn.Module, Report]:
    """Apply `steps` (step configs, any order) to `model`; returns (optimized model, Report).

    data: calibration inputs (an iterable of input batches or (input, label) pairs, or one tensor) for the
        lowering, BatchNorm re-estimation after one-shot structure steps, and the shapes structure steps
        need. Its first sample is the batch-1 latency input unless `latency_input` is given.
    eval_fn(model) -> accuracy in points (percent), or eval_data (a Dataset of (input, label)): accuracy
        before and after goes into the report; needed for max_accuracy_drop.
    max_accuracy_drop: the accuracy-aware mode (see the module docstring), in points.
    measure: time the model before and after (batch 1, this process) for the report.
    inplace: let the structure steps change `model` itself (saves a copy; the model is then consumed).
    """
    steps = list(steps)
    plan = plan_steps(steps)
    kinds = {type(s): s for s in plan}
    evaluate = _eval_with(eval_fn, eval_data)
    if max_accuracy_drop is not None:
        if evaluate is None:
            raise ValueError(f"{OWNER}: max_accuracy_drop needs eval_fn or eval_data to measure accuracy")
        if Quantize not in kinds:
            raise ValueError(f"{OWNER}: max_accuracy_drop backs off the lowering's choices; it needs a Quantize step")
        if not max_accuracy_drop >= 0:
            raise ValueError(f"{OWNER}: max_accuracy_drop must be >= 0 points, got {max_accuracy_drop!r}")
    batches = model_inputs(data, OWNER, "data") if data is not None else None
    if batches is None and (Quantize in kinds or PruneChannels in kinds or (LowRank in kinds and kinds[LowRank].conv)):
        needs = [t.__name__ for t in (Quantize, PruneChannels) if t in kinds] or ["LowRank(conv=...)"]
        raise ValueError(f"{OWNER}: {needs[0]} needs data (calibration / example inputs: a few batches of model inputs)")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{OWNER} expects an nn.Module, got {type(model).__name__}")

    original = model
    work = model if inplace else copy.deepcopy(model)
    work.eval()
    x1 = latency_input if latency_input is not None else (batches[0][:1] if batches is not None else None)
    report = Report(max_accuracy_drop=max_accuracy_drop)
    given = [type(s).__name__ for s in steps]
    report.latency_ms_before, report.size_bytes_before, report.macs_before = _model_figures(work, x1, measure)
    report.threads = torch.get_num_threads()
    if evaluate is not None:
        report.accuracy_before = float(evaluate(work))
    teacher = None
    if Distill in kinds:
        teacher = kinds[Distill].teacher if kinds[Distill].teacher is not None else copy.deepcopy(original).eval()
    fine_tune = kinds.get(FineTune)
    # each layer's float module before a structure step replaced or pruned it: back-off candidates
    before_structure = {name: copy.deepcopy(m) for name, m in work.named_modules()
                        if type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
                        } if max_accuracy_drop is not None else {}

    # --- structure ---
    if PruneChannels in kinds:
        from edgeopt.passes.channels import prune_channels

        s = kinds[PruneChannels]
        work, rep = prune_channels(work, s.amount, batches[0], round_to=s.round_to, skip=s.skip)
        report.merge(rep)
        before_structure = {}  # other shapes now: the old layers are no alternative
    if LowRank in kinds:
        from edgeopt.passes.low_rank import low_rank

        s = kinds[LowRank]
        work, rep = low_rank(work, s.rank, s.energy, s.speedup, weight_dtype=s.weight_dtype,
                             data=batches[0][:1] if batches is not None else None, measure=s.measure,
                             min_gain=s.min_gain, skip=s.skip, conv=s.conv, trainable=fine_tune is not None)
        report.merge(rep)
    pruner = None
    if Prune in kinds:
        from edgeopt.passes.prune import Pruner

        s = kinds[Prune]
        pruner = Pruner(work, s.sparsity, s.block, s.scope, min_weights=s.min_weights, skip=s.skip,
                        ramp=s.ramp if fine_tune is not None else None)
        if fine_tune is None:
            pruner.remove()
            report.merge(pruner.report())
    if fine_tune is None and batches is not None and (Prune in kinds or LowRank in kinds or PruneChannels in kinds):
        if _recalibrate_batchnorm(work, batches):
            report.passes.append(f"BatchNorm statistics re-estimated on {sum(len(x) for x in batches)} samples")

    # --- fine-tune ---
    if fine_tune is not None:
        from edgeopt.training.callbacks import Distillation
        from edgeopt.training.loop import FitConfig, fit

        s = fine_tune
        callbacks = ([pruner] if pruner is not None else []) + (
            [Distillation(teacher, kinds[Distill].temperature, kinds[Distill].alpha)] if teacher is not None else [])
        config = FitConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                           optimizer=s.optimizer, label_smoothing=s.label_smoothing, seed=s.seed,
                           select_best=s.select_best and s.val_data is not None)
        history = fit(work, s.data, s.val_data, config, progress=s.progress, callbacks=callbacks,
                      checkpoint=s.checkpoint, max_epochs=s.max_epochs)
        how = "distillation" if teacher is not None else "fine-tuning"
        report.passes.append(f"{how}: {len(history.epochs)} epochs" + (
            f" (kept epoch {history.best_epoch})" if history.best_epoch > 0 else ""))
        if not history.finished:
            report.notes.append(f"fine-tuning stopped after epoch {len(history.epochs)} of {s.epochs} (max_epochs): "
                                "call optimize again with the same arguments to continue; nothing was lowered")
            return work, report
        if pruner is not None:
            pruner.remove()
            report.merge(pruner.report())
        from edgeopt.passes.low_rank import freeze

        freeze(work)
        work.eval()

    # --- lower ---
    lowered = work
    if Quantize in kinds:
        from edgeopt.passes.quantize import Lowering

        s = kinds[Quantize]
        lowering = Lowering(work, batches, dtype=s.dtype, kernels=s.kernels, measure=s.measure or
                            max_accuracy_drop is not None, observer=s.observer, percentile=s.percentile,
                            skip=s.skip, inplace=max_accuracy_drop is None, u8_between_layers=s.u8_between_layers, progress=progress,
                            weight_rounding=s.weight_rounding, timing_rows=s.timing_rows,
                            keep_int8_under_us=s.keep_int8_under_us, alternatives=before_structure if max_accuracy_drop is not None else None)
        if max_accuracy_drop is not None:
            lowered = _back_off(lowering, evaluate, report, max_accuracy_drop, progress)
        else:
            lowered = lowering.assemble()
        report.merge(lowering.report(lowered))
    report.latency_ms_after, report.size_bytes_after, report.macs_after = _model_figures(lowered, x1, measure)
    if evaluate is not None and report.accuracy_after is None:
        report.accuracy_after = float(evaluate(lowered))
    applied = [type(s).__name__ for s in plan]
    if given != applied:
        report.notes.append(f"steps given as {' -> '.join(given)}; applied as {' -> '.join(applied)}")
    report.passes.insert(0, " -> ".join(s.describe() for s in plan))
    return lowered, report


def _back_off(lowering, evaluate, report: Report, budget: float, progress: bool) -> nn.Module:
    """Assemble the lowered model, then back off layers (most accuracy per millisecond first) until the
    accuracy is within `budget` points of report.accuracy_before."""
    from edgeopt.passes.quantize.candidates import is_int8, is_original

    target = report.accuracy_before - budget
    chosen = lowering.kernels()
    model = lowering.assemble(chosen)
    accuracy = float(evaluate(model))
    if accuracy >= target:
        report.accuracy_after = accuracy
        report.notes.append(f"accuracy-aware: {accuracy:.2f}% is within {budget:g} points of {report.accuracy_before:.2f}%; "
                            "nothing backed off")
        return model
    by_name = {layer.name: layer for layer in lowering.layers if layer.kernel is not None}

    def ms(layer, kernel):
        us = layer.report.kernel_us
        if kernel in us and chosen[layer.name] in us:
            return (us[kernel] - us[chosen[layer.name]]) / 1e3
        return math.nan

    def less_aggressive(current: str, option: str) -> bool:
        # float over int8, the original weights over pruned / factorized ones
        return option != current and ((is_int8(current) and not is_int8(option)) or
                                      (not is_original(current) and is_original(option) and
                                       is_int8(option) >= is_int8(current)))

    rounds, tried = 0, 0
    while accuracy < target:
        # each less aggressive option alone, from the current choice: accuracy gained per ms of latency lost
        options = []
        for name, layer in by_name.items():
            for kernel in layer.candidates:
                if less_aggressive(chosen[name], kernel):
                    trial = lowering.assemble({**chosen, name: kernel})
                    options.append((name, kernel, float(evaluate(trial)) - accuracy, ms(layer, kernel)))
        tried += len(options)
        useful = [o for o in options if o[2] > 0]
        useful.sort(key=lambda o: -(o[2] / max(o[3], 1e-3)) if not math.isnan(o[3]) else -o[2])
        changed = set()
        for name, kernel, gain, lost in useful:
            if name in changed:
                continue
            previous = chosen[name]
            chosen[name] = kernel
            new_accuracy = float(evaluate(lowering.assemble(chosen)))
            if new_accuracy <= accuracy:  # alone it helped; on top of the others it does not
                chosen[name] = previous
                continue
            changed.add(name)
            accuracy = new_accuracy
            report.backed_off.append(BackOff(name, previous, kernel, gain, lost, accuracy))
            if accuracy >= target:
                break
        rounds += 1
        if not changed:
            break
    model = lowering.assemble(chosen)
    report.accuracy_after = float(evaluate(model))
    if report.accuracy_after < target:
        report.notes.append(f"accuracy-aware: budget not met ({report.accuracy_after:.2f}% vs the {target:.2f}% needed); "
                            f"{tried} back-offs tried in {rounds} rounds, {len(report.backed_off)} applied")
    return model


__all__ = ["Distill", "FineTune", "LowRank", "Prune", "PruneChannels", "Quantize", "Step", "optimize", "plan_steps"]

# `import edgeopt.optimize` binds the package attribute to this module: the module is the function too.
callable_module(__name__, optimize)
