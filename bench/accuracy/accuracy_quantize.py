"""Accuracy of edgeopt.quantize on real data: fp32 vs int8 top-1 and their agreement, per observer.

    python bench/accuracy/accuracy_quantize.py [--models ravdess_vgg_audio,cifar10_resnet10_cifar_slim]
                                      [--observers minmax,percentile,mse] [--calib 512] [--out results.json]

Models: the trained reference checkpoints (edgeopt/checkpoints). RAVDESS speech emotion is evaluated on
its speaker-independent test actors (21-24), CIFAR-10 on its 10k test images. Calibration uses evenly
spaced samples of each training split (no augmentation), never test data. One thread (the machine is
shared), so the figures are about accuracy, not speed. Targets: int8 within 1.0 point of fp32
and top-1 agreement >= 98%.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import edgeopt
from edgeopt.models import load_pretrained
from edgeopt.training.tasks import get_task

CALIB_BATCH = 32


@torch.no_grad()
def logits(model, dataset, batch_size: int = 128) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x) for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size)])


def calibration_batches(dataset, n: int) -> list[torch.Tensor]:
    n = min(n, len(dataset))
    step = len(dataset) / n
    samples = [dataset[int(i * step)][0] for i in range(n)]
    return [torch.stack(samples[i:i + CALIB_BATCH]) for i in range(0, n, CALIB_BATCH)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="ravdess_vgg_audio,cifar10_resnet10_cifar_slim")
    parser.add_argument("--observers", default="minmax,percentile")
    parser.add_argument("--percentile", type=float, default=99.99)
    parser.add_argument("--calib", type=int, default=512, help="calibration samples from the training split")
    parser.add_argument("--both-handoffs", action="store_true",
                        help="evaluate with u8_between_layers both on and off (default: the pass's default only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    edgeopt.set_num_threads(args.threads)

    results = {"isa": edgeopt.isa(), "threads": args.threads, "calibration_samples": args.calib,
               "weight_rounding": "gptq (default)",
               "torch": torch.__version__, "models": []}
    rows = []
    for name in args.models.split(","):
        model, info = load_pretrained(name, with_metadata=True)
        meta = info.get("metadata", info)
        task = get_task(meta["task"])
        t0 = time.perf_counter()
        test = task.dataset("test")
        calib = calibration_batches(task.dataset("train"), args.calib)
        labels = torch.tensor([int(y) for _, y in test])
        ref = logits(model, test)
        fp32 = float((ref.argmax(1) == labels).float().mean())
        print(f"{name}: fp32 {100 * fp32:.2f}% on {len(labels)} test samples (recorded "
              f"{100 * meta.get('test_accuracy', float('nan')):.2f}%), data loaded and evaluated in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        entry = {"model": name, "task": task.name, "test_samples": len(labels), "fp32_accuracy": fp32, "int8": []}
        default_u8 = edgeopt.quantize.U8_BETWEEN_LAYERS_DEFAULT
        variants = [(obs, default_u8) for obs in args.observers.split(",")]
        if args.both_handoffs:
            variants += [(obs, not default_u8) for obs in args.observers.split(",")]
        for observer, u8 in variants:
            t0 = time.perf_counter()
            qmodel, report = edgeopt.quantize(model, calib, observer=observer, percentile=args.percentile,
                                              u8_between_layers=u8, progress=False)
            seconds = time.perf_counter() - t0
            out = logits(qmodel, test)
            acc = float((out.argmax(1) == labels).float().mean())
            agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
            layer_sqnr = [r.sqnr_db for r in report.converted if r.sqnr_db is not None]
            label = observer + (f" {args.percentile}" if observer == "percentile" else "") + (
                "" if u8 == default_u8 else (" u8 hand-off" if u8 else " f32 hand-off"))
            res = {"observer": observer, "percentile": args.percentile if observer == "percentile" else None,
                   "u8_between_layers": u8, "accuracy": acc, "agreement": agree, "delta_points": 100 * (acc - fp32),
                   "converted": f"{len(report.converted)}/{len(report)}", "quantize_seconds": seconds,
                   "model_sqnr_db_calib_batch": report.model_sqnr_db, "min_layer_sqnr_db": min(layer_sqnr),
                   "report": report.to_dict()}
            entry["int8"].append(res)
            ok = abs(res["delta_points"]) <= 1.0 and agree >= 0.98
            rows.append((name, label, fp32, acc, agree, res["converted"], res["min_layer_sqnr_db"], ok))
            print(f"  int8 [{label}]: {100 * acc:.2f}% ({res['delta_points']:+.2f} pt), agreement {100 * agree:.2f}%, "
                  f"{res['converted']} layers int8, min layer SQNR {res['min_layer_sqnr_db']:.1f} dB, "
                  f"quantize {seconds:.1f} s", flush=True)
            if observer == args.observers.split(",")[0] and u8 == default_u8:
                print(str(report))
        results["models"].append(entry)

    print("\n| model | observer | fp32 | int8 | delta | top-1 agreement | layers int8 | min layer SQNR | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, label, fp32, acc, agree, conv, sq, ok in rows:
        print(f"| {name} | {label} | {100 * fp32:.2f}% | {100 * acc:.2f}% | {100 * (acc - fp32):+.2f} | "
              f"{100 * agree:.2f}% | {conv} | {sq:.1f} dB | {'met' if ok else 'MISSED'} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
