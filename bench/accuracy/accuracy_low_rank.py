"""Accuracy of low-rank factorization and fp16 weights on real data (RAVDESS speech-emotion VGG CNN).

    python bench/accuracy/accuracy_low_rank.py [--fractions 0.5,0.25] [--epochs 3] [--out results.json]

1. fp16 weights: every nn.Linear becomes HalfLinear (fp16); test accuracy and the max logit difference
   (the CNN's Linear layer is only its classifier head: convs have no fp16 path yet).
2. Low rank: the 3x3 convs are Tucker-2 factorized at each rank fraction (edgeopt.low_rank with
   conv="tucker2", measure=False so the accuracy/MAC trade-off is seen at every rank), evaluated, then
   fine-tuned with the training loop for a few epochs and evaluated again; MACs and batch-1 latency
   (eager PyTorch, the convs are plain torch convs) before and after.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)

import torch  # noqa: E402
from torch import nn  # noqa: E402


def latency_ms(model: nn.Module, shape, repeats: int = 15) -> float:
    x = torch.randn(1, *shape)
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            model(x)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2] * 1e3


def paired_latency_ms(a: nn.Module, b: nn.Module, shape, rounds: int = 7) -> tuple[float, float]:
    """Batch-1 latency of two models measured in alternating blocks (same load for both), medians."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(latency_ms(a, shape, repeats=5))
        tb.append(latency_ms(b, shape, repeats=5))
    return sorted(ta)[rounds // 2], sorted(tb)[rounds // 2]


@torch.no_grad()
def logits(model: nn.Module, dataset, batch_size: int = 64) -> torch.Tensor:
    model.eval()
    out = [model(x) for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size)]
    return torch.cat(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ravdess_vgg_audio")
    parser.add_argument("--fractions", default="0.5,0.25")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    meta = isa.setup()

    import edgeopt.low_rank
    from edgeopt.models import count_macs, load_pretrained
    from edgeopt.nn import HalfLinear
    from edgeopt.training.evaluate import evaluate
    from edgeopt.training.loop import FitConfig, fit
    from edgeopt.training.tasks import get_task

    base, info = load_pretrained(args.model, with_metadata=True)
    md = info.get("metadata", info)
    task = get_task(md["task"])
    shape = tuple(md["input_shape"])
    test, train, val = task.dataset("test"), task.dataset("train", augment=True), task.dataset("val")
    t0 = time.perf_counter()
    ref_logits = logits(base, test)
    labels = torch.tensor([int(y) for _, y in test])
    base_acc = float((ref_logits.argmax(1) == labels).float().mean())
    result = {"model": args.model, "meta": meta, "test_samples": len(labels), "base_accuracy": base_acc,
              "base_macs": count_macs(base, shape), "base_latency_ms": latency_ms(base, shape)}
    print(f"{args.model}: test accuracy {100 * base_acc:.2f}% on {len(labels)} ({time.perf_counter() - t0:.0f} s), "
          f"{result['base_macs'] / 1e6:.1f} MMAC, {result['base_latency_ms']:.2f} ms", flush=True)

    half = copy.deepcopy(base).eval()
    for name, m in list(half.named_modules()):
        if type(m) is nn.Linear:
            parent, _, child = name.rpartition(".")
            setattr(half.get_submodule(parent) if parent else half, child, HalfLinear.from_float(m))
    half_logits = logits(half, test)
    result["fp16"] = {"accuracy": float((half_logits.argmax(1) == labels).float().mean()),
                      "max_logit_diff": float((half_logits - ref_logits).abs().max()),
                      "layers": "nn.Linear only (classifier head)"}
    print(f"fp16 Linear weights: accuracy {100 * result['fp16']['accuracy']:.2f}%, max logit diff "
          f"{result['fp16']['max_logit_diff']:.2e}", flush=True)

    result["low_rank"] = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        model = copy.deepcopy(base)
        # Linear layers stay dense here (the only one is the 8-class head); bench/accuracy/finetune_low_rank.py also
        # fine-tunes low-rank Linear layers (trainable LowRankLinear) on a transformer.
        linears = [name for name, m in model.named_modules() if type(m) is nn.Linear]
        model, report = edgeopt.low_rank(model, rank=fraction, conv="tucker2", example_input=torch.zeros(1, *shape),
                                         measure=False, skip=linears)
        macs = count_macs(model, shape)
        before = evaluate(model, test, task.classes).accuracy
        t0 = time.perf_counter()
        fit(model, train, val, FitConfig(epochs=args.epochs, batch_size=32, lr=args.lr, weight_decay=0.05,
                                         label_smoothing=0.1), progress=False, log=lambda *a, **k: None)
        after = evaluate(model, test, task.classes).accuracy
        seconds = time.perf_counter() - t0
        dense_ms, lr_ms = paired_latency_ms(base, model, shape)
        entry = {"fraction": fraction, "macs": macs, "mac_ratio": result["base_macs"] / macs,
                 "accuracy_before_finetune": before, "accuracy_after_finetune": after,
                 "finetune_seconds": seconds, "latency_ms": lr_ms, "dense_latency_ms": dense_ms,
                 "layers": [{"name": e.name, "rank": e.rank, "rel_error": e.rel_error, "converted": e.converted}
                            for e in report]}
        result["low_rank"].append(entry)
        print(f"Tucker-2 rank {fraction}: {macs / 1e6:.1f} MMAC ({entry['mac_ratio']:.2f}x fewer), accuracy "
              f"{100 * before:.2f}% -> {100 * after:.2f}% after {args.epochs} epochs "
              f"({entry['finetune_seconds']:.0f} s), batch-1 latency {lr_ms:.2f} ms vs dense {dense_ms:.2f} ms "
              f"(alternating blocks)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
