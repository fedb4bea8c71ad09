"""Side-by-side cost and accuracy of trained models: MACs, parameters, batch-1 latency, test accuracy."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.models import model_cost
from edgeopt.training.evaluate import evaluate
from edgeopt.training.tasks import get_task


@dataclass
class ModelRow:
    name: str
    macs: int
    params: int
    latency_ms: float
    accuracy: float


def median_latency_ms(model: nn.Module, input_shape, runs: int = 50, warmup: int = 10) -> float:
    """Median wall time of one batch-1 forward pass. Simple timing, good enough to compare models in one
    run on a quiet machine; benchmarks proper live in bench/."""
    model.eval()
    x = torch.randn(1, *input_shape)
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * times[len(times) // 2]


def compare_models(task: str, models: dict[str, nn.Module], split: str = "test", data_root=None,
                   runs: int = 50) -> list[ModelRow]:
    spec = get_task(task)
    data = spec.dataset(split, root=data_root)
    rows = []
    for name, model in models.items():
        cost = model_cost(model, spec.input_shape)
        rows.append(ModelRow(name, cost.macs, cost.params, median_latency_ms(model, spec.input_shape, runs),
                             evaluate(model, data, spec.classes).accuracy))
    return rows


def format_rows(rows: list[ModelRow]) -> str:
    lines = ["| model | MACs (M) | params (k) | latency, batch 1 (ms) | test accuracy (%) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.name} | {r.macs / 1e6:.1f} | {r.params / 1e3:.1f} | {r.latency_ms:.2f} | {100 * r.accuracy:.2f} |")
    return "\n".join(lines)
