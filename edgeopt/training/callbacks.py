"""Callbacks for `edgeopt.training.fit`: what pruning schedules, distillation and quantization-aware
fine-tuning need from the training loop, so none of them hides in a hand-written loss function.

    fit(model, train, val, config, callbacks=[pruner, Distillation(teacher)])

The loop calls, in order: `on_fit_start(state)`; per batch `loss(state, x, y, logits, loss)` (each
callback may replace the loss, e.g. with a distillation loss), then after the optimizer step
`on_step_end(state)`; `on_epoch_end(state, record)`; `on_fit_end(state)`. An epoch counts as a candidate
for "the best epoch" only when every callback is `ready(state)` (a pruning schedule that has not reached
its target sparsity is not).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class FitState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: object
    total_steps: int                 # optimizer steps the fit will take
    steps_per_epoch: int
    step: int = 0                    # optimizer steps taken so far
    epoch: int = 0
    extra: dict = field(default_factory=dict)


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, state: FitState) -> None:
        pass

    def loss(self, state: FitState, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
             loss: torch.Tensor) -> torch.Tensor:
        return loss

    def on_step_end(self, state: FitState) -> None:
        pass

    def on_epoch_end(self, state: FitState, record: dict) -> None:
        pass

    def on_fit_end(self, state: FitState) -> None:
        pass

    def ready(self, state: FitState) -> bool:
        return True

    def state_dict(self) -> dict:
        """What a resumed fit needs to continue this callback (fit's checkpoint= saves it per epoch)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Distillation(Callback):
    """Knowledge distillation from a frozen teacher: the loss becomes
    alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE(student, y) (Hinton et al. 2015), the
    teacher seeing exactly the (augmented) batch the student sees."""

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9):
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"edgeopt Distillation: need temperature > 0 and 0 <= alpha <= 1, got {temperature}, "
                             f"{alpha}")
        self.teacher, self.temperature, self.alpha = teacher, float(temperature), float(alpha)

    def on_fit_start(self, state: FitState) -> None:
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def loss(self, state, x, y, logits, loss):
        from edgeopt.training.distill import kd_loss

        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return kd_loss(logits, teacher_logits, y, self.temperature, self.alpha)


class OnEpochEnd(Callback):
    """Adapts a plain `fn(model, record)` (fit's former on_epoch_end argument) to a callback."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, state, record):
        self.fn(state.model, record)
