"""Accuracy, confusion matrix and per-class recall of a classifier on a dataset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@dataclass
class EvalReport:
    accuracy: float
    confusion: np.ndarray  # [true class, predicted class] counts
    class_names: Sequence[str]

    @property
    def num_samples(self) -> int:
        return int(self.confusion.sum())

    @property
    def per_class_recall(self) -> np.ndarray:
        support = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), support, out=np.full(len(support), np.nan), where=support > 0)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "num_samples": self.num_samples, "confusion": self.confusion.tolist(),
                "per_class_recall": dict(zip(self.class_names, self.per_class_recall.round(4).tolist()))}

    def format(self) -> str:
        names = [str(n)[:9] for n in self.class_names]
        width = max(5, *(len(n) for n in names))
        lines = [f"accuracy {100 * self.accuracy:.2f}% on {self.num_samples} samples", "",
                 "confusion matrix (rows = true class, columns = predicted):",
                 " " * (width + 1) + " ".join(f"{n:>{width}}" for n in names)]
        for name, row in zip(names, self.confusion):
            lines.append(f"{name:>{width}} " + " ".join(f"{int(v):>{width}}" for v in row))
        lines += ["", "per-class recall:"]
        lines += [f"  {name:>{width}}  {100 * r:6.2f}%" for name, r in zip(names, self.per_class_recall)]
        return "\n".join(lines)


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted labels, true labels)`` with the model in eval mode (its mode is restored after)."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            preds.append(model(x).argmax(dim=1))
            targets.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    return torch.cat(preds).numpy(), torch.cat(targets).numpy()


def evaluate(model: nn.Module, dataset: Dataset, class_names: Sequence[str] | None = None,
             batch_size: int = 256) -> EvalReport:
    names = list(class_names if class_names is not None else getattr(dataset, "classes"))
    pred, true = predict(model, dataset, batch_size)
    k = len(names)
    if pred.size and (pred.max() >= k or true.max() >= k):
        raise ValueError(f"labels exceed the {k} class names given")
    confusion = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
    return EvalReport(float((pred == true).mean()) if pred.size else float("nan"), confusion, names)
