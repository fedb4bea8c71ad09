"""Prune + distillation fine-tuning of the reference models through edgeopt.optimize, in resumable segments.

    python bench/accuracy/finetune_pipeline.py --task ravdess --sparsity 0.8 --epochs 12 --seed 0 --segment-epochs 6
    python bench/accuracy/finetune_pipeline.py --task cifar10 --sparsity 0.8 --epochs 10 --seed 0 --segment-epochs 4

One call runs at most --segment-epochs epochs (keep a call under ~15 minutes on the shared machine: run it
under /work/tools/heavy, and again until it prints "finished"). The steps are
[PruneChannels(--channels)?, Prune(--sparsity, --block), Distill(the dense reference), FineTune(train split,
--epochs, best validation epoch once the target sparsity is reached)], no lowering: the fine-tuned float
weights (pruned zeros baked in) go to bench/results/pipeline/<tag>.pt with a JSON line of what was done
(float test accuracy on the held-out split, history).

    python bench/accuracy/finetune_pipeline.py --task ravdess --sparsity 0.8 --epochs 12 --seed 0 --lower [--max-drop 1]

--lower runs the whole pipeline in one edgeopt.optimize call -- the same steps plus Quantize (calibration:
the e2e benchmark's 32 training samples, edgeopt.study.subjects.calibration) -- which finds the finished fine-tuning in its checkpoint and resumes
there, then lowers to int8; with --max-drop, the accuracy-aware mode with the validation split as its
evaluation data and the dense reference's validation accuracy as the baseline. It saves the lowered module
for bench/e2e/bench_e2e.py's edgeopt_ft contender (EDGEOPT_LOWERED=<tag>-lowered.pt) and appends a JSON line with
the dense, fine-tuned float and int8 test accuracies to lowered.jsonl.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import edgeopt  # noqa: F401  (before torch: GOMP_SPINCOUNT)
import torch

from edgeopt.models import load_pretrained
from edgeopt.optimize import Distill, FineTune, LowRank, Prune, PruneChannels, optimize
from edgeopt.training import evaluate, get_task
from edgeopt.training.train import TASK_DEFAULTS

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "results" / "pipeline"
REFERENCES = {"ravdess": "ravdess_vgg_audio", "cifar10": "cifar10_resnet10_cifar_slim", "mnist_vit": "demo transformer"}


def reference(task_name: str) -> torch.nn.Module:
    """The trained dense model of a task (a fresh copy each call)."""
    if task_name == "mnist_vit":
        from edgeopt.demo.mnist import trained_model

        return trained_model("transformer", log=lambda msg: print(msg, flush=True)).eval()
    return load_pretrained(REFERENCES[task_name]).eval()


def splits(task_name: str):
    """(train with augmentation, val, test, class names, input shape) of a task."""
    if task_name == "mnist_vit":
        from edgeopt.data import Mnist
        from edgeopt.demo.mnist import DEMO_MODELS

        train = torch.utils.data.Subset(Mnist(split="train"), range(DEMO_MODELS["transformer"].train_subset))
        train.classes = Mnist.classes
        return train, Mnist(split="val"), Mnist(split="test"), Mnist.classes, (1, 28, 28)
    task = get_task(task_name)
    return (task.dataset("train", augment=True), task.dataset("val"), task.dataset("test"), task.classes,
            task.input_shape)


FIT_DEFAULTS = {**TASK_DEFAULTS, "mnist_vit": dict(epochs=2, batch_size=64, lr=1.5e-3, weight_decay=1e-4,
                                                   optimizer="adamw", label_smoothing=0.0)}


def tag_of(a) -> str:
    parts = [a.task]
    if a.low_rank:
        parts.append(f"r{a.low_rank:g}" + (f"{a.conv}" if a.conv else ""))
    if a.sparsity:
        parts += [f"s{int(round(100 * a.sparsity))}", f"b{a.block[0]}x{a.block[1]}"]
    if a.channels:
        parts.append(f"c{int(round(100 * a.channels))}")
    parts += [f"e{a.epochs}", f"lr{a.lr:g}", "kd" if a.alpha > 0 else "ce", f"seed{a.seed}"]
    return "_".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(REFERENCES), required=True)
    p.add_argument("--sparsity", type=float, default=0.8)
    p.add_argument("--block", type=lambda s: tuple(int(v) for v in s.split(",")), default=(16, 4))
    p.add_argument("--channels", type=float, default=0.0, help="PruneChannels amount first (0: none)")
    p.add_argument("--low-rank", type=float, default=0.0, help="LowRank(rank=this fraction) first (0: none)")
    p.add_argument("--conv", default=None, help="LowRank's conv factorization (tucker2 | separable)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=None, help="peak rate (default: a fifth of the task's)")
    p.add_argument("--ramp", type=float, default=0.5)
    p.add_argument("--alpha", type=float, default=0.9, help="distillation weight (0: plain cross-entropy)")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--segment-epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lower", action="store_true", help="after the fine-tuning: Quantize too, save the lowered module")
    p.add_argument("--max-drop", type=float, default=None, help="--lower with the accuracy-aware mode (points)")
    p.add_argument("--one-shot", action="store_true",
                   help="--lower without Distill / FineTune: prune and lower the dense reference as it is")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    defaults = FIT_DEFAULTS[a.task]
    a.lr = a.lr if a.lr is not None else defaults["lr"] / 5
    OUT.mkdir(parents=True, exist_ok=True)
    tag = tag_of(a)
    train, val, test, classes, shape = splits(a.task)
    dense = reference(a.task)
    steps = []
    if a.channels:
        steps.append(PruneChannels(a.channels))
    if a.low_rank:
        steps.append(LowRank(rank=a.low_rank, conv=a.conv, measure=False,
                             skip=("head",) if a.task == "mnist_vit" else ("classifier.1",)))
    if a.sparsity:
        steps.append(Prune(a.sparsity, block=a.block, ramp=a.ramp))
    if a.one_shot:
        a.epochs, a.alpha, a.seed = 0, 0.0, 0
        return lower(a, tag_of(a) + "_oneshot", classes, steps, val, test, train)
    if a.alpha > 0:
        steps.append(Distill(dense, temperature=a.temperature, alpha=a.alpha))
    steps.append(FineTune(train, epochs=a.epochs, val_data=val, lr=a.lr, batch_size=defaults["batch_size"],
                          weight_decay=defaults["weight_decay"], optimizer=defaults["optimizer"],
                          label_smoothing=defaults["label_smoothing"] if a.alpha == 0 else 0.0, seed=a.seed,
                          checkpoint=OUT / f"{tag}.fit", max_epochs=a.segment_epochs))
    if a.lower:
        return lower(a, tag, classes, steps, val, test, train)
    torch.manual_seed(a.seed)
    t0 = time.time()
    model, report = optimize(reference(a.task), steps, data=[val[i][0][None] for i in range(2)], measure=False,
                             progress=False)
    if any("call optimize again" in n for n in report.notes):
        print(f"{tag}: segment done ({time.time() - t0:.0f} s); run again to continue", flush=True)
        return 3
    model.eval()
    from edgeopt.passes.low_rank import freeze

    test_acc = evaluate(freeze(model), test, classes).accuracy
    torch.save(model.state_dict() if not isinstance(model, torch.fx.GraphModule) else model, OUT / f"{tag}.pt")
    saved = torch.load(OUT / f"{tag}.fit", weights_only=False)
    history = saved["history"]
    line = {"tag": tag, "task": a.task, "reference": REFERENCES[a.task], "sparsity": report.sparsity,
            "low_rank": a.low_rank, "conv": a.conv, "macs": [report.macs_before, report.macs_after],
            "target_sparsity": a.sparsity, "block": list(a.block), "channels": a.channels, "epochs": a.epochs,
            "lr": a.lr, "ramp": a.ramp, "alpha": a.alpha, "temperature": a.temperature, "seed": a.seed,
            "float_test_accuracy": test_acc, "best_epoch": history.best_epoch,
            "best_val_accuracy": history.best_val_accuracy, "history": history.epochs,
            "train_seconds": history.seconds, "passes": report.passes,
            "graph_module": isinstance(model, torch.fx.GraphModule)}
    with open(OUT / "finetune.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print(f"{tag}: finished; float test accuracy {100 * test_acc:.2f}% (best epoch {history.best_epoch}, "
          f"val {100 * history.best_val_accuracy:.2f}%), sparsity {100 * report.sparsity:.1f}%", flush=True)
    return 0


def lower(a, tag: str, classes, steps: list, val, test, train) -> int:
    """The whole pipeline in one optimize call (the fine-tuning resumes from its finished checkpoint)."""
    from edgeopt.optimize import Quantize
    from edgeopt.study import subjects

    if not a.one_shot and not (OUT / f"{tag}.fit").exists():
        print(f"{tag}: not fine-tuned yet", file=sys.stderr)
        return 2
    model_name = a.task
    if a.task in subjects.SUBJECTS and subjects.SUBJECTS[a.task].checkpoint == REFERENCES[a.task]:
        calib, _ = subjects.calibration(subjects.SUBJECTS[a.task], 8, 4)  # the e2e benchmark's calibration batches
    else:
        calib = [torch.stack([train[i * 97 + j * 4][0] for j in range(4)]) for i in range(8)]
    dense = reference(a.task)
    steps = [s for s in steps if not isinstance(s, FineTune)] + [
        FineTune(**{**{f: getattr(s, f) for f in s.__dataclass_fields__}, "max_epochs": None, "progress": False})
        for s in steps if isinstance(s, FineTune)] + [Quantize()]
    t0 = time.time()
    kwargs = dict(eval_data=val, max_accuracy_drop=a.max_drop) if a.max_drop is not None else {}
    lowered, report = optimize(reference(a.task), steps, data=calib, measure=False, progress=False, **kwargs)
    accuracy = {name: 100 * evaluate(m, test, classes).accuracy for name, m in (("int8", lowered), ("dense", dense))}
    suffix = "" if a.max_drop is None else f"_drop{a.max_drop:g}"
    path = OUT / f"{tag}{suffix}-lowered.pt"
    kernels = [r.kernel for r in report if r.kernel]
    summary = (f"{tag}{suffix}: sparsity {report.sparsity:.3f}, MACs {report.macs_after / 1e6:.1f}M of "
               f"{report.macs_before / 1e6:.1f}M; kernels " + ", ".join(f"{k} x{kernels.count(k)}" for k in sorted(set(kernels))))
    torch.save({"module": lowered, "model": model_name, "summary": summary}, path)
    line = {"tag": tag + suffix, "task": a.task, "seed": a.seed, "sparsity": report.sparsity,
            "dense_test_accuracy": accuracy["dense"], "int8_test_accuracy": accuracy["int8"],
            "loss_vs_dense_points": accuracy["dense"] - accuracy["int8"], "max_drop": a.max_drop,
            "val_accuracy_before": report.accuracy_before, "val_accuracy_after": report.accuracy_after,
            "backed_off": [b.__dict__ for b in report.backed_off], "notes": report.notes,
            "kernels": {r.name: r.kernel for r in report if r.kernel}, "lowered": str(path),
            "seconds": time.time() - t0, "report": str(report)}
    with open(OUT / "lowered.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print(report)
    print(f"{summary}\ntest accuracy: dense fp32 {accuracy['dense']:.2f}%, pipeline int8 {accuracy['int8']:.2f}% "
          f"({accuracy['int8'] - accuracy['dense']:+.2f} points); saved {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
