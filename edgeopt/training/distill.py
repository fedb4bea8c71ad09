"""Knowledge distillation (Hinton et al., 2015): train a small student to match a trained teacher.

The loss is ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)``;
the ``T^2`` keeps the soft-target gradients on the same scale as the hard-label ones when T changes.
The teacher sees exactly the augmented batch the student sees, so its soft labels describe that input.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from edgeopt.training.loop import FitConfig, FitHistory, fit


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}")
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature**2
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1.0 - alpha) * hard


def distill(
    teacher: nn.Module,
    student: nn.Module,
    data: Dataset,
    temperature: float = 4.0,
    alpha: float = 0.9,
    *,
    val_data: Dataset | None = None,
    config: FitConfig | None = None,
    progress: bool = True,
    log=print,
    **fit_overrides,
) -> FitHistory:
    """Train `student` in place on `data` against a frozen `teacher`; return the training history.

    `config` (or `fit_overrides`: epochs, lr, batch_size, seed, ...) controls the optimisation as in
    `edgeopt.training.train`. With `val_data`, the epoch with the best validation accuracy is kept.
    """
    config = config or FitConfig(**fit_overrides)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(model, x, y):
        with torch.no_grad():
            teacher_logits = teacher(x)
        return kd_loss(model(x), teacher_logits, y, temperature, alpha)

    return fit(student, data, val_data, config, loss_fn=loss_fn, progress=progress, log=log)


def distill_task(
    task: str,
    teacher: nn.Module,
    student: str,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    student_kwargs: dict | None = None,
    out: str | Path | None = None,
    data_root=None,
    command: str | None = None,
    teacher_name: str | None = None,
    progress: bool = True,
    log=print,
    train_limit: int | None = None,
    **fit_overrides,
):
    """`distill` on a task's splits with the task's training defaults; evaluates and saves like `train`."""
    from edgeopt.models import get_model, save_checkpoint
    from edgeopt.training.evaluate import evaluate
    from edgeopt.training.tasks import get_task
    from edgeopt.training.train import TrainResult, checkpoint_metadata, default_checkpoint_path, fit_config

    spec = get_task(task)
    student_kwargs = dict(student_kwargs or {})
    student_kwargs.setdefault("num_classes", len(spec.classes))
    if spec.input_shape[0] != 3:
        student_kwargs.setdefault("in_channels", spec.input_shape[0])
    config = fit_config(task, **fit_overrides)
    torch.manual_seed(config.seed)
    net = get_model(student, **student_kwargs)
    train_data = spec.dataset("train", augment=True, root=data_root)
    if train_limit is not None:
        train_data = torch.utils.data.Subset(train_data, range(min(train_limit, len(train_data))))
    val_data = spec.dataset("val", root=data_root)
    test_data = spec.dataset("test", root=data_root)
    if progress:
        log(f"distilling into {student} on {task} (T={temperature}, alpha={alpha}), {config}")
    history = distill(teacher, net, train_data, temperature, alpha, val_data=val_data, config=config,
                      progress=progress, log=log)
    net.eval()
    test = evaluate(net, test_data, spec.classes)
    if progress:
        log(f"test accuracy {100 * test.accuracy:.2f}%")
    path = None
    if out is not False:
        path = Path(out) if out is not None else default_checkpoint_path(task, f"{student}_kd")
        meta = checkpoint_metadata(task, net, config, history, test, command, data_root,
                                   distillation={"teacher": teacher_name, "temperature": temperature, "alpha": alpha})
        save_checkpoint(path, net, student, student_kwargs, **meta)
        if progress:
            log(f"saved {path}")
    return TrainResult(net, history, test, path)


def prune_distill_task(
    task: str,
    teacher: nn.Module,
    model_name: str,
    model_kwargs: dict,
    *,
    sparsity: float,
    block: tuple[int, int] = (16, 4),
    ramp: float = 0.5,
    temperature: float = 4.0,
    alpha: float = 0.9,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    data_root=None,
    command: str | None = None,
    teacher_name: str | None = None,
    progress: bool = True,
    log=print,
    train_limit: int | None = None,
    **fit_overrides,
):
    """A copy of the trained `teacher` pruned to `sparsity` in `block`s of its (out, in) weights while it
    is distilled from the dense teacher: edgeopt.optimize's Prune + Distill + FineTune (the pruning on a
    cubic schedule over the first `ramp` of the steps), the zeros baked into plain float weights of
    `model_name` (the teacher's architecture). `resume` is the fine-tuning's resumable checkpoint.
    Evaluates and saves like `train`, with the pruning in the metadata."""
    import copy
    import tempfile

    from edgeopt.models import save_checkpoint
    from edgeopt.optimize import Distill, FineTune, Prune, optimize
    from edgeopt.training.evaluate import evaluate
    from edgeopt.training.tasks import get_task
    from edgeopt.training.train import TrainResult, checkpoint_metadata, default_checkpoint_path, fit_config

    spec = get_task(task)
    config = fit_config(task, **fit_overrides)
    train_data = spec.dataset("train", augment=True, root=data_root)
    if train_limit is not None:
        train_data = torch.utils.data.Subset(train_data, range(min(train_limit, len(train_data))))
        train_data.classes = spec.classes
    val_data = spec.dataset("val", root=data_root)
    test_data = spec.dataset("test", root=data_root)
    if progress:
        log(f"pruning {model_name} to {100 * sparsity:.0f}% in {block[0]}x{block[1]} blocks on {task} while "
            f"distilling from its dense self (T={temperature}, alpha={alpha}), {config}")
    with tempfile.TemporaryDirectory() as tmp:
        fit_checkpoint = Path(resume) if resume is not None else Path(tmp) / "fit.pt"  # also where the history is
        steps = [Prune(sparsity, block=tuple(block), ramp=ramp), Distill(teacher.eval(), temperature, alpha),
                 FineTune(train_data, epochs=config.epochs, val_data=val_data, lr=config.lr,
                          batch_size=config.batch_size, weight_decay=config.weight_decay, optimizer=config.optimizer,
                          label_smoothing=config.label_smoothing, seed=config.seed, select_best=config.select_best,
                          checkpoint=fit_checkpoint, progress=progress)]
        torch.manual_seed(config.seed)
        net, report = optimize(copy.deepcopy(teacher), steps, data=[val_data[i][0][None] for i in range(2)],
                               measure=False, progress=False)
        history = torch.load(fit_checkpoint, map_location="cpu", weights_only=False)["history"]
    net.eval()
    test = evaluate(net, test_data, spec.classes)
    if progress:
        log(f"test accuracy {100 * test.accuracy:.2f}%, weight sparsity {100 * report.sparsity:.1f}%")
    path = None
    if out is not False:
        path = Path(out) if out is not None else default_checkpoint_path(task, f"{model_name}_s{round(100 * sparsity)}_kd")
        meta = checkpoint_metadata(task, net, config, history, test, command, data_root,
                                   distillation={"teacher": teacher_name, "temperature": temperature, "alpha": alpha},
                                   pruning={"sparsity": sparsity, "block": list(block), "ramp": ramp,
                                            "weight_sparsity": report.sparsity, "passes": list(report.passes)})
        save_checkpoint(path, net, model_name, model_kwargs, **meta)
        if progress:
            log(f"saved {path}")
    return TrainResult(net, history, test, path)
