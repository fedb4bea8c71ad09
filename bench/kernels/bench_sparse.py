"""pyperf benchmark of one block-sparse-layer implementation over the shapes in shapes/sparse_shapes.txt.

    python bench/kernels/bench_sparse.py --impl sparse_fp32 -o sparse_fp32.json [--sparsity 0.5,0.7,0.8,0.9,0.95] [--only NAME]

Every contender multiplies the same pruned weight: random 16x4 blocks (16 output x 4 input features)
zeroed to the exact sparsity, the block the int8 sparse kernel skips (and a multiple of the fp32 16x1
block and of the 4x4 block torch's BSR needs on CPU). Implementations:
  dense_fp32   edgeopt dense fp32 kernel (fw_linear)        sparse_fp32  edgeopt block-sparse fp32 (sp_linear)
  dense_int8   edgeopt dense int8 kernel (qlinear)          sparse_int8  edgeopt block-sparse int8 (sp_qlinear)
  torch_linear nn.Linear fp32 (dense, eager)                torch_csr / torch_bsr  torch.sparse CSR / BSR(4x4) @ x^T
int8 runs u8 in -> u8 out with static parameters: the per-layer cost inside an int8 network, where the
previous layer hands over u8 (activation quantization, O(M*K) and not sparse, stays out of both).
Dense contenders are timed once per shape (their name carries s=0).
"""
from __future__ import annotations

import sys
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from edgeopt.perf.pyperf_runs import record_metadata  # noqa: E402

import numpy as np  # noqa: E402
import pyperf  # noqa: E402
import torch  # noqa: E402

IMPLS = ("dense_fp32", "sparse_fp32", "dense_int8", "sparse_int8", "torch_linear", "torch_csr", "torch_bsr")
DENSE = ("dense_fp32", "dense_int8", "torch_linear")
SHAPES_FILE = Path(__file__).resolve().parent / "shapes" / "sparse_shapes.txt"
DEFAULT_SPARSITY = "0.5,0.7,0.8,0.9,0.95"
BLOCK = (16, 4)


def read_shapes(path: Path = SHAPES_FILE) -> list[tuple[str, int, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        f = line.split("#", 1)[0].split()
        if f:
            rows.append((f[0], int(f[1]), int(f[2]), int(f[3])))
    return rows


def bench_name(layer: str, m: int, k: int, n: int, sparsity: float) -> str:
    return f"{layer} M={m} K={k} N={n} s={sparsity:g}"


def pruned_weight(k: int, n: int, sparsity: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) / k ** 0.5
    bo, bi = BLOCK
    nb_o, nb_i = -(-n // bo), -(-k // bi)
    blocks = nb_o * nb_i
    keep = torch.ones(blocks, dtype=torch.bool)
    keep[torch.randperm(blocks, generator=g)[: int(round(sparsity * blocks))]] = False
    mask = keep.reshape(nb_o, nb_i).repeat_interleave(bo, 0).repeat_interleave(bi, 1)[:n, :k]
    return (w * mask).contiguous()


def build(impl: str, m: int, k: int, n: int, sparsity: float, threads: int):
    """Returns a zero-argument callable running the layer once (weights packed outside the timer)."""
    from edgeopt._native import _C
    from edgeopt.nn._qparams import quantize_weight_per_channel

    w = pruned_weight(k, n, sparsity)
    bias = torch.randn(n) * 0.1
    x = torch.randn(m, k)
    if impl in ("dense_int8", "sparse_int8"):
        q, scale = quantize_weight_per_channel(w)
        xu8 = np.random.default_rng(0).integers(0, 256, (m, k)).astype(np.uint8)
        out = np.empty((m, n), np.uint8)
        if impl == "dense_int8":
            packed = _C.qs8_pack(q.numpy(), scale.numpy(), bias.numpy())
            fn = _C.qlinear
        else:
            packed = _C.sp_pack(q.numpy(), scale.numpy(), bias.numpy(), BLOCK[0])
            fn = _C.sp_qlinear
        return lambda: fn(xu8, packed, out, False, 0.02, 128, 0.0, float("inf"), 0.05, 0, threads)
    if impl in ("dense_fp32", "sparse_fp32"):
        xn, out = x.numpy(), np.empty((m, n), np.float32)
        if impl == "dense_fp32":
            packed = _C.fw_pack(w.numpy(), bias.numpy())
            return lambda: _C.fw_linear(xn, packed, out, float("-inf"), float("inf"), threads)
        packed = _C.sp_pack(w.numpy(), None, bias.numpy(), BLOCK[0])
        return lambda: _C.sp_linear(xn, packed, out, float("-inf"), float("inf"), threads)
    if impl == "torch_linear":
        lin = torch.nn.Linear(k, n).eval()
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(bias)

        def run():
            with torch.no_grad():
                return lin(x)
        return run
    if impl in ("torch_csr", "torch_bsr"):
        ws = w.to_sparse_csr() if impl == "torch_csr" else w.to_sparse_bsr((4, 4))
        xt = x.t()

        def run():
            with torch.no_grad():
                return torch.addmm(bias[:, None], ws, xt).t()
        return run
    raise ValueError(impl)


def time_calls(loops: int, fn) -> float:
    import time

    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return time.perf_counter() - t0


def add_cmdline_args(cmd, args):
    cmd.extend(("--impl", args.impl, "--sparsity", args.sparsity, "--threads", str(args.threads)))
    if args.only:
        cmd.extend(("--only", args.only))


def main() -> None:
    runner = pyperf.Runner(processes=2, values=5, warmups=1, min_time=0.05, add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument("--impl", choices=IMPLS, required=True)
    runner.argparser.add_argument("--sparsity", default=DEFAULT_SPARSITY)
    runner.argparser.add_argument("--threads", type=int, default=2)
    runner.argparser.add_argument("--only", default="")
    args = runner.parse_args()
    torch.set_num_threads(args.threads)
    record_metadata(runner, args.impl)
    runner.metadata["sparse_block"] = f"{BLOCK[0]}x{BLOCK[1]}"
    only = set(filter(None, args.only.split(",")))
    sparsities = [0.0] if args.impl in DENSE else [float(s) for s in args.sparsity.split(",")]
    task = 0
    for layer, m, k, n in read_shapes():
        if only and layer not in only:
            continue
        for s in sparsities:
            mine = args.worker and args.worker_task == task
            fn = build(args.impl, m, k, n, s, args.threads) if mine else None
            if mine:
                fn()
                fn()
            runner.bench_time_func(bench_name(layer, m, k, n, s), time_calls, fn,
                                   metadata={"macs": str(m * k * n), "sparsity": str(s)})
            task += 1


if __name__ == "__main__":
    main()
