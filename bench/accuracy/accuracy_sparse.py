"""RAVDESS accuracy vs block sparsity: the vgg_audio reference pruned with edgeopt.prune and fine-tuned.

    python bench/accuracy/accuracy_sparse.py --sparsity 0.5,0.7,0.8,0.9,0.95 --epochs 6 --threads 1

For each sparsity: load the dense checkpoint (53.75% on the held-out actors 21-24), prune gradually
(cubic schedule over the first `--ramp` fraction of the fine-tuning steps, masks kept applied by the
Pruner's hooks), fine-tune with the task's AdamW / one-cycle recipe at a lower peak rate, keep the last
epoch (an earlier "best validation" epoch could predate the target sparsity), evaluate on the test split.
Appends one JSON line per run to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import edgeopt  # noqa: F401  (before torch: GOMP_SPINCOUNT)
import torch
import edgeopt.prune as prune_mod
from edgeopt.models import load_pretrained
from edgeopt.training import evaluate, fit, get_task
from edgeopt.training.train import fit_config


def run(sparsity: float, block, scope: str, epochs: int, lr: float, ramp: float, seed: int,
        save_dir: Path | None = None) -> dict:
    task = get_task("ravdess")
    model = load_pretrained("ravdess_vgg_audio")
    train_data = task.dataset("train", augment=True)
    val_data = task.dataset("val")
    test_data = task.dataset("test")
    config = fit_config("ravdess", epochs=epochs, lr=lr, seed=seed, select_best=False)
    steps_per_epoch = len(train_data) // config.batch_size
    ramp_steps = max(1, int(ramp * epochs * steps_per_epoch))
    pruner = prune_mod.prune(model, sparsity, block=block, scope=scope, steps=ramp_steps, update_every=8)

    t0 = time.time()
    history = fit(model, train_data, val_data, config, callbacks=[pruner], progress=True)  # pruner.step() per step
    pruner.remove()
    model.eval()
    rep = pruner.report()
    test = evaluate(model, test_data, task.classes)
    ckpt = None
    if save_dir is not None:  # the pruned, fine-tuned weights, for evaluating the sparse kernels later
        save_dir.mkdir(parents=True, exist_ok=True)
        ckpt = save_dir / f"vgg_audio_s{int(round(100 * sparsity))}_b{block[0]}x{block[1]}_{scope}.pt"
        torch.save(model.state_dict(), ckpt)
    # one-shot (no fine-tuning) accuracy at the same sparsity, for the curve's second line
    oneshot = load_pretrained("ravdess_vgg_audio")
    prune_mod.prune(oneshot, sparsity, block=block, scope=scope).remove()
    oneshot_acc = evaluate(oneshot.eval(), test_data, task.classes).accuracy
    return {"sparsity": sparsity, "achieved": rep.sparsity, "block": list(block), "scope": scope, "epochs": epochs,
            "lr": lr, "ramp": ramp, "seed": seed, "test_accuracy": test.accuracy, "oneshot_accuracy": oneshot_acc,
            "val_last": history.epochs[-1].get("val_accuracy"), "seconds": time.time() - t0,
            "layers": {layer.name: round(layer.sparsity, 4) for layer in rep.layers},
            "checkpoint": str(ckpt) if ckpt else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsity", default="0.5,0.7,0.8,0.9,0.95")
    p.add_argument("--block", default="8,4")
    p.add_argument("--scope", default="global")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ramp", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-dir", type=Path, default=None, help="save each fine-tuned state_dict here")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "accuracy_sparse-ravdess.jsonl")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    block = tuple(int(v) for v in a.block.split(","))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for s in (float(v) for v in a.sparsity.split(",")):
        r = run(s, block, a.scope, a.epochs, a.lr, a.ramp, a.seed, a.save_dir)
        print(json.dumps(r), flush=True)
        with a.out.open("a") as f:
            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
