"""Is it worth handing quantized activations from one conv to the next as uint8 (u8_between_layers) or in
channels_last? Batch-1 latency of edgeopt.quantize'd models under each hand-off, measured in alternating
rounds so that load from other processes falls on every variant alike.

    python bench/time_quantize_layout.py [--models resnet18,vgg_audio,mobilenet_v2] [--threads 2] [--rounds 15]

Variants: NCHW float32 between layers; channels_last float32 between layers; channels_last + uint8 where a
conv feeds only quantized convs; NCHW + uint8. The outputs of all variants are checked to be identical.
Speed only (random weights and calibration data); accuracy is bench/accuracy_quantize.py's job.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import avx2_path  # noqa: E402,F401  (must precede torch)

import torch  # noqa: E402

SHAPES = {"resnet18": (1, 3, 224, 224), "resnet50": (1, 3, 224, 224), "mobilenet_v2": (1, 3, 224, 224),
          "vgg_audio": (1, 1, 64, 128)}
VARIANTS = {"nchw f32": (False, False), "nhwc f32": (True, False), "nhwc u8": (True, True), "nchw u8": (False, True)}


def time_once(model, x, repeats: int) -> float:
    samples = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,vgg_audio,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    meta = avx2_path.setup()
    import edgeopt
    import edgeopt.quantize as quantize_module
    from edgeopt.models import get_model

    torch.set_num_threads(args.threads)
    edgeopt.set_num_threads(args.threads)
    print(f"threads {args.threads}, edgeopt ISA {edgeopt.isa()}, {meta.get('mechanism', '')}".rstrip(", "))
    for name in args.models.split(","):
        torch.manual_seed(0)
        shape = SHAPES[name]
        model = get_model(name).eval()
        calib = [torch.randn(*shape) for _ in range(4)]
        built = {"fp32 eager": model}
        for label, (channels_last, u8) in VARIANTS.items():
            quantize_module.CHANNELS_LAST_BETWEEN_LAYERS = channels_last
            built[label], report = edgeopt.quantize(model, calib, u8_between_layers=u8, weight_rounding="nearest",
                                                    progress=False)
            if label == "nhwc u8":
                links = sum(r.u8_output for r in report)
                convs = sum(r.converted and r.kind.startswith("Conv") for r in report)
        quantize_module.CHANNELS_LAST_BETWEEN_LAYERS = True
        x = torch.randn(*shape)
        with torch.no_grad():
            outs = {label: m(x) for label, m in built.items() if label != "fp32 eager"}
        same = all(torch.equal(o, outs["nchw f32"]) for o in outs.values())
        for m in built.values():  # warm-up
            time_once(m, x, 3)
        rounds = {label: [] for label in built}
        for _ in range(args.rounds):
            for label, m in built.items():
                rounds[label].append(time_once(m, x, args.repeats))
        base = statistics.median(rounds["nchw f32"])
        print(f"\n{name} {shape}: {links} of {convs} quantized convs can hand uint8 to the next; outputs of the "
              f"four int8 variants identical: {same}")
        print("| variant | median ms | vs nchw f32 | spread (IQR) ms |")
        print("|---|---|---|---|")
        for label, values in rounds.items():
            med = statistics.median(values)
            q = statistics.quantiles(values, n=4)
            print(f"| {label} | {1e3 * med:.2f} | {base / med:.2f}x | {1e3 * (q[2] - q[0]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
