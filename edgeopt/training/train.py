"""Supervised training of a registry model on a task, with a checkpoint that records how it was made."""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeopt.models import cache_dir, get_model, model_cost, save_checkpoint
from edgeopt.training.evaluate import EvalReport, evaluate
from edgeopt.training.loop import FitConfig, FitHistory, fit
from edgeopt.training.tasks import get_task

# per-task defaults, chosen so each reference run takes minutes on two cores
TASK_DEFAULTS: dict[str, dict] = {
    "ravdess": dict(epochs=15, batch_size=32, lr=2e-3, weight_decay=5e-2, optimizer="adamw", label_smoothing=0.1),
    "fsdd": dict(epochs=40, batch_size=64, lr=5e-3, weight_decay=1e-2, optimizer="adamw", label_smoothing=0.1),
    "fsdd_speaker": dict(epochs=40, batch_size=64, lr=5e-3, weight_decay=1e-2, optimizer="adamw", label_smoothing=0.1),
    "cifar10": dict(epochs=15, batch_size=256, lr=0.15, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.1),
    "mnist": dict(epochs=3, batch_size=256, lr=0.05, weight_decay=5e-4, optimizer="sgd"),
}


@dataclass
class TrainResult:
    model: nn.Module
    history: FitHistory
    test: EvalReport
    checkpoint: Path | None


def default_checkpoint_path(task: str, model_name: str) -> Path:
    return cache_dir() / "checkpoints" / f"{task}_{model_name}.pt"


def fit_config(task: str, **overrides) -> FitConfig:
    values = dict(TASK_DEFAULTS.get(task, {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return FitConfig(**values)


def checkpoint_metadata(task_name: str, model: nn.Module, config: FitConfig, history: FitHistory,
                        test: EvalReport, command: str | None, data_root=None, **extra) -> dict:
    task = get_task(task_name)
    cost = model_cost(model, task.input_shape)
    return {
        "task": task_name,
        "class_names": list(task.classes),
        "input_shape": list(task.input_shape),
        "features": task.features.to_dict() if task.features else None,
        "data_version": task.data_version(data_root),
        "fit_config": config.to_dict(),
        "history": history.epochs,
        "best_epoch": history.best_epoch,
        "val_accuracy": history.best_val_accuracy,
        "test_accuracy": test.accuracy,
        "test_report": test.to_dict(),
        "macs": cost.macs,
        "params": cost.params,
        "train_seconds": history.seconds,
        "command": command,
        "torch_version": str(torch.__version__),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        **extra,
    }


def train(
    task: str,
    model: str | None = None,
    *,
    model_kwargs: dict | None = None,
    out: str | Path | None = None,
    data_root=None,
    command: str | None = None,
    progress: bool = True,
    log=print,
    train_limit: int | None = None,
    **fit_overrides,
) -> TrainResult:
    """Train `model` (registry name, default: the task's) on `task`; evaluate on the test split; save.

    `fit_overrides` are `FitConfig` fields (epochs, batch_size, lr, seed, ...). The checkpoint goes to
    `out` (default: the cache directory; ``out=False`` saves nothing). `train_limit` trains on the first
    N samples only, for smoke tests.
    """
    spec = get_task(task)
    model_name = model or spec.default_model
    model_kwargs = dict(model_kwargs or {})
    model_kwargs.setdefault("num_classes", len(spec.classes))
    if spec.input_shape[0] != 3:
        model_kwargs.setdefault("in_channels", spec.input_shape[0])
    config = fit_config(task, **fit_overrides)
    torch.manual_seed(config.seed)  # the initial weights depend on the seed too
    net = get_model(model_name, **model_kwargs)
    train_data = spec.dataset("train", augment=True, root=data_root)
    if train_limit is not None:
        train_data = torch.utils.data.Subset(train_data, range(min(train_limit, len(train_data))))
        train_data.classes = spec.classes
    val_data = spec.dataset("val", root=data_root)
    test_data = spec.dataset("test", root=data_root)
    if progress:
        log(f"training {model_name} on {task}: {len(train_data)} train / {len(val_data)} val / "
            f"{len(test_data)} test, {model_cost(net, spec.input_shape)}, {config}")
    history = fit(net, train_data, val_data, config, progress=progress, log=log)
    net.eval()
    test = evaluate(net, test_data, spec.classes)
    if progress:
        log(f"test accuracy {100 * test.accuracy:.2f}%")
    path = None
    if out is not False:
        path = Path(out) if out is not None else default_checkpoint_path(task, model_name)
        meta = checkpoint_metadata(task, net, config, history, test, command, data_root)
        save_checkpoint(path, net, model_name, model_kwargs, **meta)
        if progress:
            log(f"saved {path}")
    return TrainResult(net, history, test, path)
