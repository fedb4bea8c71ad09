"""The two models the demo compares, and the one place that says how the optimized one is made.

- baseline: the trained float `vgg_audio` (`ravdess_vgg_audio`, 342 M MACs), run in eager PyTorch;
- optimized: `OPTIMIZED_RECIPE` below. To switch the demo to another optimized model (the output of
  ``edgeopt.optimize`` when it lands), change `build_optimized` and `optimized_skeleton`; nothing else
  in the demo knows how the model was made.

The optimized model ships with the package as a small state_dict (`SHIPPED`, about 280 kB), so the demo
starts without calibrating. It is loaded into a skeleton with the same structure (the recipe's
modules, quantized with one dummy batch). If the shipped file is missing, was made by another recipe or
no longer fits the code (a changed packed-weight format), the demo builds the model from the recipe once
(about 70 s on two cores: the training split's features for calibration, then edgeopt.quantize) and caches it under
``<cache>/demo/`` (written to a temporary name and renamed, so an interrupted build leaves nothing behind).

Rebuild the shipped file after a recipe change with ``python -m edgeopt.demo.models``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgeopt.files import atomic_save

BASELINE_CHECKPOINT = "ravdess_vgg_audio"
# The recipe, as data: its hash names the shipped and cached files, so a change invalidates both.
OPTIMIZED_RECIPE = {
    # the float model to lower: a reference checkpoint name (edgeopt.models.load_pretrained)
    # ravdess_vgg_audio pruned to 80% in the 16x4 blocks the sparse int8 kernels skip, distilled from itself
    # (ravdess_vgg_audio_small_kd, 0.197x the MACs, was 4 points behind the baseline on the stream)
    "student": "ravdess_vgg_audio_s80_kd",
    "title": "vgg_audio, 80% block-sparse, distilled, int8",  # what the page calls it
    "quantize": {"observer": "percentile", "percentile": 99.99, "weight_rounding": "gptq"},
    "calibration": {"split": "train", "samples": 512, "batch": 32},  # evenly spaced training windows
}
ARTIFACT_FORMAT = 2  # 2: with the lowering's kernel choice
SHIPPED = Path(__file__).resolve().parent / "assets" / "ravdess_optimized.pt"
INPUT_SHAPE = (1, 1, 64, 128)


def recipe_id(recipe: dict = OPTIMIZED_RECIPE) -> str:
    """Names what makes the model (everything but the title)."""
    making = {k: v for k, v in recipe.items() if k != "title"}
    return hashlib.sha1(json.dumps(making, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ModelInfo:
    role: str
    title: str  # what the page shows as the panel's name
    method: str  # how it runs
    macs: int
    params: int
    weight_bytes: int


# ------------------------------------------------------------------------------- the optimized recipe

def calibration_batches(recipe: dict = OPTIMIZED_RECIPE, root=None) -> list[torch.Tensor]:
    from edgeopt.training.tasks import get_task

    cal = recipe["calibration"]
    data = get_task("ravdess").dataset(cal["split"], root=root)
    n = min(cal["samples"], len(data))
    step = len(data) / n
    samples = [data[int(i * step)][0] for i in range(n)]
    return [torch.stack(samples[i:i + cal["batch"]]) for i in range(0, n, cal["batch"])]


def build_optimized(recipe: dict = OPTIMIZED_RECIPE, progress: bool = True, root=None) -> tuple[nn.Module, dict]:
    """Make the optimized model from its recipe (calibration on the training actors, never the test ones).
    Returns the model and the kernel the lowering chose for each layer (by measured time, on this machine),
    which a saved copy needs to be rebuilt (`optimized_skeleton`)."""
    import edgeopt
    from edgeopt.models import load_pretrained

    model, report = edgeopt.quantize(load_pretrained(recipe["student"]), calibration_batches(recipe, root),
                                     progress=progress, **recipe["quantize"])
    return model.eval(), {layer.name: layer.kernel for layer in report.layers if layer.kernel}


def optimized_skeleton(kernels: dict, recipe: dict = OPTIMIZED_RECIPE) -> nn.Module:
    """A model with the recipe's structure and the saved kernel choice, to load a saved state_dict into (the
    lowering's documented way: lower a fresh model with any batch of the right shape and the same kernels)."""
    import edgeopt
    from edgeopt.models import load_pretrained

    # the weights are overwritten anyway; the kernels are given, so nothing is timed
    options = dict(recipe["quantize"], weight_rounding="nearest", measure=False)
    model, _ = edgeopt.quantize(load_pretrained(recipe["student"]), [torch.zeros(INPUT_SHAPE)], kernels=kernels,
                                progress=False, **options)
    return model.eval()


# ------------------------------------------------------------------------------- files and loading

def cached_path(recipe: dict = OPTIMIZED_RECIPE) -> Path:
    from edgeopt.models.checkpoint import cache_dir

    return cache_dir() / "demo" / f"ravdess_optimized-{recipe_id(recipe)}.pt"


def save_artifact(model: nn.Module, kernels: dict, path: Path, recipe: dict = OPTIMIZED_RECIPE, **metadata) -> Path:
    payload = {"format": ARTIFACT_FORMAT, "recipe": recipe, "recipe_id": recipe_id(recipe), "kernels": kernels,
               "state_dict": model.state_dict(), "metadata": metadata}
    return atomic_save(payload, path)


class ArtifactMismatch(ValueError):
    """A saved optimized model that was made by another recipe or no longer loads into this code."""


def load_artifact(path: Path, recipe: dict = OPTIMIZED_RECIPE) -> tuple[nn.Module, dict]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactMismatch(f"cannot read {path}: {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
        raise ArtifactMismatch(f"{path} is not a demo model of format {ARTIFACT_FORMAT}")
    if payload.get("recipe_id") != recipe_id(recipe):
        raise ArtifactMismatch(f"{path} was made by recipe {payload.get('recipe_id')}, not {recipe_id(recipe)}")
    try:
        model = optimized_skeleton(dict(payload.get("kernels") or {}), recipe)
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # unknown kernels, missing keys, shapes, packed-format version checks
        raise ArtifactMismatch(f"{path} does not fit this edgeopt: {str(exc).splitlines()[0][:300]}") from exc
    return model.eval(), payload.get("metadata", {})


def prepare_optimized(log: Callable[[str], None] = print, recipe: dict = OPTIMIZED_RECIPE) -> Path:
    """The path of a saved optimized model that loads: the shipped one, else the cache, else built now."""
    for path in (SHIPPED, cached_path(recipe)):
        if path.is_file():
            try:
                load_artifact(path, recipe)
                return path
            except ArtifactMismatch as exc:
                log(f"  not using {path}: {exc}")
    log(f"  building the optimized model from its recipe (once, about a minute; cached in {cached_path(recipe).parent})")
    t0 = time.perf_counter()
    model, kernels = build_optimized(recipe, progress=True)
    path = save_artifact(model, kernels, cached_path(recipe), recipe, built_seconds=time.perf_counter() - t0)
    log(f"  built in {time.perf_counter() - t0:.0f} s -> {path}")
    return path


def load(role: str, optimized_path: Path | None = None) -> tuple[nn.Module, ModelInfo]:
    """The model of `role` ("baseline" or "optimized") in eval mode, and what the page says about it."""
    from edgeopt.models import count_macs, count_params, load_pretrained

    if role == "baseline":
        model = load_pretrained(BASELINE_CHECKPOINT)
        info = ModelInfo(role, "vgg_audio, float32", "eager PyTorch", count_macs(model, INPUT_SHAPE[1:]),
                         count_params(model), _weight_bytes(model))
        return model, info
    if role == "optimized":
        from edgeopt import nn as enn
        from edgeopt.perf.cost import macs_per_sample as performed_macs  # a sparse layer's stored blocks only

        model, _ = load_artifact(optimized_path or prepare_optimized(), OPTIMIZED_RECIPE)
        student = load_pretrained(OPTIMIZED_RECIPE["student"])
        kinds = {"block-sparse int8": (enn.SparseConv2d, enn.SparseLinear), "dense int8": (enn.QuantConv2d, enn.QuantLinear),
                 "torch fp32": (nn.Conv2d, nn.Linear)}  # the lowering's kernel choice, measured when it was built
        layers = {kind: sum(isinstance(m, types) for m in model.modules()) for kind, types in kinds.items()}
        with torch.inference_mode():
            macs = performed_macs(model, torch.zeros(INPUT_SHAPE))  # per sample
        method = "edgeopt.quantize: " + ", ".join(f"{n} {kind}" for kind, n in layers.items() if n) + " layers"
        info = ModelInfo(role, OPTIMIZED_RECIPE["title"], method, macs, count_params(student), _weight_bytes(model))
        return model, info
    raise ValueError(f"unknown demo model role {role!r}; expected 'baseline' or 'optimized'")


def _weight_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def main() -> int:
    """Rebuild the shipped optimized model from the recipe (after changing the recipe)."""
    from edgeopt.training.evaluate import evaluate
    from edgeopt.training.tasks import get_task

    t0 = time.perf_counter()
    model, kernels = build_optimized(progress=True)
    seconds = time.perf_counter() - t0
    accuracy = evaluate(model, get_task("ravdess").dataset("test")).accuracy
    save_artifact(model, kernels, SHIPPED, built_seconds=round(seconds, 1), test_accuracy_centred_windows=accuracy,
                  torch=str(torch.__version__))
    print(f"wrote {SHIPPED} ({SHIPPED.stat().st_size / 1e3:.0f} kB, recipe {recipe_id()}); test accuracy "
          f"{100 * accuracy:.2f}% (centred windows of the 240 held-out clips), built in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
