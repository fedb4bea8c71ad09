"""`edgeopt demo --task mnist`: Linear-heavy models (an MLP and a transformer encoder) trained on MNIST,
their Linear layers swapped for QuantLinear; prints the accuracy change and a before/after latency table.
Each library runs on this machine's native ISA here (no AVX2 masking), unlike the speech demo.

The latency here is a quick interactive measurement (median of timed calls); `bench/` holds the
pyperf benchmarks that back published figures.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.files import atomic_save
from edgeopt.cli_args import positive_float, positive_int

SEED = 0


@dataclass
class DemoModel:
    name: str
    registry_name: str | None
    kwargs: dict
    epochs: int
    train_subset: int
    lr: float


def build_mlp(in_features: int = 784, hidden: int = 2048, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))


DEMO_MODELS = {
    # Sized so a first run trains both in about two minutes on 2 cores; later runs load the cache.
    "mlp": DemoModel("MLP 784-2048-2048-10", None, {}, epochs=1, train_subset=20000, lr=2e-3),
    "transformer": DemoModel("ViT encoder (dim 192, 2 blocks, 16 tokens)", "vit_tiny",
                             dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, depth=2), epochs=3,
                             train_subset=20000, lr=1e-3),
}


def _build(spec: DemoModel) -> nn.Module:
    if spec.registry_name is None:
        return build_mlp()
    from edgeopt.models import get_model

    return get_model(spec.registry_name, **spec.kwargs)


def trained_model(key: str, log=print) -> nn.Module:
    """The demo model trained on MNIST, from the cache or trained now (a minute or two, shown live)."""
    from edgeopt.data import Mnist
    from edgeopt.models.checkpoint import cache_dir
    from edgeopt.training.loop import FitConfig, fit

    spec = DEMO_MODELS[key]
    recipe = f"{key}-{spec.kwargs.get('patch_size', '')}-e{spec.epochs}-n{spec.train_subset}-lr{spec.lr}-seed{SEED}"
    path = cache_dir() / "demo" / f"{recipe}.pt"
    model = _build(spec)
    if path.exists():
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state)
        log(f"  {spec.name}: loaded from {path}")
        return model.eval()
    log(f"  {spec.name}: training on MNIST ({spec.train_subset} images, {spec.epochs} epochs; cached afterwards)")
    train = torch.utils.data.Subset(Mnist(split="train"), range(spec.train_subset))
    fit(model, train, None, FitConfig(epochs=spec.epochs, batch_size=64, lr=spec.lr, seed=SEED, select_best=False),
        log=lambda msg: log("    " + msg))
    atomic_save(model.state_dict(), path)
    return model.eval()


@torch.no_grad()
def predictions(model: nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([model(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])


@torch.no_grad()
def median_latency_ms(model: nn.Module, x: torch.Tensor, seconds: float, progress) -> float:
    for _ in range(3):  # warm-up: first calls allocate and wake threads
        model(x)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
        progress()
    return 1e3 * statistics.median(times)


def torch_dynamic_int8(model: nn.Module) -> nn.Module:
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def run(args) -> int:
    import copy

    from edgeopt import info
    from edgeopt.data import Mnist
    from edgeopt.progress import Progress
    from edgeopt.quantize_linear import quantize_linear_layers
    from edgeopt.threads import get_num_threads

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    facts = info.collect()
    print(f"edgeopt demo -- {facts['cpu']}, edgeopt path {facts['edgeopt_isa']}, "
          f"torch path {facts['torch_cpu_capability']}, {get_num_threads()} threads\n")
    keys = [k.strip() for k in args.models.split(",")]
    unknown = [k for k in keys if k not in DEMO_MODELS]
    if unknown:
        raise SystemExit(f"edgeopt demo: unknown model(s) {unknown}; choose from {sorted(DEMO_MODELS)}")
    batches = [int(b) for b in args.batch.split(",")]

    print("1/3 models")
    test = Mnist(split="test")
    images = torch.stack([test[i][0] for i in range(args.eval_images)])
    labels = torch.tensor([int(test[i][1]) for i in range(args.eval_images)])
    variants = {}
    for key in keys:
        fp32 = trained_model(key)
        int8, report = quantize_linear_layers(copy.deepcopy(fp32), mode="dynamic")
        print(f"  {DEMO_MODELS[key].name}: {sum(r.converted for r in report)} of {len(report)} Linear layers "
              "-> edgeopt QuantLinear")
        variants[key] = {"fp32 eager": fp32, "torch int8 (dynamic)": torch_dynamic_int8(fp32), "edgeopt int8": int8}

    print(f"\n2/3 accuracy on {args.eval_images} MNIST test images")
    print(f"  {'model':44s} {'variant':22s} {'accuracy':>9s} {'agrees w/ fp32':>15s}")
    for key in keys:
        ref = predictions(variants[key]["fp32 eager"], images)
        for variant, model in variants[key].items():
            pred = predictions(model, images)
            acc = (pred == labels).float().mean().item()
            agree = (pred == ref).float().mean().item()
            print(f"  {DEMO_MODELS[key].name:44s} {variant:22s} {100 * acc:8.2f}% {100 * agree:14.2f}%")

    print(f"\n3/3 latency (median of {args.cell_seconds:.1f} s of calls per cell)")
    rows = []
    steps = len(keys) * len(batches) * 3
    with Progress(steps, "timing") as bar:
        for key in keys:
            for batch in batches:
                x = images[:1].repeat(batch, 1, 1, 1) if batch > len(images) else images[:batch]
                cells = {}
                for variant, model in variants[key].items():
                    cells[variant] = median_latency_ms(model, x, args.cell_seconds, lambda: None)
                    bar.advance()
                rows.append((key, batch, cells))
    print(f"\n  {'model':44s} {'batch':>5s} {'fp32 ms':>9s} {'torch int8 ms':>14s} {'edgeopt ms':>11s} "
          f"{'vs fp32':>8s} {'vs torch int8':>14s} {'pred/s':>9s}")
    for key, batch, cells in rows:
        fp32, tq, eo = cells["fp32 eager"], cells["torch int8 (dynamic)"], cells["edgeopt int8"]
        print(f"  {DEMO_MODELS[key].name:44s} {batch:5d} {fp32:9.3f} {tq:14.3f} {eo:11.3f} {fp32 / eo:7.2f}x "
              f"{tq / eo:13.2f}x {1e3 * batch / eo:9.0f}")
    print("\nQuick timing in one process; for published figures run the pyperf benchmarks in bench/ (see README).")
    return 0


def add_arguments(p) -> None:
    """Options of `--task mnist` (added to `edgeopt demo`'s parser)."""
    g = p.add_argument_group("--task mnist")
    g.add_argument("--models", default="mlp,transformer", help="comma-separated: " + ", ".join(DEMO_MODELS))
    g.add_argument("--batch", default="1,64", help="comma-separated batch sizes to time")
    g.add_argument("--cell-seconds", type=positive_float, default=1.0, help="timing budget per table cell")
    g.add_argument("--eval-images", type=positive_int, default=10000, help="MNIST test images for the accuracy table")
