"""Low rank + fine-tuning on real data, and fp16 weights: accuracy, MACs and batch-1 latency.

    python bench/accuracy/finetune_low_rank.py --model ravdess [--fractions 0.5,0.25,0.125] [--epochs 6] [--out r.json]
    python bench/accuracy/finetune_low_rank.py --model vit     [--fractions 0.5,0.25,0.125] [--epochs 2] [--out v.json]

ravdess: the RAVDESS speech-emotion VGG CNN (edgeopt/checkpoints/ravdess_vgg_audio.pt; test = the 240 clips
  of held-out actors 21-24, 1 clip = 0.42 points). Its 3x3 convs are Tucker-2 factorized at each rank
  fraction (plain torch convs); its only Linear, the 256x8 head (2 kMAC of 342 MMAC), is left dense.
vit:     the demo's MNIST transformer encoder (`edgeopt demo`: ViT dim 192, 2 blocks, patch 7 = 17 tokens,
  trained 3 epochs on 20k images; loaded from .edgeopt-cache/demo or trained there). Its qkv / proj / fc1 /
  fc2 Linear layers become LowRankLinear (fused edgeopt kernel) at each rank fraction of min(in, out);
  the head is left dense. Fine-tuned on the demo's 20k training images, test = the 10k MNIST test set.

Every variant is factorized with measure=False (all layers that save MACs, so each rank is seen), evaluated,
fine-tuned with the training loop (edgeopt.training.fit: AdamW, one-cycle, best validation epoch kept)
through the trainable LowRankLinear / torch convs, then frozen (LowRankLinear packed for the kernel) and
evaluated again. A control fine-tunes the *unfactorized* model with the same recipe (--control), so a gain
or loss from the extra epochs themselves is visible. fp16: every nn.Linear becomes HalfLinear (fp16 weights,
fp32 accumulation); for the ViT also the fine-tuned low-rank models with fp16 factors. Max logit difference
is over the whole test set.

Latency: simple in-process timing, batch 1, one thread for torch and edgeopt (the machine is shared); all
variants are timed in alternating blocks in the same loop after all training, medians of the block
medians, with the load average recorded before and after. MACs: one forward pass on one input (conv,
Linear, LowRankLinear r*(in+out) per row, HalfLinear, attention matmuls).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from edgeopt.perf.cost import count_macs  # noqa: E402  (counts edgeopt's LowRankLinear / HalfLinear too)

import torch  # noqa: E402
from torch import nn  # noqa: E402


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


@torch.no_grad()
def logits(model: nn.Module, dataset, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x) for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size)])


def accuracy(out: torch.Tensor, labels: torch.Tensor) -> float:
    return float((out.argmax(1) == labels).float().mean())


def half_linears(model: nn.Module) -> nn.Module:
    from edgeopt.nn import HalfLinear

    model = copy.deepcopy(model).eval()
    for name, m in list(model.named_modules()):
        if type(m) is nn.Linear:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, HalfLinear.from_float(m))
    return model


def edgeopt_dense_fp32(model: nn.Module) -> nn.Module:
    """The same dense model with its Linear layers on edgeopt's fp32 kernel (HalfLinear fp32): the dense peer
    of the same kernel family as LowRankLinear."""
    from edgeopt.nn import HalfLinear

    model = copy.deepcopy(model).eval()
    for name, m in list(model.named_modules()):
        if type(m) is nn.Linear:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    HalfLinear.from_float(m, weight_dtype="fp32"))
    return model


@torch.no_grad()
def paired_latency_ms(models: dict[str, nn.Module], x: torch.Tensor, rounds: int, calls: int) -> dict:
    """Batch-1 latency of every model, measured in alternating blocks of `calls` calls (same load for all).
    Returns per model the median over rounds of each block's median, and the spread of the block medians."""
    for m in models.values():
        m.eval()
        for _ in range(3):
            m(x)
    blocks = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            samples = []
            for _ in range(calls):
                t0 = time.perf_counter()
                m(x)
                samples.append(time.perf_counter() - t0)
            blocks[k].append(1e3 * statistics.median(samples))
    return {k: {"median_ms": statistics.median(v), "min_block_ms": min(v), "max_block_ms": max(v)}
            for k, v in blocks.items()}


def subnormal_parameters(model: nn.Module) -> int:
    tiny = torch.finfo(torch.float32).tiny
    return int(sum(((p != 0) & (p.abs() < tiny)).sum() for p in model.parameters()))


def setup_ravdess(args):
    from edgeopt.models import load_pretrained
    from edgeopt.training.tasks import get_task

    base, info = load_pretrained("ravdess_vgg_audio", with_metadata=True)
    md = info.get("metadata", info)
    task = get_task(md["task"])
    data = {"train": task.dataset("train", augment=True), "val": task.dataset("val"), "test": task.dataset("test")}
    from edgeopt.training.loop import FitConfig
    config = FitConfig(epochs=args.epochs, batch_size=32, lr=args.lr or 1e-3, weight_decay=0.05, label_smoothing=0.1)
    return base.eval(), tuple(md["input_shape"]), data, config, dict(conv="tucker2", skip=["classifier.1"]), "ravdess_vgg_audio"


def setup_vit(args):
    from edgeopt.data import Mnist
    from edgeopt.demo.mnist import DEMO_MODELS, trained_model
    from edgeopt.training.loop import FitConfig

    spec = DEMO_MODELS["transformer"]
    base = trained_model("transformer", log=lambda msg: print(msg, flush=True))
    data = {"train": torch.utils.data.Subset(Mnist(split="train"), range(spec.train_subset)),
            "val": Mnist(split="val"), "test": Mnist(split="test")}
    data["train"].classes = Mnist.classes
    config = FitConfig(epochs=args.epochs, batch_size=64, lr=args.lr or 3e-4, weight_decay=1e-4)
    return base.eval(), (1, 28, 28), data, config, dict(skip=["head"]), "MNIST ViT (demo: dim 192, 2 blocks, 17 tokens)"


def finetune(model, data, config):
    from edgeopt.training.loop import fit

    t0, l0 = time.perf_counter(), load()
    history = fit(model, data["train"], data["val"], config, progress=True,
                  log=lambda msg: print("    " + msg, flush=True))
    return {"seconds": time.perf_counter() - t0, "load_before": l0, "load_after": load(),
            "best_epoch": history.best_epoch, "best_val_accuracy": history.best_val_accuracy,
            "epochs": history.epochs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["ravdess", "vit"], required=True)
    parser.add_argument("--fractions", default="0.5,0.25,0.125")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 6 ravdess, 2 vit)")
    parser.add_argument("--lr", type=float, default=None, help="peak rate (default 1e-3 ravdess, 3e-4 vit)")
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed (data order, augmentation)")
    parser.add_argument("--control", action="store_true", help="also fine-tune the unfactorized model")
    parser.add_argument("--rounds", type=int, default=15, help="latency: alternating blocks per model")
    parser.add_argument("--calls", type=int, default=None, help="latency: calls per block (default 5 / 40)")
    parser.add_argument("--latency-threads", type=int, default=1, help="threads (torch and edgeopt) for the timing")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = 6 if args.model == "ravdess" else 2
    torch.set_num_threads(1)
    meta = isa.setup()
    from edgeopt.threads import set_num_threads
    set_num_threads(1)

    import edgeopt.low_rank

    base, shape, data, config, pass_args, title = (setup_ravdess if args.model == "ravdess" else setup_vit)(args)
    config.seed = args.seed
    labels = torch.cat([torch.as_tensor(y) for _, y in torch.utils.data.DataLoader(data["test"], batch_size=4096)])
    ref = logits(base, data["test"])
    base_macs = count_macs(base, shape)
    result = {"model": title, "meta": meta, "threads": 1, "test_samples": len(labels), "fit_config": config.to_dict(),
              "base": {"accuracy": accuracy(ref, labels), "macs": base_macs}, "low_rank": [], "load_start": load()}
    print(f"{title}: test accuracy {100 * result['base']['accuracy']:.2f}% on {len(labels)}, "
          f"{base_macs / 1e6:.2f} MMAC; load {result['load_start']}", flush=True)

    half = half_linears(base)
    out = logits(half, data["test"])
    result["fp16"] = {"accuracy": accuracy(out, labels), "max_logit_diff": float((out - ref).abs().max()),
                      "prediction_changes": int((out.argmax(1) != ref.argmax(1)).sum()),
                      "layers": sum(type(m).__name__ == "HalfLinear" for m in half.modules())}
    print(f"fp16 weights on {result['fp16']['layers']} Linear layers: accuracy {100 * result['fp16']['accuracy']:.2f}%, "
          f"max logit diff {result['fp16']['max_logit_diff']:.2e}, {result['fp16']['prediction_changes']} "
          "predictions changed", flush=True)
    timed = {"dense torch fp32": base, "dense fp16 Linear (HalfLinear)": half}
    if args.model == "vit":
        timed["dense edgeopt fp32 Linear"] = edgeopt_dense_fp32(base)

    if args.control:
        control = copy.deepcopy(base)
        print(f"control: fine-tuning the unfactorized model ({config.epochs} epochs)", flush=True)
        tune = finetune(control, data, config)
        out = logits(control, data["test"])
        result["control"] = {"accuracy": accuracy(out, labels), "finetune": tune}
        print(f"control: {100 * result['control']['accuracy']:.2f}% ({tune['seconds']:.0f} s, load "
              f"{tune['load_before']} -> {tune['load_after']})", flush=True)

    for fraction in (float(f) for f in args.fractions.split(",")):
        model = copy.deepcopy(base).train()
        model, report = edgeopt.low_rank(model, rank=fraction, measure=False, trainable=True,
                                         example_input=torch.zeros(1, *shape), **pass_args)
        converted = [e for e in report if e.converted]
        macs = count_macs(model, shape)
        before = accuracy(logits(model, data["test"]), labels)
        print(f"rank {fraction}: {len(converted)}/{len(report)} layers factorized, {macs / 1e6:.2f} MMAC "
              f"({base_macs / macs:.2f}x fewer), {100 * before:.2f}% before fine-tuning", flush=True)
        tune = finetune(model, data, config)
        edgeopt.low_rank.freeze(model)
        out = logits(model, data["test"])
        entry = {"fraction": fraction, "macs": macs, "mac_ratio": base_macs / macs,
                 "accuracy_before_finetune": before, "accuracy_after_finetune": accuracy(out, labels),
                 "finetune": tune, "subnormal_parameters": subnormal_parameters(model),
                 "layers": [{"name": e.name, "shape": f"{e.in_features}x{e.out_features}", "rank": e.rank,
                             "full_rank": e.full_rank, "rel_error": e.rel_error, "converted": e.converted,
                             "reason": e.reason} for e in report]}
        if args.model == "vit":  # the fine-tuned factors stored as fp16
            f16 = copy.deepcopy(model)
            from edgeopt.nn import LowRankLinear
            for name, m in list(f16.named_modules()):
                if isinstance(m, LowRankLinear):
                    u, vt, b = m.factors()
                    parent, _, child = name.rpartition(".")
                    setattr(f16.get_submodule(parent), child,
                            LowRankLinear.from_factors(u, vt, b if m.has_bias else None, weight_dtype="fp16"))
            o16 = logits(f16, data["test"])
            entry["fp16_factors"] = {"accuracy": accuracy(o16, labels), "max_logit_diff": float((o16 - out).abs().max())}
            timed[f"low rank {fraction} fp16 factors"] = f16
        timed[f"low rank {fraction}"] = model
        result["low_rank"].append(entry)
        print(f"rank {fraction}: {100 * before:.2f}% -> {100 * entry['accuracy_after_finetune']:.2f}% after "
              f"{config.epochs} epochs ({tune['seconds']:.0f} s, best epoch {tune['best_epoch']}, load "
              f"{tune['load_before']} -> {tune['load_after']})"
              + (f"; fp16 factors {100 * entry['fp16_factors']['accuracy']:.2f}%, max logit diff "
                 f"{entry['fp16_factors']['max_logit_diff']:.2e}" if "fp16_factors" in entry else ""), flush=True)

    torch.set_num_threads(args.latency_threads)
    set_num_threads(args.latency_threads)
    result["latency_threads"] = args.latency_threads
    x = data["test"][0][0].unsqueeze(0)
    calls = args.calls or (5 if args.model == "ravdess" else 40)
    l0 = load()
    result["latency"] = paired_latency_ms(timed, x, args.rounds, calls)
    result["latency_load"] = [l0, load()]
    print(f"\nbatch-1 latency, {args.latency_threads} thread(s), {args.rounds} alternating blocks of {calls} calls, load {l0} -> {load()}:")
    for k, v in result["latency"].items():
        print(f"  {k:34s} {v['median_ms']:8.3f} ms (blocks {v['min_block_ms']:.3f}-{v['max_block_ms']:.3f})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
