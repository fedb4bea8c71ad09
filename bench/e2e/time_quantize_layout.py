"""Is it worth handing quantized activations from one conv to the next as uint8 (u8_between_layers) or in
channels_last? Batch-1 latency of edgeopt.quantize'd models under each hand-off, measured in alternating
rounds so that load from other processes falls on every variant alike.

    python bench/e2e/time_quantize_layout.py [--models resnet18,vgg_audio,mobilenet_v2] [--threads 2] [--rounds 15]

Variants: NCHW or channels_last (NHWC) between layers, float32 or uint8 where a conv feeds only quantized
convs (directly or through max-pools), with or without the residual add (and the ReLU after it) fused
into the conv's epilogue. The int8 variants' outputs are compared (identical up to float rounding).
Speed only (random weights and calibration data); accuracy is bench/accuracy/accuracy_quantize.py's job.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)

import torch  # noqa: E402

SHAPES = {"resnet18": (1, 3, 224, 224), "resnet50": (1, 3, 224, 224), "mobilenet_v2": (1, 3, 224, 224),
          "vgg_audio": (1, 1, 64, 128)}
# (channels_last hand-off, residual add fused into the conv, uint8 hand-off)
VARIANTS = {"nchw f32": (False, False, False), "nchw u8": (False, False, True), "nhwc f32": (True, False, False),
            "nhwc f32 +res": (True, True, False), "nhwc u8 +res": (True, True, True)}


def time_once(model, x, repeats: int, clock) -> float:
    samples = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = clock()
            model(x)
            samples.append(clock() - t0)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,vgg_audio,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--clock", choices=("wall", "thread"), default=None,
                        help="wall: perf_counter; thread: this thread's CPU time (1 thread only; unaffected by "
                             "waiting for a core on a loaded machine). Default: thread with 1 thread, else wall")
    args = parser.parse_args()
    clock_name = args.clock or ("thread" if args.threads == 1 else "wall")
    if clock_name == "thread" and args.threads != 1:
        parser.error("--clock thread measures one thread's CPU time: use --threads 1")
    clock = time.thread_time if clock_name == "thread" else time.perf_counter
    meta = isa.setup()
    import edgeopt
    import edgeopt.quantize as quantize_module
    from edgeopt.models import get_model

    torch.set_num_threads(args.threads)
    edgeopt.set_num_threads(args.threads)
    print(f"threads {args.threads}, clock {clock_name}, edgeopt ISA {edgeopt.isa()}, torch "
          f"{meta.get('torch_cpu_capability')}, {args.rounds} rounds x {args.repeats} calls (median of medians)")
    for name in args.models.split(","):
        torch.manual_seed(0)
        links = 0
        shape = SHAPES[name]
        model = get_model(name).eval()
        calib = [torch.randn(*shape) for _ in range(4)]
        built = {"fp32 eager": model}
        for label in args.variants.split(","):
            channels_last, residual, u8 = VARIANTS[label]
            quantize_module.CHANNELS_LAST_BETWEEN_LAYERS = channels_last
            quantize_module.FUSE_RESIDUAL_ADD = residual
            built[label], report = edgeopt.quantize(model, calib, u8_between_layers=u8, weight_rounding="nearest",
                                                    progress=False)
            links = max(links, sum(r.u8_output for r in report))
            convs = sum(r.converted and r.kind.startswith("Conv") for r in report)
        quantize_module.CHANNELS_LAST_BETWEEN_LAYERS = quantize_module.FUSE_RESIDUAL_ADD = True
        x = torch.randn(*shape)
        with torch.no_grad():
            outs = {label: m(x) for label, m in built.items() if label != "fp32 eager"}
        first = next(iter(outs.values()))
        worst = min(quantize_module.sqnr_db(first, o) for o in outs.values())
        for m in built.values():  # warm-up
            time_once(m, x, 3, clock)
        rounds = {label: [] for label in built}
        for _ in range(args.rounds):
            for label, m in built.items():
                rounds[label].append(time_once(m, x, args.repeats, clock))
        base_label = next(label for label in rounds if label != "fp32 eager")
        base = statistics.median(rounds[base_label])
        print(f"\n{name} {shape}: {links} of {convs} quantized convs can hand uint8 on; int8 variants agree to "
              f"{worst:.0f} dB or better (inf = identical)")
        print(f"| variant | median ms | vs {base_label} | spread (IQR) ms |")
        print("|---|---|---|---|")
        for label, values in rounds.items():
            med = statistics.median(values)
            q = statistics.quantiles(values, n=4)
            print(f"| {label} | {1e3 * med:.2f} | {base / med:.2f}x | {1e3 * (q[2] - q[0]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
