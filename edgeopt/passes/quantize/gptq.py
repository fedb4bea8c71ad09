"""GPTQ-style weight rounding: 7-bit per-channel weights rounded to minimise each layer's output error on
the calibration inputs, keeping a pruned layer's zeros zero."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Input rows (im2col patches) per layer for its Hessian, and the largest reduction size GPTQ is used for
# (cost grows as rows * K^2 + K^3; wide layers average their rounding errors anyway).
GPTQ_ROWS = 16384
GPTQ_MAX_K = 2304
GPTQ_BLOCK = 128
GPTQ_DAMP = 0.01
WEIGHT_ROUNDINGS = ("gptq", "nearest")


def input_rows(module: nn.Module, x: torch.Tensor, per_sample: int, generator) -> torch.Tensor:
    """Rows of the layer's reduction (im2col patches for a conv), at most `per_sample` per sample."""
    if isinstance(module, nn.Conv2d):
        picked = []
        for n in range(x.shape[0]):
            patches = F.unfold(x[n:n + 1], module.kernel_size, module.dilation, module.padding, module.stride)[0]
            if patches.shape[1] > per_sample:
                patches = patches[:, torch.randperm(patches.shape[1], generator=generator)[:per_sample]]
            picked.append(patches.T)
        return torch.cat(picked)
    return linear_rows(x, per_sample, generator)


def linear_rows(x: torch.Tensor, per_sample: int, generator) -> torch.Tensor:
    """input_rows for a linear reduction over the last dimension (any module)."""
    k = x.shape[-1]
    rows = x.reshape(-1, k)
    limit = per_sample * (x.shape[0] if x.dim() > 1 else 1)
    if rows.shape[0] > limit:
        rows = rows[torch.randperm(rows.shape[0], generator=generator)[:limit]]
    return rows


def gptq_applies(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        # grouped/depthwise filters are short rows with their own inputs; nearest rounding there
        k = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        return module.groups == 1 and not isinstance(module.padding, str) and k <= GPTQ_MAX_K
    return isinstance(module, nn.Linear) and module.in_features <= GPTQ_MAX_K


@torch.no_grad()
def gptq_round(weight: torch.Tensor, hessian: torch.Tensor, weight_max: int,
               keep_zeros: bool = False) -> torch.Tensor:
    """Weights on the symmetric per-output-channel grid (scale = row absmax / weight_max, as the
    quantized modules compute it) with rounding chosen to minimise the layer's output error on the
    calibration inputs, E||(W - Q) x||^2 with E[x x^T] ~ `hessian` (GPTQ, Frantar et al. 2022: round one
    input column at a time and spread its error over the columns not yet rounded). Each row's largest
    weight is pinned, so re-quantizing the result with absmax scales reproduces it exactly.
    keep_zeros: weights that are exactly zero (a pruned layer's blocks) stay zero; their neighbours
    absorb the error instead (as SparseGPT does with its mask)."""
    shape = weight.shape
    w = weight.detach().reshape(shape[0], -1).double().clone()
    rows, k = w.shape
    scale = (w.abs().amax(1) / weight_max).clamp_min(1e-30)
    original = w.clone()
    pinned = w.abs() == w.abs().amax(1, keepdim=True)
    kept = (w != 0) if keep_zeros else None
    h = hessian.double().clone()
    diag = torch.diagonal(h)
    diag[diag == 0] = 1.0  # inputs that were always zero: plain rounding for their weights
    diag += GPTQ_DAMP * float(diag.mean())
    try:
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except RuntimeError:  # numerically singular even after damping: nearest rounding
        return (torch.round(w / scale[:, None]).clamp(-weight_max, weight_max) * scale[:, None]).float().reshape(shape)
    q = torch.empty_like(w)
    for b0 in range(0, k, GPTQ_BLOCK):
        b1 = min(b0 + GPTQ_BLOCK, k)
        block = w[:, b0:b1].clone()
        errors = torch.empty_like(block)
        for i in range(b1 - b0):
            col = block[:, i]
            qc = torch.round(col / scale).clamp(-weight_max, weight_max) * scale
            if kept is not None:
                qc = torch.where(kept[:, b0 + i], qc, torch.zeros_like(qc))
            q[:, b0 + i] = qc
            err = (col - qc) / u[b0 + i, b0 + i]
            block[:, i:] -= err[:, None] * u[b0 + i, b0 + i:b1][None, :]
            block[pinned[:, b0:b1]] = original[:, b0:b1][pinned[:, b0:b1]]
            errors[:, i] = err
        if b1 < k:
            w[:, b1:] -= errors @ u[b0:b1, b1:]
            tail = pinned[:, b1:]
            w[:, b1:][tail] = original[:, b1:][tail]
    return q.float().reshape(shape)


__all__ = ["GPTQ_MAX_K", "GPTQ_ROWS", "WEIGHT_ROUNDINGS", "gptq_applies", "gptq_round", "input_rows", "linear_rows"]
