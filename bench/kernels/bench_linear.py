"""pyperf benchmark of one Linear implementation over the shapes in shapes/linear_shapes.txt.

    python bench/kernels/bench_linear.py --impl edgeopt -o edgeopt.json [--m 1,8,64,256,1024] [--only NAME]

Implementations: eager (nn.Linear fp32), compile (torch.compile of it), torch_int8 (PyTorch's dynamic
int8 Linear, FBGEMM), edgeopt (QuantLinear, dynamic). Run them all and compare with run_linear.py.
Weights are packed / compiled outside the timer; the timed call is the layer's forward at batch M.
"""
from __future__ import annotations

import sys
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from edgeopt.perf.pyperf_runs import read_layer_shapes, record_metadata, time_forward  # noqa: E402

import pyperf  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

IMPLS = ("eager", "compile", "torch_int8", "edgeopt")
SHAPES_FILE = Path(__file__).resolve().parent / "shapes" / "linear_shapes.txt"
DEFAULT_M = "1,8,64,256,1024"


def read_shapes(path: Path = SHAPES_FILE) -> list[tuple[str, int, int]]:
    return read_layer_shapes(path)


def bench_name(layer: str, m: int, k: int, n: int) -> str:
    return f"{layer} M={m} K={k} N={n}"


def build(impl: str, k: int, n: int) -> nn.Module:
    torch.manual_seed(0)
    linear = nn.Linear(k, n).eval()
    if impl == "eager":
        return linear
    if impl == "compile":
        return torch.compile(linear)
    if impl == "torch_int8":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.quantized.engine = "x86"
            return torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)
    if impl == "edgeopt":
        from edgeopt.nn import QuantLinear

        return QuantLinear.from_float(linear)
    raise ValueError(impl)



def add_cmdline_args(cmd, args):
    cmd.extend(("--impl", args.impl, "--m", args.m))
    if args.only:
        cmd.extend(("--only", args.only))


def main() -> None:
    runner = pyperf.Runner(processes=4, values=5, warmups=1, min_time=0.05, add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument("--impl", choices=IMPLS, required=True)
    runner.argparser.add_argument("--m", default=DEFAULT_M, help="comma-separated row counts")
    runner.argparser.add_argument("--only", default="", help="comma-separated layer names to run")
    args = runner.parse_args()
    record_metadata(runner, args.impl)
    only = set(filter(None, args.only.split(",")))
    task = 0
    for layer, k, n in read_shapes():
        if only and layer not in only:
            continue
        for m in (int(v) for v in args.m.split(",")):
            # Build only in the worker that runs this benchmark (compile and packing are slow).
            mine = args.worker and args.worker_task == task
            module = build(args.impl, k, n) if mine else None
            x = torch.randn(m, k)
            if mine:
                time_forward(2, module, x)  # compile / first-call work stays out of the timings
            runner.bench_time_func(bench_name(layer, m, k, n), time_forward, module, x,
                                   metadata={"macs": str(m * k * n)})
            task += 1


if __name__ == "__main__":
    main()
