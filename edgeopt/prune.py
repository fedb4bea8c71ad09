"""edgeopt.prune(model, sparsity=..., block=..., scope="global" | "layer"): magnitude pruning that pays.

Zeros only make a layer faster on an AVX2 CPU when they come in blocks that keep SIMD lanes full, so the
pruning granularity is a block of the layer's GEMM weight (out_features x in_features; for a conv,
out_channels x (kh * kw * in_channels), the NHWC im2col order the sparse kernels read). block=(1, 1) is
unstructured. The edgeopt sparse kernels skip whole (8 out x 1 in) fp32 / (8 out x 4 in) int8 blocks,
so block=(8, 4) is the shape whose zeros every kernel can use (see the block-sparse sections of bench/NOTES.md).

    pruner = edgeopt.prune(model, sparsity=0.8, block=(8, 4))          # one shot, masks applied now
    pruner = edgeopt.prune(model, sparsity=0.9, block=(8, 4), steps=2000)  # gradual (cubic) schedule
    for x, y in loader:                                                 # the user's own loop
        loss = ...; loss.backward(); opt.step()
        pruner.step()                       # raises sparsity on schedule; masks stay applied
    pruner.remove()                         # bake the zeros in, drop the hooks
    model, report = pruner.convert(dtype="int8", example_input=x[:1])  # sparse modules where faster

Masks are kept applied by forward pre-hooks that multiply the weight by its mask before every forward,
so an optimizer step that moves a pruned weight is undone before the weight is next used; the
state_dict keys do not change (a checkpoint loads into the unpruned model).
"""
from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, field

import torch
from torch import nn

SCOPES = ("global", "layer")


@dataclass
class PrunedLayer:
    name: str
    kind: str            # "linear" or "conv"
    shape: tuple         # GEMM view (out, in)
    sparsity: float      # fraction of weights zeroed by the mask


@dataclass
class PruneReport:
    target: float
    achieved: float      # over all pruned layers' weights
    block: tuple
    scope: str
    layers: list[PrunedLayer] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"pruned {len(self.layers)} layers to {100 * self.achieved:.1f}% sparsity "
                 f"(target {100 * self.target:.1f}%, block {self.block[0]}x{self.block[1]}, scope {self.scope})"]
        for layer in self.layers:
            lines.append(f"  {layer.name:32s} {layer.kind:6s} {layer.shape[0]:5d}x{layer.shape[1]:<6d} "
                         f"{100 * layer.sparsity:5.1f}%")
        return "\n".join(lines)


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


def prunable_layers(model: nn.Module, min_weights: int = 4096, exclude=()) -> dict[str, nn.Module]:
    """Linear and (ungrouped) Conv2d layers with at least `min_weights` weights, not named in `exclude`."""
    out = {}
    for name, m in model.named_modules():
        if name in exclude:
            continue
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            if m.weight.numel() >= min_weights:
                out[name] = m
    return out


class Pruner:
    """Holds the masks of a pruned model, keeps them applied, and raises sparsity on a schedule."""

    def __init__(self, model: nn.Module, sparsity: float, block=(1, 1), scope: str = "global", steps: int = 0,
                 start_sparsity: float = 0.0, update_every: int = 1, min_weights: int = 4096, exclude=(),
                 max_layer_sparsity: float = 0.98):
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
        self.layers = prunable_layers(model, min_weights, set(exclude))
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
        self.update(self.sparsity_at(0))

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

    def report(self) -> PruneReport:
        layers, zeros, total = [], 0, 0
        for name, m in self.layers.items():
            mask = self.masks[name]
            z = int((~mask).sum())
            zeros += z
            total += mask.numel()
            kind = "linear" if isinstance(m, nn.Linear) else "conv"
            layers.append(PrunedLayer(name, kind, tuple(gemm_view(m.weight).shape), z / mask.numel()))
        return PruneReport(self.target, zeros / total, self.block, self.scope, layers)

    def convert(self, dtype: str = "fp32", example_input: torch.Tensor | None = None, **kwargs):
        """Bake the masks in and swap the pruned layers for sparse edgeopt modules where measured faster:
        edgeopt.sparsify(model, dtype, example_input, layers=<the pruned layers>, **kwargs) -> (model, report)."""
        self.remove()
        from edgeopt.sparsify import sparsify

        return sparsify(self.model, dtype=dtype, example_input=example_input, layers=list(self.layers), **kwargs)


def prune(model: nn.Module, sparsity: float, block=(1, 1), scope: str = "global", steps: int = 0,
          **kwargs) -> Pruner:
    """Magnitude-prune the Linear/Conv2d layers of `model` (in place) to `sparsity` in (out, in) `block`s.

    scope="global" ranks blocks of all layers together (by mean |w| over the layer's mean |w|; no layer above max_layer_sparsity),
    "layer" prunes each layer to the same sparsity. steps > 0 starts at start_sparsity and reaches the
    target after `steps` calls of `Pruner.step()` (cubic schedule, Zhu & Gupta 2017). Returns the Pruner.
    """
    return Pruner(model, sparsity, block, scope, steps, **kwargs)


class _CallableModule(types.ModuleType):
    """`edgeopt.prune(model, ...)` works whether or not the submodule was imported first."""

    def __call__(self, *args, **kwargs):
        return prune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


# ---- structured channel pruning: a physically smaller dense model ----

# Ops a channel travels through unchanged (per-channel or channel-preserving): removing a channel at the
# producer removes the same channel here.
_CHANNEL_PRESERVING_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh,
                               nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
                               nn.Dropout2d, nn.Identity, nn.BatchNorm2d)
_CHANNEL_PRESERVING_FUNCTIONS = ("relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "max_pool2d",
                                 "avg_pool2d", "adaptive_avg_pool2d", "dropout", "flatten")


@dataclass
class ChannelPruneReport:
    name: str
    channels_before: int
    channels_after: int
    follower: str        # the layer whose inputs shrank with it


@torch.no_grad()
def prune_channels(model: nn.Module, amount: float, example_input: torch.Tensor, round_to: int = 8,
                   exclude=()) -> tuple[nn.Module, list[ChannelPruneReport]]:
    """Remove the `amount` fraction of output channels with the smallest L1 norm (times |BatchNorm gamma|)
    from every Conv2d whose channels flow, through channel-preserving ops only (BatchNorm, activations,
    pooling, dropout, flatten after global pooling), into exactly one Conv2d (groups=1) or Linear; that
    layer loses the same input channels. Returns a new, physically smaller dense model (torch.fx
    GraphModule) and a report; the model passed in is not changed. Fine-tune afterwards.
    Channels kept per layer are rounded up to a multiple of `round_to` (SIMD-friendly widths)."""
    import copy

    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp

    if not 0.0 <= amount < 1.0:
        raise ValueError(f"edgeopt.prune_channels: amount must be in [0, 1), got {amount!r}")
    gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    ShapeProp(gm).propagate(example_input)
    modules = dict(gm.named_modules())

    def module_of(node):
        return modules.get(node.target) if node.op == "call_module" else None

    def passes_channels(node) -> bool:
        m = module_of(node)
        name = getattr(node.target, "__name__", str(node.target))
        if isinstance(m, nn.Flatten) or (m is None and name == "flatten"):
            shape = node.args[0].meta["tensor_meta"].shape
            return len(shape) == 4 and shape[2] * shape[3] == 1  # after global pooling: channels == features
        if m is not None:
            return isinstance(m, _CHANNEL_PRESERVING_MODULES)
        if node.op in ("call_function", "call_method"):
            return name in _CHANNEL_PRESERVING_FUNCTIONS
        return False

    report = []
    for node in gm.graph.nodes:
        conv = module_of(node)
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or node.target in exclude:
            continue
        bns, cur, follower = [], node, None
        while True:
            users = list(cur.users)
            if len(users) != 1:
                break
            nxt = users[0]
            m = module_of(nxt)
            if isinstance(m, nn.Conv2d) and m.groups == 1 or isinstance(m, nn.Linear):
                follower = nxt
                break
            if not passes_channels(nxt):
                break
            if isinstance(m, nn.BatchNorm2d):
                bns.append(m)
            cur = nxt
        if follower is None:
            continue
        c = conv.out_channels
        keep_n = min(c, max(round_to, math.ceil(round(c * (1.0 - amount)) / round_to) * round_to))
        if keep_n >= c:
            continue
        score = conv.weight.abs().sum(dim=(1, 2, 3))
        for bn in bns:
            if bn.weight is not None:
                score = score * bn.weight.abs()
        keep = torch.sort(torch.argsort(score, descending=True)[:keep_n]).values
        conv.weight = nn.Parameter(conv.weight[keep].clone())
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias[keep].clone())
        conv.out_channels = keep_n
        for bn in bns:
            bn.num_features = keep_n
            for attr in ("weight", "bias"):
                if getattr(bn, attr) is not None:
                    setattr(bn, attr, nn.Parameter(getattr(bn, attr)[keep].clone()))
            bn.running_mean = bn.running_mean[keep].clone()
            bn.running_var = bn.running_var[keep].clone()
        f = module_of(follower)
        f.weight = nn.Parameter(f.weight[:, keep].clone())
        if isinstance(f, nn.Conv2d):
            f.in_channels = keep_n
        else:
            f.in_features = keep_n
        report.append(ChannelPruneReport(node.target, c, keep_n, follower.target))
    gm.recompile()
    return gm, report
