"""pyperf benchmark of whole Linear-heavy models at batch 1, for one implementation.

    python bench/threads/bench_model.py --impl edgeopt -o edgeopt.json

Models: mlp (1024-4096-4096-1024, batch 1, the MLP of MEASURING.md), block (a ViT-Tiny encoder block,
197 tokens x 192), and -- for --impl edgeopt only -- mixed (fp32 nn.Linear and QuantLinear layers
alternating, 64 x 2048) with its two halves timed alone, to show whether torch's and edgeopt's thread
pools slow each other down.
"""
from __future__ import annotations

import sys
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
import edgeopt  # noqa: E402,F401  (before torch, as users should: it tunes torch's OpenMP spin, see README)
from edgeopt.perf.pyperf_runs import record_metadata, time_forward  # noqa: E402

import pyperf  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

IMPLS = ("eager", "torch_int8", "edgeopt")


def mlp() -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1024))
    return model, torch.randn(1, 1024)


def block() -> tuple[nn.Module, torch.Tensor]:
    from edgeopt.models.vit import Block

    return Block(192, 3, 4.0), torch.randn(1, 197, 192)


def mixed_layers() -> list[nn.Module]:
    torch.manual_seed(1)
    return [nn.Linear(2048, 2048) for _ in range(6)]


def convert(model: nn.Module, impl: str) -> nn.Module:
    model = model.eval()
    if impl == "eager":
        return model
    if impl == "torch_int8":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.quantized.engine = "x86"
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    from edgeopt.quantize_linear import quantize_linear_layers

    return quantize_linear_layers(model)[0]


def mixed_variants() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    from edgeopt.nn import QuantLinear

    layers = mixed_layers()
    alternating = [layer if i % 2 == 0 else QuantLinear.from_float(layer) for i, layer in enumerate(layers)]
    x = torch.randn(64, 2048)
    return {
        "mixed torch+edgeopt": (nn.Sequential(*alternating).eval(), x),
        "mixed: torch layers alone": (nn.Sequential(*alternating[0::2]).eval(), x),
        "mixed: edgeopt layers alone": (nn.Sequential(*alternating[1::2]).eval(), x),
    }



def main() -> None:
    runner = pyperf.Runner(processes=4, values=5, warmups=1, min_time=0.05,
                           add_cmdline_args=lambda cmd, args: cmd.extend(("--impl", args.impl)))
    runner.argparser.add_argument("--impl", choices=IMPLS, required=True)
    args = runner.parse_args()
    record_metadata(runner, args.impl)
    torch.manual_seed(0)
    builders = {"mlp 1024-4096-4096-1024 batch 1": mlp, "vit-tiny block 197x192": block}
    task = 0
    for name, make in builders.items():
        mine = args.worker and args.worker_task == task
        model, x = make() if mine else (None, None)
        if mine:
            model = convert(model, args.impl)
            time_forward(3, model, x)
        runner.bench_time_func(name, time_forward, model, x)
        task += 1
    if args.impl == "edgeopt":
        variants = mixed_variants() if args.worker else {}
        for name in ("mixed torch+edgeopt", "mixed: torch layers alone", "mixed: edgeopt layers alone"):
            model, x = variants.get(name, (None, None))
            if model is not None and args.worker_task == task:
                time_forward(3, model, x)
            runner.bench_time_func(name, time_forward, model, x)
            task += 1


if __name__ == "__main__":
    main()
