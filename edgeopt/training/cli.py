"""`edgeopt train | eval | distill | reproduce | compare`: registered into the main CLI by `register`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from edgeopt.cli_args import (USAGE_EXIT, Parser, UsageError, fraction, key_value, positive_float, positive_int,
                              usage_errors)


def _model_args(pairs: list[tuple[str, object]] | None) -> dict:
    """The --model-arg pairs (parsed by cli_args.key_value) as constructor keywords."""
    return dict(pairs or [])


def _load_trained(name_or_path: str, task: str | None = None):
    """A checkpoint path, or the name of a reference model (see `edgeopt reproduce --list`); with `task`, it must
    have been trained on it. Mistakes are UsageErrors: this runs before any data is loaded."""
    from edgeopt.models import load_checkpoint, load_pretrained

    with usage_errors(name_or_path):
        if name_or_path.endswith(".pt") or Path(name_or_path).is_file():
            if not Path(name_or_path).is_file():
                raise FileNotFoundError("no such checkpoint file")
            model, meta = load_checkpoint(name_or_path)
        else:
            model, meta = load_pretrained(name_or_path, with_metadata=True)
    if task is not None and meta.get("task") not in (None, task):
        raise UsageError(f"{name_or_path} was trained on {meta['task']!r}, not {task!r}")
    return model, meta


def _check_model(name: str | None, kwargs: dict, task: str) -> None:
    """The architecture exists and takes these keywords (built once, in a few milliseconds)."""
    from edgeopt.models.registry import get_model
    from edgeopt.training.tasks import get_task

    spec = get_task(task)
    kwargs = dict(kwargs, num_classes=kwargs.get("num_classes", len(spec.classes)))
    if spec.input_shape[0] != 3:
        kwargs.setdefault("in_channels", spec.input_shape[0])
    with usage_errors(f"model {name or spec.default_model!r}"):
        get_model(name or spec.default_model, **kwargs)


def _check_data(task: str, root) -> None:
    """The task's data is where --data-root (or the default) says: its metadata files exist."""
    from edgeopt.training.tasks import get_task

    with usage_errors(f"data for {task!r}" + ("" if root is None else f" under --data-root {root}")):
        get_task(task).data_version(root)


def _set_threads(args) -> None:
    torch.set_num_threads(args.threads)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="dataset root (default: $EDGEOPT_DATA or <repo>/../shared/data)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")


def _add_fit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=positive_int, help="default: the task's (see edgeopt.training.train.TASK_DEFAULTS)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", choices=["adamw", "sgd"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", choices=["best-val", "last"], default="best-val",
                   help="which epoch's weights to keep: best validation accuracy (default) or the last")
    p.add_argument("--limit", type=positive_int, help="train on the first N samples only (smoke tests)")
    p.add_argument("--out", help="checkpoint path (default: <cache>/checkpoints/<task>_<model>.pt)")


def _fit_kwargs(args) -> dict:
    return dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                optimizer=args.optimizer, seed=args.seed, select_best=args.keep == "best-val")


def _command_line() -> str:
    return "edgeopt " + " ".join(sys.argv[1:])


def run_train(args) -> int:
    from edgeopt.training.train import train

    _check_model(args.model, _model_args(args.model_arg), args.task)
    _check_data(args.task, args.data_root)
    _set_threads(args)
    train(args.task, args.model, model_kwargs=_model_args(args.model_arg), out=args.out, data_root=args.data_root,
          command=_command_line(), train_limit=args.limit, **_fit_kwargs(args))
    return 0


def run_eval(args) -> int:
    from edgeopt.training.evaluate import evaluate
    from edgeopt.training.tasks import get_task

    model, meta = _load_trained(args.model, args.task)
    task = args.task or meta.get("task")
    if task is None:
        raise UsageError("the checkpoint does not say its task; pass it: edgeopt eval <task> --model ...")
    _check_data(task, args.data_root)
    _set_threads(args)
    spec = get_task(task)
    report = evaluate(model, spec.dataset(args.split, root=args.data_root), spec.classes)
    print(json.dumps(report.to_dict(), indent=1) if args.json else f"{args.model} on {task} ({args.split})\n{report.format()}")
    return 0


def run_distill(args) -> int:
    from edgeopt.training.distill import distill_task

    teacher, _ = _load_trained(args.teacher, args.task)
    _check_model(args.student, _model_args(args.model_arg), args.task)
    _check_data(args.task, args.data_root)
    _set_threads(args)
    distill_task(args.task, teacher, args.student, temperature=args.temperature, alpha=args.alpha,
                 student_kwargs=_model_args(args.model_arg), out=args.out, data_root=args.data_root,
                 command=_command_line(), teacher_name=args.teacher, train_limit=args.limit, **_fit_kwargs(args))
    return 0


def run_reproduce(args) -> int:
    from edgeopt.training.reference import RECIPES, reproduce

    if args.list or not args.names:
        from edgeopt.models import load_checkpoint, pretrained_path
        from edgeopt.models.checkpoint import PretrainedNotFoundError

        for recipe in RECIPES.values():
            try:
                meta = load_checkpoint(pretrained_path(recipe.name))[1]
                status = f"test {100 * meta['test_accuracy']:.2f}%, {meta['macs'] / 1e6:.1f} M MACs"
            except PretrainedNotFoundError:
                status = "not trained yet"
            print(f"{recipe.name:30s} {status:32s} {recipe.explicit_command}")
        return 0
    unknown = [name for name in args.names if name not in RECIPES]
    if unknown:
        raise UsageError(f"no reference recipe named {', '.join(map(repr, unknown))}; edgeopt reproduce --list shows "
                         "them")
    _set_threads(args)
    for name in args.names:
        print(f"{name}: {reproduce(name, force=args.force, into_package=args.into_package, data_root=args.data_root)}")
    return 0


def run_compare(args) -> int:
    from edgeopt.training.report import compare_models, format_rows

    models = {name: _load_trained(name, args.task)[0] for name in args.models}
    _check_data(args.task, args.data_root)
    _set_threads(args)
    print(format_rows(compare_models(args.task, models, args.split, args.data_root, args.runs)))
    return 0


def register(subparsers) -> None:
    from edgeopt.training.tasks import TASKS

    tasks = list(TASKS)
    p = subparsers.add_parser("train", help="train a model on a dataset and save a checkpoint")
    p.add_argument("task", choices=tasks)
    p.add_argument("--model", help="registry name (default: the task's reference model)")
    p.add_argument("--model-arg", action="append", type=key_value, metavar="KEY=VALUE",
                   help="constructor argument, repeatable")
    _add_fit(p)
    _add_common(p)
    p.set_defaults(run=run_train)

    p = subparsers.add_parser("eval", help="accuracy, confusion matrix and per-class recall of a trained model")
    p.add_argument("task", nargs="?", choices=tasks, help="default: the task stored in the checkpoint")
    p.add_argument("--model", required=True, help="reference model name or checkpoint path")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true")
    _add_common(p)
    p.set_defaults(run=run_eval)

    p = subparsers.add_parser("distill", help="knowledge distillation from a trained teacher into a student")
    p.add_argument("task", choices=tasks)
    p.add_argument("--teacher", required=True, help="reference model name or checkpoint path")
    p.add_argument("--student", required=True, help="registry name of the student architecture")
    p.add_argument("--model-arg", action="append", type=key_value, metavar="KEY=VALUE",
                   help="student constructor argument")
    p.add_argument("--temperature", type=positive_float, default=4.0)
    p.add_argument("--alpha", type=fraction, default=0.9, help="weight of the soft-target loss, in [0, 1]")
    _add_fit(p)
    _add_common(p)
    p.set_defaults(run=run_distill)

    p = subparsers.add_parser("reproduce", help="train the reference models (cached; --list shows them)")
    p.add_argument("names", nargs="*")
    p.add_argument("--list", action="store_true")
    p.add_argument("--force", action="store_true", help="retrain even if a checkpoint exists")
    p.add_argument("--into-package", action="store_true", help="write to edgeopt/checkpoints/ (for committing)")
    _add_common(p)
    p.set_defaults(run=run_reproduce)

    p = subparsers.add_parser("compare", help="MACs, params, latency and accuracy of trained models side by side")
    p.add_argument("task", choices=tasks)
    p.add_argument("models", nargs="+", help="reference model names or checkpoint paths")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--runs", type=positive_int, default=50, help="timed batch-1 forward passes per model")
    _add_common(p)
    p.set_defaults(run=run_compare)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m edgeopt.training.cli``) for use before the main CLI is installed."""
    parser = Parser(prog="edgeopt-training")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return USAGE_EXIT
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        print(f"edgeopt {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
