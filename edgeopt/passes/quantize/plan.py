"""Planning the int8 lowering on the traced graph: which layers can be lowered, which BatchNorm folds into
which layer, which activation and residual add each layer's epilogue can take."""
from __future__ import annotations

import math
import operator
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeopt.nn.low_rank_linear import LowRankLinear
from edgeopt.passes.report import LayerReport

# A conv whose output sums fewer products than this (in_channels/groups * kh * kw, e.g. a 3x3 filter on a
# one-channel spectrogram) stays float, with its BatchNorm folded: its 7-bit weights have too few terms to
# average their rounding error (the RAVDESS stem: 33 dB alone, the largest loss in the model) and the
# float layer is faster there (1->32 3x3 on 64x128: 150 us fp32 vs 500 us int8, batch 1, 1 thread).
# Depthwise convs run on a kernel with full 8-bit weights and are converted.
MIN_INT8_REDUCTION = 16


@dataclass
class Layer:
    """One layer of the model as the lowering sees it."""
    name: str
    module: nn.Module
    node: fx.Node | None = None
    convertible: bool = True
    reason: str = ""
    bn_name: str | None = None
    bn_node: fx.Node | None = None
    act: str | tuple[float, float] | None = None
    act_node: fx.Node | None = None
    folded: nn.Module | None = None            # float layer with BN folded in (the SQNR reference)
    report: LayerReport | None = None
    keep_float: str = ""                       # why it stays float (BN still folded) although it could convert
    add_node: fx.Node | None = None            # `out + residual` the layer's epilogue can take
    candidates: dict[str, nn.Module] = field(default_factory=dict)   # kernel name -> module
    kernel: str | None = None                  # the chosen candidate


def kind(m: nn.Module) -> str:
    if isinstance(m, LowRankLinear):
        return f"LowRankLinear {m.in_features}->{m.out_features} r{m.rank}"
    if isinstance(m, nn.Linear):
        return f"{type(m).__name__} {m.in_features}->{m.out_features}"
    if isinstance(m, nn.modules.conv._ConvNd):
        ks = "x".join(str(k) for k in m.kernel_size)
        extra = ""
        if any(s != 1 for s in m.stride):
            extra += f" s{m.stride[0]}" if len(set(m.stride)) == 1 else f" s{m.stride}"
        if m.groups != 1:
            extra += " dw" if m.groups == m.in_channels == m.out_channels else f" g{m.groups}"
        return f"{type(m).__name__} {m.in_channels}->{m.out_channels} {ks}{extra}"
    return type(m).__name__


def is_target(m: nn.Module) -> bool:
    """The layer types the lowering converts."""
    return type(m) in (nn.Conv2d, nn.Linear, LowRankLinear)


def looks_like_layer(m: nn.Module) -> bool:
    """Layers the report lists (converted or not)."""
    return isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, LowRankLinear))


def depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def activation_of(node: fx.Node, modules: dict[str, nn.Module]):
    """The activation `node` applies to its first argument, as the edgeopt modules take it, or None."""
    def const(v):
        return v is None or isinstance(v, (int, float))

    def clamp_spec(lo, hi):
        if not (const(lo) and const(hi)) or (lo is None and hi is None):
            return None
        lo = -math.inf if lo is None else float(lo)
        hi = math.inf if hi is None else float(hi)
        if lo > hi:
            return None
        if lo == 0.0 and hi == math.inf:
            return "relu"
        if lo == 0.0 and hi == 6.0:
            return "relu6"
        return (lo, hi)

    if node.op == "call_module":
        m = modules.get(node.target)
        if type(m) is nn.ReLU:
            return "relu"
        if type(m) is nn.ReLU6:
            return "relu6"
        if type(m) is nn.Hardtanh:
            return clamp_spec(m.min_val, m.max_val)
        return None
    args, kwargs = node.args[1:], node.kwargs
    if node.op == "call_function":
        if node.target in (torch.relu, torch.relu_, F.relu, F.relu_):
            return "relu"
        if node.target is F.relu6:
            return "relu6"
        if node.target in (F.hardtanh, F.hardtanh_):
            lo = args[0] if len(args) > 0 else kwargs.get("min_val", -1.0)
            hi = args[1] if len(args) > 1 else kwargs.get("max_val", 1.0)
            return clamp_spec(lo, hi)
        if node.target in (torch.clamp, torch.clip, torch.clamp_):
            lo = args[0] if len(args) > 0 else kwargs.get("min")
            hi = args[1] if len(args) > 1 else kwargs.get("max")
            return clamp_spec(lo, hi)
        return None
    if node.op == "call_method":
        if node.target in ("relu", "relu_"):
            return "relu"
        if node.target in ("clamp", "clamp_", "clip", "clip_"):
            lo = args[0] if len(args) > 0 else kwargs.get("min")
            hi = args[1] if len(args) > 1 else kwargs.get("max")
            return clamp_spec(lo, hi)
    return None


def apply_activation(y: torch.Tensor, act) -> torch.Tensor:
    if act in (None, "none"):
        return y
    if act == "relu":
        return y.clamp_min(0)
    if act == "relu6":
        return y.clamp(0, 6)
    return y.clamp(act[0], act[1])


class Tracer(fx.Tracer):
    # edgeopt's own modules (LowRankLinear from edgeopt.low_rank, already-lowered layers) are called as
    # they are: tracing into them would hit their Python control flow and fail the whole model.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("edgeopt.nn.") or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    return fx.GraphModule(model, Tracer().trace(model), type(model).__name__)


def find_layers(root: nn.Module, gm: fx.GraphModule | None, skip, only=None) -> list[Layer]:
    """Every Conv/Linear-like module of `root`, with whether it can be converted. `only`: if given, the
    names of the layers to convert (the others are listed, left as they are)."""
    modules = dict(root.named_modules())
    layers: dict[str, Layer] = {}
    called: Counter = Counter()
    attr_users: set[str] = set()
    if gm is not None:
        for node in gm.graph.nodes:
            if node.op == "call_module":
                called[node.target] += 1
            elif node.op == "get_attr":
                attr_users.add(node.target)
    leaf_parents = {}  # module name -> the torch.nn leaf module (not traced into) that contains it
    for name, m in root.named_modules():
        if gm is not None and called.get(name) and not is_target(m) and m.__module__.startswith("torch.nn"):
            for sub, _ in m.named_modules(prefix=name):
                if sub != name:
                    leaf_parents[sub] = name
    for name, m in root.named_modules():
        if not looks_like_layer(m):
            continue
        layer = Layer(name, m)
        layer.report = LayerReport(name, kind(m))
        if name in skip:
            layer.convertible, layer.reason = False, "skipped by request"
        elif only is not None and name not in only:
            layer.convertible, layer.reason = False, "not among the layers asked for"
        elif name in leaf_parents:
            layer.convertible = False
            layer.reason = f"inside {type(modules[leaf_parents[name]]).__name__}, which uses its weights directly"
        elif not is_target(m):
            if isinstance(m, nn.Linear):
                layer.reason = f"{type(m).__name__} (a subclass of nn.Linear) may be used through its weights"
            else:
                layer.reason = f"no edgeopt int8 module for {type(m).__name__}"
            layer.convertible = False
        elif isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            layer.convertible, layer.reason = False, f"padding_mode={m.padding_mode!r} (only 'zeros' is supported)"
        elif gm is not None and any(a == name or a.startswith(name + ".") for a in attr_users):
            layer.convertible, layer.reason = False, "the model reads its parameters directly"
        elif gm is not None and not called.get(name):
            layer.convertible, layer.reason = False, "not called by the model's forward"
        elif isinstance(m, nn.Conv2d) and not depthwise(m) and (
                m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] < MIN_INT8_REDUCTION):
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            layer.keep_float = (f"kept float: {k} products per output are too few for 7-bit weights "
                                f"(< {MIN_INT8_REDUCTION}), and float is faster there")
        layers[name] = layer
    if gm is not None:
        for node in gm.graph.nodes:
            if node.op == "call_module" and node.target in layers and called[node.target] == 1:
                layers[node.target].node = node
    return list(layers.values())


def check_calibrated(layers: list[Layer], stats) -> None:
    for layer in layers:
        if not layer.convertible:
            continue
        s = stats[layer.name]
        if s.dtype is None:
            layer.convertible, layer.reason = False, "not reached by the calibration data"
        elif s.dtype != torch.float32:
            layer.convertible, layer.reason = False, f"its input is {s.dtype}, the int8 kernels take float32"
        elif s.count == 0:
            layer.convertible, layer.reason = False, "its input was empty on every calibration batch"


def plan_fusion(gm: fx.GraphModule, layers: list[Layer], modules, stats) -> None:
    """BatchNorm folding and activation fusion, where the graph shows a layer's output goes nowhere else."""
    called = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for layer in layers:
        node = layer.node
        if not layer.convertible or node is None:
            continue  # modules called at several places keep their own semantics: converted, not fused
        producer = node
        users = list(producer.users)
        if len(users) == 1 and users[0].op == "call_module" and users[0].args and users[0].args[0] is producer:
            bn = modules.get(users[0].target)
            fits = (type(layer.module) is nn.Conv2d and type(bn) is nn.BatchNorm2d) or (
                type(layer.module) is nn.Linear and type(bn) is nn.BatchNorm1d
                and stats[layer.name].out_ndim == 2)
            if fits and called[users[0].target] == 1 and bn.running_mean is not None:
                layer.bn_name, layer.bn_node = users[0].target, users[0]
                producer = users[0]
        users = list(producer.users)
        if len(users) == 1 and users[0].args and users[0].args[0] is producer:
            act = activation_of(users[0], modules)
            if act is not None:
                layer.act, layer.act_node = act, users[0]


ADDS = (operator.add, operator.iadd, torch.add)


def plan_residual(layers: list[Layer], modules) -> None:
    """`act(conv(x) + r)` -> conv(x, residual=r) with act fused, for convs with nothing fused after them
    yet whose output goes only into one same-shape float32 add (for `conv_a(x) + conv_b(y)`, the first).
    Needs the graph's shapes (ShapeProp) in node.meta."""
    claimed = set()
    for layer in layers:
        if (not layer.convertible or layer.keep_float or layer.node is None or layer.act is not None
                or not isinstance(layer.module, nn.Conv2d)):
            continue
        out = layer.bn_node or layer.node
        users = list(out.users)
        if len(users) != 1:
            continue
        add = users[0]
        if (add in claimed or add.op != "call_function" or add.target not in ADDS or add.kwargs
                or len(add.args) != 2):
            continue
        others = [a for a in add.args if a is not out]
        if len(others) != 1 or not isinstance(others[0], fx.Node):
            continue
        other = others[0]
        meta_out, meta_other = out.meta.get("tensor_meta"), other.meta.get("tensor_meta")
        if (meta_out is None or meta_other is None or getattr(meta_other, "dtype", None) != torch.float32
                or tuple(meta_out.shape) != tuple(meta_other.shape)):
            continue
        layer.add_node = add
        claimed.add(add)
        after = list(add.users)
        if len(after) == 1 and after[0].args and after[0].args[0] is add:
            act = activation_of(after[0], modules)
            if act is not None:
                layer.act, layer.act_node = act, after[0]
