"""edgeopt.prune(model, sparsity=..., block=..., scope="global" | "layer"): magnitude pruning that pays.

Zeros only make a layer faster on an AVX2 CPU when they come in blocks that keep SIMD lanes full, so the
pruning granularity is a block of the layer's GEMM weight (out_features x in_features; for a conv,
out_channels x (kh * kw * in_channels), the NHWC im2col order the sparse kernels read). block=(1, 1) is
unstructured. The edgeopt sparse kernels skip whole (16 or 8 out x 1 in) fp32 / (16 or 8 out x 4 in) int8
blocks, so block=(16, 4) or (8, 4) is a shape whose zeros every kernel can use (see the block-sparse
sections of bench/NOTES.md).

    pruner = edgeopt.prune(model, sparsity=0.8, block=(16, 4))          # one shot, masks applied now
    pruner = edgeopt.prune(model, sparsity=0.9, block=(16, 4), steps=2000)  # gradual (cubic) schedule
    edgeopt.training.fit(model, data, None, config, callbacks=[pruner])   # pruner.step() after each step
    pruner.remove()                         # bake the zeros in, drop the hooks
    model, report = pruner.convert("int8", data=calibration_batches)   # the int8 lowering, sparse where faster

Masks are kept applied by forward pre-hooks that multiply the weight by its mask before every forward,
so an optimizer step that moves a pruned weight is undone before the weight is next used; the
state_dict keys do not change (a checkpoint loads into the unpruned model).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from edgeopt.passes.common import renamed_keyword
from edgeopt.passes.lowered import refuse_lowered
from edgeopt.passes.quantize.plan import kind
from edgeopt.passes.report import LayerReport, Report
from edgeopt.training.callbacks import Callback

SCOPES = ("global", "layer")
OWNER = "edgeopt.prune"


def gemm_view(weight: torch.Tensor) -> torch.Tensor:
    """The weight as the (out, in) matrix the kernels multiply: convs in NHWC im2col order (kh, kw, cin)."""
    if weight.dim() == 2:
        return weight
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def from_gemm_view(matrix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 2:
        return matrix
    o, i, kh, kw = like.shape
    return matrix.reshape(o, kh, kw, i).permute(0, 3, 1, 2)


def block_scores(matrix: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Mean |w| of each (bo x bi) block (edge blocks averaged over their real weights)."""
    bo, bi = block
    n, k = matrix.shape
    a = matrix.detach().abs().float()
    pad = (0, (-k) % bi, 0, (-n) % bo)
    total = nn.functional.pad(a, pad).reshape(math.ceil(n / bo), bo, math.ceil(k / bi), bi).sum(dim=(1, 3))
    count = nn.functional.pad(torch.ones_like(a), pad).reshape(total.shape[0], bo, total.shape[1], bi).sum(dim=(1, 3))
    return total / count


def expand_blocks(block_mask: torch.Tensor, block: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    bo, bi = block
    full = block_mask.repeat_interleave(bo, 0).repeat_interleave(bi, 1)
    return full[: shape[0], : shape[1]].contiguous()


def block_mask_for(matrix: torch.Tensor, block: tuple[int, int], sparsity: float) -> torch.Tensor:
    """Keep the largest-scoring blocks so that about `sparsity` of the weights are zero."""
    scores = block_scores(matrix, block)
    return expand_blocks(_keep_top(scores, sparsity), block, tuple(matrix.shape))


def _keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    flat = scores.flatten()
    n_prune = int(round(sparsity * flat.numel()))
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    return keep.reshape(scores.shape)


def prunable_layers(model: nn.Module, min_weights: int = 4096, skip=(), layers=None) -> dict[str, nn.Module]:
    """Linear and (ungrouped) Conv2d layers with at least `min_weights` weights, not named in `skip` (and
    named in `layers`, if given)."""
    out = {}
    for name, m in model.named_modules():
        if name in skip or (layers is not None and name not in layers):
            continue
        if type(m) is nn.Linear or (type(m) is nn.Conv2d and m.groups == 1):
            if m.weight.numel() >= min_weights:
                out[name] = m
    return out


class Pruner(Callback):
    """Holds the masks of a pruned model, keeps them applied, and raises sparsity on a schedule. As an
    edgeopt.training.fit callback it steps after every optimizer step (and, built with ramp=..., spreads
    its schedule over that fraction of the fit's steps)."""

    def __init__(self, model: nn.Module, sparsity: float, block=(1, 1), scope: str = "global", steps: int = 0,
                 start_sparsity: float = 0.0, update_every: int = 1, min_weights: int = 4096, skip=(),
                 max_layer_sparsity: float = 0.98, layers=None, ramp: float | None = None, **renamed):
        skip = renamed_keyword(renamed, "exclude", "skip", skip or None, OWNER) or ()
        if renamed:
            raise TypeError(f"{OWNER}() got unexpected keyword arguments {sorted(renamed)}")
        if ramp is not None and not 0.0 < ramp <= 1.0:
            raise ValueError(f"edgeopt.prune: ramp must be in (0, 1], got {ramp!r}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"edgeopt.prune: sparsity must be in [0, 1), got {sparsity!r}")
        if scope not in SCOPES:
            raise ValueError(f"edgeopt.prune: scope must be one of {SCOPES}, got {scope!r}")
        if isinstance(block, int):
            block = (block, block)
        block = tuple(int(b) for b in block)
        if len(block) != 2 or min(block) < 1:
            raise ValueError(f"edgeopt.prune: block must be (out, in) with positive sizes, got {block!r}")
        if steps < 0 or update_every < 1 or not 0.0 <= start_sparsity <= sparsity:
            raise ValueError("edgeopt.prune: need steps >= 0, update_every >= 1, 0 <= start_sparsity <= sparsity")
        self.model = model
        self.target = float(sparsity)
        self.block = block
        self.scope = scope
        self.steps = int(steps)
        self.start_sparsity = float(start_sparsity)
        self.update_every = int(update_every)
        self.max_layer_sparsity = float(max_layer_sparsity)
        refuse_lowered(model, OWNER, "prune")
        self.ramp = ramp
        self.layers = prunable_layers(model, min_weights, set(skip), None if layers is None else set(layers))
        if not self.layers:
            raise ValueError("edgeopt.prune: the model has no Linear or Conv2d layer large enough to prune "
                             f"(min_weights={min_weights})")
        self.masks: dict[str, torch.Tensor] = {}
        self._handles = []
        self.step_count = 0
        self.current = 0.0
        for name, m in self.layers.items():
            self.masks[name] = torch.ones_like(m.weight, dtype=torch.bool)
            self._handles.append(m.register_forward_pre_hook(self._hook_for(name)))
        self.update(self.start_sparsity if ramp is not None else self.sparsity_at(0))

    # ---- schedule ----
    def sparsity_at(self, step: int) -> float:
        """Zhu & Gupta's cubic schedule from start_sparsity to the target over `steps` (0: one shot)."""
        if self.steps == 0 or step >= self.steps:
            return self.target
        frac = 1.0 - step / self.steps
        return self.target + (self.start_sparsity - self.target) * frac ** 3

    def step(self) -> float:
        """Call once per optimizer step; recomputes the masks every `update_every` steps. Returns the sparsity."""
        self.step_count += 1
        if self.step_count % self.update_every == 0 or self.step_count == self.steps:
            s = self.sparsity_at(self.step_count)
            if s > self.current + 1e-9:
                self.update(s)
        self.apply()
        return self.current

    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Recompute every mask by magnitude for `sparsity` and zero the pruned weights."""
        views = {name: gemm_view(m.weight * self.masks[name]) for name, m in self.layers.items()}
        if self.scope == "layer":
            for name, v in views.items():
                self.masks[name] = from_gemm_view(block_mask_for(v, self.block, sparsity), self.layers[name].weight)
        else:
            # Normalised by each layer's mean |w|: raw magnitudes differ by layer (fan-in, BatchNorm), and
            # unnormalised global ranking emptied the last convs of the RAVDESS CNN (97.5%) at 80% overall.
            scores = {name: block_scores(v, self.block) / gemm_view(self.layers[name].weight).abs().mean().clamp_min(1e-12)
                      for name, v in views.items()}
            sizes = {name: self._block_sizes(v.shape) for name, v in views.items()}
            all_scores = torch.cat([s.flatten() for s in scores.values()])
            all_sizes = torch.cat([sizes[n].flatten() for n in scores])
            order = torch.argsort(all_scores, stable=True)
            cum = torch.cumsum(all_sizes[order], 0)
            n_prune = int(torch.searchsorted(cum, sparsity * float(all_sizes.sum()), right=True))
            keep = torch.ones_like(all_scores, dtype=torch.bool)
            keep[order[:n_prune]] = False
            offset = 0
            for name, s in scores.items():
                k = keep[offset: offset + s.numel()].reshape(s.shape)
                offset += s.numel()
                # No layer goes (nearly) all-zero: a dead layer cannot be fine-tuned back.
                if 1.0 - k.float().mean() > self.max_layer_sparsity:
                    k = _keep_top(s, self.max_layer_sparsity)
                self.masks[name] = from_gemm_view(expand_blocks(k, self.block, tuple(views[name].shape)),
                                                  self.layers[name].weight)
        self.current = sparsity
        self.apply()

    def _block_sizes(self, shape) -> torch.Tensor:
        bo, bi = self.block
        n, k = shape
        rows = torch.full((math.ceil(n / bo),), float(bo))
        cols = torch.full((math.ceil(k / bi),), float(bi))
        if n % bo:
            rows[-1] = n % bo
        if k % bi:
            cols[-1] = k % bi
        return rows[:, None] * cols[None, :]

    # ---- masks ----
    @torch.no_grad()
    def apply(self) -> None:
        for name, m in self.layers.items():
            m.weight.mul_(self.masks[name].to(m.weight.dtype))

    def _hook_for(self, name):
        def hook(module, _inputs):
            with torch.no_grad():
                module.weight.mul_(self.masks[name].to(module.weight.dtype))
        return hook

    def remove(self) -> nn.Module:
        """Zero the pruned weights for good and detach the hooks; returns the model."""
        self.apply()
        for h in self._handles:
            h.remove()
        self._handles = []
        return self.model

    def report(self) -> Report:
        """Per pruned layer its sparsity; the model's `sparsity` over all pruned weights."""
        report = Report(passes=[self.describe()])
        zeros, total = 0, 0
        for name, m in self.layers.items():
            mask = self.masks[name]
            z = int((~mask).sum())
            zeros += z
            total += mask.numel()
            row = LayerReport(name, kind(m), converted=z > 0, sparsity=z / mask.numel())
            row.applied = [f"pruned {100 * row.sparsity:.1f}% ({self.block[0]}x{self.block[1]} blocks)"]
            report.layers.append(row)
        report.sparsity = zeros / total
        report.notes.append(f"pruned {len(self.layers)} layers to {100 * report.sparsity:.1f}% sparsity (target "
                            f"{100 * self.target:.1f}%, block {self.block[0]}x{self.block[1]}, scope {self.scope})")
        return report

    def describe(self) -> str:
        schedule = f", {self.steps} steps" if self.steps else ""
        return f"prune({100 * self.target:g}%, block {self.block[0]}x{self.block[1]}, {self.scope}{schedule})"

    def convert(self, dtype: str = "int8", data=None, **kwargs):
        """Bake the masks in and lower the pruned layers (sparse kernels where measured faster):
        edgeopt.sparsify(model, data, dtype=dtype, layers=<the pruned layers>, **kwargs) -> (model, Report)."""
        self.remove()
        from edgeopt.passes.sparsify import sparsify

        data = renamed_keyword(kwargs, "example_input", "data", data, OWNER)
        return sparsify(self.model, data, dtype=dtype, layers=list(self.layers), **kwargs)

    # ---- as an edgeopt.training.fit callback ----
    def on_fit_start(self, state) -> None:
        if self.ramp is not None:  # the schedule over the first `ramp` of the fit's optimizer steps
            self.steps = max(1, int(round(self.ramp * state.total_steps)))
            self.step_count = 0

    def on_step_end(self, state) -> None:
        self.step()

    def ready(self, state) -> bool:
        """Epochs before the target sparsity is reached are not candidates for 'the best epoch'."""
        return self.current >= self.target - 1e-9

    def state_dict(self) -> dict:
        return {"masks": {k: v.clone() for k, v in self.masks.items()}, "step_count": self.step_count,
                "current": self.current, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if set(state["masks"]) != set(self.masks):
            raise ValueError("edgeopt.prune: the saved masks are for other layers "
                             f"({sorted(state['masks'])[:3]}... vs {sorted(self.masks)[:3]}...)")
        self.masks = {k: v.clone() for k, v in state["masks"].items()}
        self.step_count, self.current, self.steps = state["step_count"], state["current"], state["steps"]
        self.apply()


def prune(model: nn.Module, sparsity: float, block=(1, 1), scope: str = "global", steps: int = 0,
          **kwargs) -> Pruner:
    """Magnitude-prune the Linear/Conv2d layers of `model` (in place) to `sparsity` in (out, in) `block`s.

    scope="global" ranks blocks of all layers together (by mean |w| over the layer's mean |w|; no layer above max_layer_sparsity),
    "layer" prunes each layer to the same sparsity. steps > 0 starts at start_sparsity and reaches the
    target after `steps` calls of `Pruner.step()` (cubic schedule, Zhu & Gupta 2017). Returns the Pruner.
    """
    return Pruner(model, sparsity, block, scope, steps, **kwargs)


