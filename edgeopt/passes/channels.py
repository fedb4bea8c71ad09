"""Structured channel pruning: a physically smaller dense model, residual connections included.

Channels are followed through the traced graph as *channel spaces*: a conv's output starts one; ops that
keep channels as they are (BatchNorm, activations, pooling, dropout, a depthwise conv, flatten after global
pooling) pass it on; an elementwise add or multiply of two tensors (a ResNet block's `out + identity`)
joins the spaces of its operands into one, because both must keep the same channels. Every conv writing
into a space loses the same channels, every BatchNorm / depthwise conv inside it the same ones, and every
conv or linear layer reading it the same input channels -- the dependency groups of SparseML, NNCF and
torch-pruning. A space that reaches anything else (concatenation, reshapes, the model's output, an op
that is not known to keep channels) is left whole.
"""
from __future__ import annotations

import copy
import math
import operator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgeopt.passes.common import renamed_keyword
from edgeopt.passes.quantize.plan import kind
from edgeopt.passes.report import LayerReport, Report

OWNER = "edgeopt.prune_channels"

# Ops a channel travels through unchanged (per-channel or channel-preserving).
_CHANNEL_PRESERVING_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh,
                               nn.Hardtanh, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                               nn.Dropout, nn.Dropout2d, nn.Identity, nn.BatchNorm2d)
_CHANNEL_PRESERVING_FUNCTIONS = ("relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "clamp",
                                 "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "dropout", "flatten",
                                 "contiguous")
_JOINING = (operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul)
_JOINING_METHODS = ("add", "add_", "mul", "mul_")


class _Spaces:
    """Union-find over channel spaces."""

    def __init__(self):
        self.parent: list[int] = []
        self.locked: set[int] = set()

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            if b in self.locked:
                self.locked.add(a)
        return a

    def lock(self, a: int) -> None:
        self.locked.add(self.find(a))

    def is_locked(self, a: int) -> bool:
        return self.find(a) in self.locked


def _depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


@torch.no_grad()
def prune_channels(model: nn.Module, amount: float, data=None, round_to: int = 8, skip=(),
                   **renamed) -> tuple[nn.Module, Report]:
    """Remove the `amount` fraction of output channels with the smallest score from every channel space
    (see the module docstring) that can shrink; returns a new, physically smaller dense model (torch.fx
    GraphModule) and a Report (a row per conv that lost output channels, `channels` = (before, after)).
    The model passed in is not changed. Fine-tune afterwards.

    A channel's score is the sum over the convs writing the space of its filter's L1 norm times |gamma| of
    the BatchNorm right after the conv, each conv's scores divided by their mean. Channels kept per space
    are rounded up to a multiple of `round_to` (SIMD-friendly widths). data: one model input (shapes);
    `example_input=` is its former name. skip: convs whose output channels must stay (their whole space
    stays); `exclude=` is its former name."""
    data = renamed_keyword(renamed, "example_input", "data", data, OWNER)
    skip = renamed_keyword(renamed, "exclude", "skip", skip or None, OWNER) or ()
    if renamed:
        raise TypeError(f"{OWNER}() got unexpected keyword arguments {sorted(renamed)}")
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"edgeopt.prune_channels: amount must be in [0, 1), got {amount!r}")
    if data is None:
        raise ValueError(f"{OWNER}: data (one model input) is required for the feature-map shapes")
    gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    ShapeProp(gm).propagate(data)
    modules = dict(gm.named_modules())
    spaces = _Spaces()
    space_of: dict[fx.Node, int] = {}
    producers: dict[int, list[tuple[fx.Node, nn.Module]]] = {}   # space created by this conv
    members: list[tuple[int, nn.Module]] = []                    # BatchNorms / depthwise convs in a space
    consumers: list[tuple[int, nn.Module]] = []                  # convs / linears reading a space
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def meta_shape(n):
        meta = n.meta.get("tensor_meta") if isinstance(n, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def lock_inputs(node):
        for a in node.all_input_nodes:
            if a in space_of:
                spaces.lock(space_of[a])

    for node in gm.graph.nodes:
        m = modules.get(node.target) if node.op == "call_module" else None
        args = [a for a in node.args if isinstance(a, fx.Node)]
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        shape = meta_shape(node)
        stateful = m is not None and (any(True for _ in m.parameters()) or any(True for _ in m.buffers()))
        if stateful and calls.get(node.target, 0) > 1:  # one set of weights at several places: leave it
            lock_inputs(node)
            if shape is not None and len(shape) in (2, 4):
                space_of[node] = spaces.new()
                spaces.lock(space_of[node])
            continue
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            if first in space_of:
                consumers.append((space_of[first], m))
            s = space_of[node] = spaces.new()
            producers[s] = [(node, m)]
            if node.target in skip or m.padding_mode != "zeros":
                spaces.lock(s)
            continue
        if isinstance(m, nn.Linear):
            if first in space_of and meta_shape(first) is not None and len(meta_shape(first)) == 2:
                consumers.append((space_of[first], m))
            else:
                lock_inputs(node)
            continue
        if _depthwise(m) or isinstance(m, nn.BatchNorm2d):
            if first in space_of:
                space_of[node] = space_of[first]
                members.append((space_of[first], m))
            continue
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        if m is not None and isinstance(m, (nn.Flatten,)) or (m is None and name == "flatten"):
            src = meta_shape(first)
            if first in space_of and src is not None and len(src) == 4 and src[2] * src[3] == 1:
                space_of[node] = space_of[first]
            else:
                lock_inputs(node)
            continue
        if isinstance(m, _CHANNEL_PRESERVING_MODULES) or (m is None and node.op in ("call_function", "call_method")
                                                          and name in _CHANNEL_PRESERVING_FUNCTIONS):
            if first in space_of:
                space_of[node] = space_of[first]
            continue
        joining = (node.op == "call_function" and node.target in _JOINING) or (
            node.op == "call_method" and node.target in _JOINING_METHODS)
        if joining:
            tensors = [a for a in args if a in space_of]
            shapes = {meta_shape(a) for a in args}
            if len(tensors) == len(args) and len(shapes) == 1 and tensors:
                s = space_of[tensors[0]]
                for other in tensors[1:]:
                    s = spaces.join(s, space_of[other])
                space_of[node] = s
                continue
            if len(tensors) == 1 and len(args) == 1:  # tensor op scalar
                space_of[node] = space_of[tensors[0]]
                continue
        lock_inputs(node)  # anything else: concatenation, reshape, the output, unknown ops

    groups: dict[int, dict] = {}
    for s, prods in producers.items():
        groups.setdefault(spaces.find(s), {"producers": [], "members": [], "consumers": []})["producers"] += prods
    for s, m in members:
        groups.setdefault(spaces.find(s), {"producers": [], "members": [], "consumers": []})["members"].append(m)
    for s, m in consumers:
        groups.setdefault(spaces.find(s), {"producers": [], "members": [], "consumers": []})["consumers"].append(m)

    report = Report(passes=[f"prune_channels({100 * amount:g}%)"])
    for root, group in groups.items():
        prods = group["producers"]
        if root in spaces.locked or not prods or not group["consumers"]:
            continue
        c = prods[0][1].out_channels
        keep_n = min(c, max(round_to, math.ceil(round(c * (1.0 - amount)) / round_to) * round_to))
        if keep_n >= c:
            continue
        score = torch.zeros(c, dtype=torch.float64)
        for node, conv in prods:
            s = conv.weight.detach().abs().sum(dim=(1, 2, 3)).double()
            users = list(node.users)
            bn = modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
            if isinstance(bn, nn.BatchNorm2d) and bn.weight is not None:
                s = s * bn.weight.detach().abs().double()
            score += s / s.mean().clamp_min(1e-30)
        keep = torch.sort(torch.argsort(score, descending=True, stable=True)[:keep_n]).values
        for _, conv in prods:
            _keep_outputs(conv, keep)
        for m in group["members"]:
            _keep_outputs(m, keep)
        for m in group["consumers"]:
            _keep_inputs(m, keep)
        names = [node.target for node, _ in prods]
        readers = [n for n, mod in modules.items() if any(mod is x for x in group["consumers"])]
        for node, conv in prods:
            row = LayerReport(node.target, kind(conv), converted=True, channels=(c, keep_n))
            row.applied = [f"channels {c}->{keep_n}" + (f" (with {', '.join(n for n in names if n != node.target)})"
                                                       if len(names) > 1 else "")]
            row.reason = f"inputs shrink in {', '.join(readers)}"
            report.layers.append(row)
    gm.recompile()
    return gm, report


def _keep_outputs(m: nn.Module, keep: torch.Tensor) -> None:
    n = int(keep.numel())
    if isinstance(m, nn.BatchNorm2d):
        m.num_features = n
        for attr in ("weight", "bias"):
            if getattr(m, attr) is not None:
                setattr(m, attr, nn.Parameter(getattr(m, attr)[keep].clone()))
        if m.running_mean is not None:
            m.running_mean = m.running_mean[keep].clone()
            m.running_var = m.running_var[keep].clone()
        return
    m.weight = nn.Parameter(m.weight[keep].clone())
    if m.bias is not None:
        m.bias = nn.Parameter(m.bias[keep].clone())
    m.out_channels = n
    if m.groups > 1:  # a depthwise conv inside the space: one filter per kept channel
        m.in_channels = m.groups = n


def _keep_inputs(m: nn.Module, keep: torch.Tensor) -> None:
    m.weight = nn.Parameter(m.weight[:, keep].clone())
    if isinstance(m, nn.Conv2d):
        m.in_channels = int(keep.numel())
    else:
        m.in_features = int(keep.numel())


__all__ = ["prune_channels"]
