"""The optimisation loop shared by supervised training and distillation."""
from __future__ import annotations

import copy
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgeopt.training.callbacks import Callback, FitState, OnEpochEnd
from edgeopt.files import atomic_save
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

    def __post_init__(self) -> None:
        # zero epochs would save the untrained model as if it were trained
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FitConfig.{name} must be a positive int, got {value!r}")
        if not (self.lr > 0 and self.lr < float("inf")):
            raise ValueError(f"FitConfig.lr must be positive and finite, got {self.lr!r}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FitHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = float("nan")
    seconds: float = 0.0
    finished: bool = True        # False after a segment that stopped at max_epochs


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
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    max_epochs: int | None = None,
) -> FitHistory:
    """Train `model` in place with a one-cycle schedule; return per-epoch history.

    `loss_fn(model, x, y)` defaults to cross-entropy on model(x). `callbacks` (edgeopt.training.callbacks)
    are called at the start, per step (a pruning schedule), per batch loss (distillation replaces the loss;
    not with a custom loss_fn), per epoch and at the end. Inputs are moved to channels-last memory format,
    which trains these small CNNs ~1.5x faster on CPU (oneDNN prefers NHWC).

    Resumable: with `checkpoint` (a file path) the whole training state -- model, optimizer, schedule,
    random generators, callbacks' state, history, best epoch -- is saved after every epoch and, if the file
    exists, training continues from it. `max_epochs` ends this call after that many epochs (a segment; the
    returned history then has `finished=False`): call again with the same arguments to go on.
    """
    generator = seed_everything(config.seed)
    loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True, drop_last=True, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"training set of {len(train_data)} samples is smaller than one batch ({config.batch_size})")
    callbacks = list(callbacks)
    if on_epoch_end is not None:
        callbacks.append(OnEpochEnd(on_epoch_end))
    replaces_loss = [cb for cb in callbacks if type(cb).loss is not Callback.loss]
    if loss_fn is not None and replaces_loss:
        raise ValueError(f"fit: give either loss_fn or callbacks that set the loss ({type(replaces_loss[0]).__name__}), "
                         "not both")
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
    state = FitState(model, optimizer, config, config.epochs * len(loader), len(loader))
    first_epoch = 1
    if checkpoint is not None and Path(checkpoint).exists():
        saved = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        for cb, cb_state in zip(callbacks, saved["callbacks"]):
            cb.load_state_dict(cb_state)
        history, best_state = saved["history"], saved["best_state"]
        state.step, state.epoch = saved["step"], saved["epoch"]
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        random.setstate(saved["python_rng"])
        np.random.set_state(saved["numpy_rng"])
        first_epoch = state.epoch + 1
        if progress:
            log(f"resuming from {checkpoint} after epoch {state.epoch}")
    else:
        for cb in callbacks:
            cb.on_fit_start(state)
    start = time.time() - history.seconds
    interactive = progress and sys.stderr.isatty()
    last_epoch = config.epochs if max_epochs is None else min(config.epochs, first_epoch - 1 + max_epochs)
    for epoch in range(first_epoch, last_epoch + 1):
        state.epoch = epoch
        model.train()
        t0, total_loss, correct, seen = time.time(), 0.0, 0, 0
        for step, (x, y) in enumerate(loader, 1):
            if _is_image_like(x):
                x = x.contiguous(memory_format=torch.channels_last)
            if loss_fn is not None:
                loss = loss_fn(model, x, y)
            else:
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                for cb in replaces_loss:
                    loss = cb.loss(state, x, y, logits, loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            state.step += 1
            for cb in callbacks:
                cb.on_step_end(state)
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
            selectable = all(cb.ready(state) for cb in callbacks)
            if config.select_best and selectable and not record["val_accuracy"] <= history.best_val_accuracy:
                history.best_epoch, history.best_val_accuracy = epoch, record["val_accuracy"]
                best_state = copy.deepcopy(model.state_dict())
        history.epochs.append(record)
        if progress:
            val = f" val acc {100 * record['val_accuracy']:.2f}%" if "val_accuracy" in record else ""
            log(f"epoch {epoch}/{config.epochs}: loss {record['train_loss']:.4f}{val} ({record['seconds']:.1f}s)")
        for cb in callbacks:
            cb.on_epoch_end(state, record)
        history.seconds = time.time() - start
        if checkpoint is not None:
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "callbacks": [cb.state_dict() for cb in callbacks],
                        "history": history, "best_state": best_state, "step": state.step, "epoch": epoch,
                        "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                        "python_rng": random.getstate(), "numpy_rng": np.random.get_state()}, checkpoint)
    history.finished = last_epoch >= config.epochs
    if not history.finished:
        model.to(memory_format=torch.contiguous_format)
        return history
    for cb in callbacks:
        cb.on_fit_end(state)
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
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, torch.utils.data.TensorDataset):
        targets = dataset.tensors[1]
    if targets is None:
        targets = [int(y) for _, y in dataset]
    return int(max(targets)) + 1
