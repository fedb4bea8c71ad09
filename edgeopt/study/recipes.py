"""Recipes: how each configuration (row) of the study is made from the fp32 model.

A recipe has an optional *training* part -- structure steps and fine-tuning through `edgeopt.optimize`
(pruning, low rank, distillation) -- whose result is a float model cached on disk: heavy, done once, under
/work/tools/heavy on the shared machine. Its *lowering* (edgeopt.optimize's Quantize, a layer swap,
torch.compile, a peer runtime) is cheap by comparison and is cached too where the result pickles, so a
timing run only loads. `edgeopt profile --optimized NAME` uses the same registry.

Speed-only models (random init, no data) get the structure steps one shot (no fine-tuning; BatchNorm
statistics re-estimated on the calibration batches, as edgeopt.optimize does): their rows measure speed.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn


@dataclass
class Context:
    """What a recipe may use. `trained(key, make)` caches a float model made by `make()` under `key`."""

    subject: object
    base: nn.Module                          # the fp32 model (never modified)
    calibration: list[torch.Tensor]
    example: torch.Tensor
    threads: int = 2
    quick: bool = False
    folder: Path | None = None               # where trained models and ONNX files are cached
    log: Callable[[str], None] = print
    notes: list[str] = field(default_factory=list)
    train_only: bool = False                 # stop after the training part (the `train` stage)

    # ---- training data and budgets
    def train_data(self):
        from edgeopt.study import subjects

        data = subjects.dataset(self.subject, "train")
        limit = FINE_TUNE_SAMPLES["quick" if self.quick else "full"].get(self.subject.name)
        if limit and limit < len(data):  # evenly spaced subset: every class, deterministic
            data = torch.utils.data.Subset(data, [i * len(data) // limit for i in range(limit)])
        return data

    def epochs(self) -> int:
        return FINE_TUNE_EPOCHS["quick" if self.quick else "full"].get(self.subject.name, 2)

    def fine_tune_steps(self, checkpoint: str, distill: bool = False, teacher: nn.Module | None = None) -> list:
        """[FineTune(...)] (+ [Distill(...)]) for a data subject; [] for a speed-only one (one shot)."""
        import edgeopt

        if self.subject.task is None:
            return []
        steps = [edgeopt.FineTune(self.train_data(), epochs=self.epochs(), lr=FINE_TUNE_LR.get(self.subject.name, 1e-3),
                                  batch_size=32, seed=0, select_best=False, progress=False,
                                  checkpoint=str(self._path(f"{checkpoint}.fit")))]
        if distill:
            steps.append(edgeopt.Distill(teacher=teacher))
        return steps

    def _path(self, name: str) -> Path:
        folder = self.folder or Path(".")
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def trained(self, key: str, make: Callable[[], nn.Module]) -> nn.Module:
        """The float model of a recipe's training part: loaded if cached, else made, saved, returned."""
        from edgeopt.perf.cache import cached_module

        path = self._path(f"trained-{key}-{'quick' if self.quick else 'full'}.pt")
        if not path.is_file():
            self.log(f"    training part {key} ({'quick' if self.quick else 'full'} budget) -> {path.name}")
        return cached_module(path, lambda: make().eval(), log=self.log).eval()


class NotApplicable(Exception):
    """The row cannot be made for this model (the message says why); shown as such in the report."""


@dataclass(frozen=True)
class Recipe:
    name: str
    label: str
    build: Callable[[Context], object]   # -> the runnable twin (an nn.Module or a callable peer)
    kind: str = "edgeopt"                # "base", "torch", "edgeopt", "peer"
    family: str = ""                     # what it is about, for the report's per-optimization conclusions
    trains: bool = False                 # has a (cached) training part
    quick: bool = False                  # in the --quick study
    data_only: bool = False              # needs real data (fine-tuning): not for speed-only models
    pickles: bool = True                 # the built runnable can be cached with torch.save


# fine-tuning budgets: epochs and training samples per subject ("quick" keeps the whole --quick study near
# 15 minutes on 2 cores; "full" near 90 minutes for all rows)
FINE_TUNE_EPOCHS = {"quick": {"ravdess": 1, "fsdd": 2, "cifar10": 1, "mnist_vit": 1},
                    "full": {"ravdess": 4, "fsdd": 6, "cifar10": 2, "mnist_vit": 2}}
FINE_TUNE_SAMPLES = {"quick": {"cifar10": 4000, "mnist_vit": 5000, "ravdess": 600},
                     "full": {"cifar10": 15000, "mnist_vit": 20000}}
FINE_TUNE_LR = {"ravdess": 5e-4, "fsdd": 1e-3, "cifar10": 1e-3, "mnist_vit": 5e-4}
# reference students distilled by `edgeopt reproduce` (edgeopt/checkpoints)
STUDENTS = {"ravdess": "ravdess_vgg_audio_small_kd", "fsdd": "fsdd_dscnn_small_kd"}


# ------------------------------------------------------------------------------------------ pieces

def _optimize(model: nn.Module, steps: list, ctx: Context) -> nn.Module:
    import edgeopt

    out, report = edgeopt.optimize(model, steps, data=ctx.calibration, measure=False, progress=False)
    for note in getattr(report, "notes", []):
        ctx.notes.append(note)
    return out.eval()


def _lower(model: nn.Module, ctx: Context, dtype: str = "int8") -> nn.Module:
    """edgeopt.optimize's lowering: each layer on the kernel measured fastest here (dense, block-sparse,
    low-rank; int8 or, with dtype="fp32", float kernels only)."""
    import edgeopt

    return _optimize(model, [edgeopt.Quantize(dtype=dtype)], ctx)


def _structured(ctx: Context, key: str, structure: list, distill: bool = False, start: nn.Module | None = None
                ) -> nn.Module:
    """The training part: structure steps + fine-tuning (or one shot without data), cached under `key`."""
    begin = ctx.base if start is None else start

    def make():
        steps = structure + ctx.fine_tune_steps(key, distill=distill, teacher=ctx.base if distill else None)
        if distill and ctx.subject.task is None:
            raise NotApplicable("distillation needs training data (speed-only model)")
        return _optimize(copy.deepcopy(begin), steps, ctx)

    return ctx.trained(key, make)


def _prune(sparsity: float):
    def trained(ctx: Context) -> nn.Module:
        import edgeopt

        return _structured(ctx, f"prune{round(100 * sparsity)}", [edgeopt.Prune(sparsity, block=(16, 4))])

    return trained


def _low_rank(fraction: float):
    def trained(ctx: Context) -> nn.Module:
        import edgeopt

        conv = None if ctx.subject.name == "mnist_vit" else "tucker2"
        return _structured(ctx, f"lowrank{round(100 * fraction)}",
                           [edgeopt.LowRank(rank=fraction, conv=conv, measure=False)])

    return trained


def _student(ctx: Context) -> nn.Module:
    """The distilled student: the reference one where `edgeopt reproduce` made it, else the model with half
    its channels removed (edgeopt.optimize's PruneChannels) and distilled from the full model."""
    if ctx.subject.name in STUDENTS:
        from edgeopt.models import load_pretrained

        return load_pretrained(STUDENTS[ctx.subject.name]).eval()
    if ctx.subject.task is None:
        raise NotApplicable("a distilled student needs training data (speed-only model)")
    import edgeopt

    return _structured(ctx, "student", [edgeopt.PruneChannels(0.5)], distill=True)


def _then(trained: Callable[[Context], nn.Module], lower: str | None):
    def build(ctx: Context):
        model = trained(ctx)
        if ctx.train_only or lower is None:
            return model
        return _lower(model, ctx, lower)

    return build


def _student_prune(ctx: Context) -> nn.Module:
    import edgeopt

    return _structured(ctx, "student_prune80", [edgeopt.Prune(0.8, block=(16, 4))], distill=True, start=_student(ctx))


def _everything(ctx: Context) -> nn.Module:
    import edgeopt

    conv = None if ctx.subject.name == "mnist_vit" else "tucker2"
    return _structured(ctx, "student_lowrank50_prune80",
                       [edgeopt.LowRank(rank=0.5, conv=conv, measure=False), edgeopt.Prune(0.8, block=(16, 4))],
                       distill=ctx.subject.task is not None, start=_student(ctx) if ctx.subject.task else None)


def _eager(ctx: Context) -> nn.Module:
    return ctx.base


def _compiled(frozen: bool):
    def build(ctx: Context):
        from edgeopt.perf.peers import torch_compiled

        return torch_compiled(copy.deepcopy(ctx.base), ctx.example, frozen=frozen)

    return build


def _fp16_weights(ctx: Context) -> nn.Module:
    """Every nn.Linear as an edgeopt HalfLinear (fp16 weights, F16C, fp32 accumulation). Convolutions have no
    fp16 kernel and stay fp32: on a CNN this row changes only the classifier head."""
    from edgeopt.nn import HalfLinear

    model = copy.deepcopy(ctx.base)
    swapped = 0
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, HalfLinear.from_float(module))
            swapped += 1
    ctx.notes.append(f"{swapped} Linear layer(s) as HalfLinear; convolutions stay fp32 (no fp16 conv kernel)")
    return model.eval()


def _torch_int8(ctx: Context):
    from edgeopt.perf.peers import torch_int8

    return torch_int8(ctx.base, ctx.calibration)


def _qdq(ctx: Context) -> Path:
    from edgeopt.perf import peers

    return peers.export_qdq(ctx.base, (1, *ctx.subject.input_shape), ctx.calibration, ctx._path("onnx"),
                            ctx.subject.name)


def _ort_int8(ctx: Context):
    from edgeopt.perf import peers

    return peers.ort_session(_qdq(ctx), ctx.threads)


def _openvino_int8(ctx: Context):
    from edgeopt.perf import peers

    return peers.openvino_model(_qdq(ctx), ctx.threads)


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("fp32", "fp32 eager", _eager, kind="base", family="base", quick=True),
    Recipe("compile", "torch.compile", _compiled(False), kind="torch", family="compile", pickles=False),
    Recipe("compile_frozen", "torch.compile, freezing", _compiled(True), kind="torch", family="compile",
           pickles=False, quick=True),
    Recipe("int8", "int8 PTQ", _then(lambda ctx: ctx.base, "int8"), family="int8", quick=True),
    Recipe("fp16", "fp16 weights (Linear)", _fp16_weights, family="fp16", quick=True),
    Recipe("prune50", "prune 50% (sparse fp32 kernels)", _then(_prune(0.5), "fp32"), family="prune", trains=True),
    Recipe("prune80", "prune 80% (sparse fp32 kernels)", _then(_prune(0.8), "fp32"), family="prune", trains=True,
           quick=True),
    Recipe("prune90", "prune 90% (sparse fp32 kernels)", _then(_prune(0.9), "fp32"), family="prune", trains=True),
    Recipe("lowrank50", "low rank 1/2", _then(_low_rank(0.5), None), family="low rank", trains=True),
    Recipe("lowrank25", "low rank 1/4", _then(_low_rank(0.25), None), family="low rank", trains=True),
    Recipe("student", "distilled student", _then(_student, None), family="distill", trains=True, data_only=True,
           quick=True),
    Recipe("student_int8", "distill + int8", _then(_student, "int8"), family="distill+int8", trains=True,
           data_only=True, quick=True),
    Recipe("prune80_int8", "prune 80% + int8", _then(_prune(0.8), "int8"), family="prune+int8", trains=True,
           quick=True),
    Recipe("lowrank50_int8", "low rank 1/2 + int8", _then(_low_rank(0.5), "int8"), family="low rank+int8",
           trains=True),
    Recipe("student_prune80_int8", "distill + prune 80% + int8", _then(_student_prune, "int8"),
           family="distill+prune+int8", trains=True, data_only=True),
    Recipe("all_int8", "distill + low rank 1/2 + prune 80% + int8", _then(_everything, "int8"), family="all",
           trains=True),
    Recipe("torch_int8", "PyTorch int8 (FX, x86)", _torch_int8, kind="peer", family="peer", pickles=False,
           quick=True),
    Recipe("ort_int8", "ONNX Runtime int8 (QDQ)", _ort_int8, kind="peer", family="peer", pickles=False, quick=True),
    Recipe("ov_int8", "OpenVINO int8 (QDQ)", _openvino_int8, kind="peer", family="peer", pickles=False, quick=True),
]}
PROFILE_RECIPES = ("int8", "fp16", "prune80_int8", "prune80", "lowrank50", "lowrank50_int8", "student_int8")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name]


def build(recipe: Recipe, ctx: Context):
    """The runnable for `recipe`; raises NotApplicable (shown in the report) or PeerUnavailable (skipped)."""
    if recipe.data_only and ctx.subject.task is None:
        raise NotApplicable("needs training data (speed-only model)")
    return recipe.build(ctx)


def fraction_nonzero(model: nn.Module) -> float:
    total = nz = 0
    for p in model.parameters():
        total += p.numel()
        nz += int(torch.count_nonzero(p))
    return nz / total if total else math.nan
