"""Training, evaluation and distillation on the shared datasets.

Python: `train(task, model)`, `evaluate(model, dataset)`, `distill(teacher, student, data, temperature,
alpha)`, `distill_task(...)`, `reproduce(reference_name)`. CLI: ``edgeopt train | eval | distill |
reproduce | compare`` (see `edgeopt.training.cli`).
"""
from edgeopt.training.distill import distill, distill_task, kd_loss
from edgeopt.training.evaluate import EvalReport, evaluate
from edgeopt.training.loop import FitConfig, fit
from edgeopt.training.reference import RECIPES, reproduce
from edgeopt.training.tasks import TASKS, get_task
from edgeopt.training.train import TrainResult, train

__all__ = ["EvalReport", "FitConfig", "RECIPES", "TASKS", "TrainResult", "distill", "distill_task", "evaluate",
           "fit", "get_task", "kd_loss", "reproduce", "train"]
