"""The optimisation loop shared by supervised training and distillation."""
from __future__ import annotations

import copy
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgeopt.training.evaluate import evaluate


@dataclass
class FitConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # or "sgd" (Nesterov momentum 0.9)
    label_smoothing: float = 0.0
    seed: int = 0
    select_best: bool = True  # keep the epoch with the best validation accuracy (needs val data)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FitHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = float("nan")
    seconds: float = 0.0


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _is_image_like(x: torch.Tensor) -> bool:
    return x.dim() == 4


def fit(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None,
    config: FitConfig,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_epoch_end: Callable[[nn.Module, dict], None] | None = None,
    progress: bool = True,
    log=print,
) -> FitHistory:
    """Train `model` in place with a one-cycle schedule; return per-epoch history.

    `loss_fn(model, x, y)` defaults to cross-entropy. Inputs are moved to channels-last memory format,
    which trains these small CNNs ~1.5x faster on CPU (oneDNN prefers NHWC).
    """
    generator = seed_everything(config.seed)
    loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True, drop_last=True, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"training set of {len(train_data)} samples is smaller than one batch ({config.batch_size})")
    if loss_fn is None:
        def loss_fn(m, x, y):
            return nn.functional.cross_entropy(m(x), y, label_smoothing=config.label_smoothing)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                    weight_decay=config.weight_decay)
    elif config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {config.optimizer!r}")
    if config.epochs * len(loader) >= 20:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, epochs=config.epochs,
                                                        steps_per_epoch=len(loader), pct_start=0.25)
    else:  # too few steps for warm-up and decay phases (smoke runs): constant rate
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model.to(memory_format=torch.channels_last)
    history = FitHistory()
    best_state = None
    start = time.time()
    interactive = progress and sys.stderr.isatty()
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0, total_loss, correct, seen = time.time(), 0.0, 0, 0
        for step, (x, y) in enumerate(loader, 1):
            if _is_image_like(x):
                x = x.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(y)
            seen += len(y)
            if interactive:
                print(f"\r  epoch {epoch}/{config.epochs} step {step}/{len(loader)} loss {total_loss / seen:.4f}",
                      end="", file=sys.stderr, flush=True)
        if interactive:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        record = {"epoch": epoch, "train_loss": total_loss / seen, "seconds": time.time() - t0,
                  "lr": scheduler.get_last_lr()[0]}
        if val_data is not None:
            record["val_accuracy"] = evaluate(model, val_data, class_names=range(_num_classes(model, val_data))).accuracy
            if config.select_best and not record["val_accuracy"] <= history.best_val_accuracy:
                history.best_epoch, history.best_val_accuracy = epoch, record["val_accuracy"]
                best_state = copy.deepcopy(model.state_dict())
        history.epochs.append(record)
        if progress:
            val = f" val acc {100 * record['val_accuracy']:.2f}%" if "val_accuracy" in record else ""
            log(f"epoch {epoch}/{config.epochs}: loss {record['train_loss']:.4f}{val} ({record['seconds']:.1f}s)")
        if on_epoch_end is not None:
            on_epoch_end(model, record)
    if best_state is not None:
        model.load_state_dict(best_state)
        if progress:
            log(f"kept epoch {history.best_epoch} (best val acc {100 * history.best_val_accuracy:.2f}%)")
    model.to(memory_format=torch.contiguous_format)
    history.seconds = time.time() - start
    return history


def _num_classes(model: nn.Module, dataset: Dataset) -> int:
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    return int(max(dataset.targets)) + 1
