"""What the saturation scheme costs: SQNR of int8 Linear layers under three quantization schemes.

    python bench/accuracy/accuracy_linear.py

  w7a8  edgeopt: weights in [-63, 63] per channel, activations full uint8 (exact with vpmaddubsw)
  w8a7  PyTorch/FBGEMM on AVX2 (reduce_range): weights [-127, 127], activations 7-bit [0, 127]
  w8a8  full 8-bit, which vpmaddubsw cannot compute exactly without VNNI (the reference point)

Each scheme is simulated exactly (integer values, float64 accumulation); the edgeopt column is checked
against the real kernel. Activations: Gaussian, MNIST pixels, and the hidden activations of an MLP.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

SCHEMES = {"w7a8 (edgeopt)": (63, 255), "w8a7 (PyTorch reduce_range)": (127, 127), "w8a8 (full)": (127, 255)}


def simulate(x: torch.Tensor, layer: nn.Linear, wmax: int, amax: int) -> torch.Tensor:
    w = layer.weight.detach().double()
    w_scale = w.abs().amax(1).clamp_min(1e-12) / wmax
    wq = torch.round(w / w_scale[:, None]).clamp(-wmax, wmax)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    a_scale = (hi - lo) / amax if hi > lo else 1.0
    zp = min(max(round(-lo / a_scale), 0), amax)
    xq = torch.clamp(torch.round(x.double() / a_scale) + zp, 0, amax)
    y = ((xq - zp) @ wq.T) * (a_scale * w_scale) + layer.bias.detach().double()
    return y.float()


def sqnr(ref: torch.Tensor, test: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.double().pow(2).mean() / (ref - test).double().pow(2).mean()))


def activation_sets() -> dict[str, tuple[torch.Tensor, nn.Linear]]:
    torch.manual_seed(0)
    sets = {"gaussian x, 1024->1024": (torch.randn(256, 1024), nn.Linear(1024, 1024))}
    try:
        from edgeopt.data import Mnist

        test = Mnist(split="test")
        images = torch.stack([test[i][0] for i in range(512)]).flatten(1)
        sets["MNIST pixels (normalised), 784->2048"] = (images, nn.Linear(784, 2048))
        from edgeopt.demo.mnist import trained_model

        mlp = trained_model("mlp", log=lambda *_: None)
        with torch.no_grad():
            hidden = mlp[2](mlp[1](mlp[0](images)))  # ReLU outputs of the first trained layer
        sets["trained MLP hidden layer, 2048->2048"] = (hidden, mlp[3])
    except Exception as exc:  # data or the cached demo model missing: say so, measure the rest
        print(f"(real-data rows skipped: {exc})")
    return sets


def main() -> None:
    from edgeopt.nn import QuantLinear

    names = list(SCHEMES)
    print(f"| activations, layer | {' | '.join(names)} | edgeopt kernel |")
    print("|---" * (len(names) + 2) + "|")
    for label, (x, layer) in activation_sets().items():
        with torch.no_grad():
            ref = layer(x)
            cells = [sqnr(ref, simulate(x, layer, *SCHEMES[n])) for n in names]
            kernel = sqnr(ref, QuantLinear.from_float(layer)(x))
        print(f"| {label} | " + " | ".join(f"{c:.1f} dB" for c in cells) + f" | {kernel:.1f} dB |")


if __name__ == "__main__":
    main()
