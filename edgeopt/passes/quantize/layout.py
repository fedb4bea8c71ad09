"""Hand-offs between lowered layers: channels-last activations where no consumer can tell, and uint8
(in the consumer's input parameters) where a layer feeds only int8 layers that take it.

Which modules take part is asked of the modules themselves (see `emits_u8`, `takes_u8`,
`emits_channels_last`), so dense, block-sparse and low-rank layers join the chain as they gain the feature.
"""
from __future__ import annotations

import inspect
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeopt.nn.pool import MaxPool2d as EdgeoptMaxPool2d


def emits_u8(m: nn.Module) -> bool:
    """The module can return uint8 in given parameters (set_output_quant)."""
    return callable(getattr(m, "set_output_quant", None))


def takes_u8(m: nn.Module) -> bool:
    """The module takes uint8 input quantized with its static input parameters (QuantConv2d, or a module
    that says so with `takes_u8_input = True`)."""
    from edgeopt.nn import QuantConv2d

    u8 = isinstance(m, QuantConv2d) or bool(getattr(m, "takes_u8_input", False))
    return u8 and getattr(m, "mode", None) == "static"


def emits_channels_last(m: nn.Module) -> bool:
    return hasattr(m, "channels_last_output")


def takes_residual(m) -> bool:
    """forward(x, residual) adds `residual` in the epilogue, before the fused activation (a module or its
    class)."""
    try:
        return "residual" in inspect.signature(m.forward).parameters
    except (TypeError, ValueError):
        return False


def takes_activation(m: nn.Module) -> bool:
    """The module applies its own fused activation (an edgeopt module built with activation=...)."""
    return type(m).__module__.startswith("edgeopt.nn.") and hasattr(m, "out_min")


def reset_hand_offs(m: nn.Module) -> None:
    if emits_u8(m):
        m.set_output_quant(None)
    if emits_channels_last(m):
        m.channels_last_output = False


def link_u8(gm: fx.GraphModule, layers) -> None:
    """Layer -> layer edges (possibly through max-pools, which commute with uint8 quantization) where the
    producer can emit uint8 in the parameters its consumers quantize their input with."""
    modules = dict(gm.named_modules())
    chosen = {layer.name: layer for layer in layers if layer.node is not None and layer.name in modules}

    def consumers(node: fx.Node):
        found = []
        for user in node.users:
            m = modules.get(user.target) if user.op == "call_module" else None
            if user.kwargs or not user.args or user.args[0] is not node or node in user.args[1:]:
                return None
            if m is not None and user.target in chosen and takes_u8(m):
                found.append(chosen[user.target])
            elif isinstance(m, EdgeoptMaxPool2d) and len(user.args) == 1:
                below = consumers(user)
                if below is None:
                    return None
                found += below
            else:
                return None
        return found or None

    for layer in chosen.values():
        m = modules[layer.name]
        if not emits_u8(m):
            continue
        found = consumers(layer.node)
        if not found:
            continue
        params = {(float(modules[c.name].input_scale), int(modules[c.name].input_zero_point)) for c in found}
        if len(params) != 1:
            continue
        scale, zero_point = params.pop()
        m.set_output_quant(scale, zero_point)
        layer.report.u8_output = True
        layer.report.u8_output_to = tuple(c.name for c in found)


# Ops whose result has its input's memory format, and whose values do not depend on it.
_FORMAT_PRESERVING_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool2d, EdgeoptMaxPool2d, nn.AvgPool2d,
                              nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout, nn.BatchNorm2d,
                              nn.Conv2d, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.GELU)
_FORMAT_PRESERVING_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul,
                                torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.hardtanh, torch.clamp,
                                torch.cat, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.silu, torch.sigmoid}
_FORMAT_PRESERVING_METHODS = {"relu", "relu_", "clamp", "clamp_", "add", "add_", "mul", "mul_", "sigmoid"}
# Ops whose result is the same whatever the input's memory format (torch copies where it must).
_FORMAT_ABSORBING_FUNCTIONS = {torch.flatten, torch.reshape, torch.mean, getattr}
_FORMAT_ABSORBING_METHODS = {"flatten", "reshape", "mean", "contiguous", "size", "dim"}


def _edgeopt_convs():
    from edgeopt.nn import QuantConv2d, SparseConv2d

    return QuantConv2d, SparseConv2d


def _edgeopt_linears():
    from edgeopt.nn import LowRankLinear, QuantLinear, SparseLinear

    return QuantLinear, SparseLinear, LowRankLinear


def layout_free(node: fx.Node, modules: dict[str, nn.Module], memo: dict) -> bool:
    """True if every consumer of `node`, followed through format-preserving ops (edgeopt convs among
    them), computes the same values whatever memory format `node` has, and none of it reaches the model's
    output."""
    if node in memo:
        return memo[node]
    memo[node] = False  # cycles cannot occur in an fx graph; this guards the recursion anyway
    convs, linears = _edgeopt_convs(), _edgeopt_linears()
    ok = True
    for user in node.users:
        if user.op == "call_module":
            m = modules.get(user.target)
            if isinstance(m, (*linears, nn.Flatten)):
                continue  # they read logical values: the result does not depend on the memory format
            # an edgeopt conv returns the memory format it is given, as torch's own ops do
            preserving = type(m) in _FORMAT_PRESERVING_MODULES or isinstance(m, convs)
            ok = preserving and layout_free(user, modules, memo)
        elif user.op == "call_function":
            if user.target in _FORMAT_ABSORBING_FUNCTIONS:
                continue
            ok = user.target in _FORMAT_PRESERVING_FUNCTIONS and layout_free(user, modules, memo)
        elif user.op == "call_method":
            if user.target in _FORMAT_ABSORBING_METHODS:
                continue
            ok = user.target in _FORMAT_PRESERVING_METHODS and layout_free(user, modules, memo)
        else:  # the model's output, or anything unknown
            ok = False
        if not ok:
            break
    memo[node] = ok
    return ok


def link_channels_last(gm: fx.GraphModule, layers) -> None:
    """Lowered convs whose output no consumer can tell apart hand it over channels-last; a conv left to
    torch gets one transpose of its output, which puts the layers after it on NHWC."""
    modules = dict(gm.named_modules())
    memo: dict = {}
    inserted = False
    for layer in layers:
        m = modules.get(layer.name)
        if layer.node is None or m is None or not layout_free(layer.node, modules, memo):
            continue
        if emits_channels_last(m):
            m.channels_last_output = True
            layer.report.channels_last_output = True
        elif type(m) is nn.Conv2d:
            # A conv kept float (the audio stem) returns NCHW for an NCHW input, and everything after it
            # would run NCHW: torch's NCHW max-pool alone took 1.36 ms against 0.085 ms channels-last for
            # vgg_audio's first pool (1 thread). One transpose of its output puts the rest on NHWC.
            with gm.graph.inserting_after(layer.node):
                nhwc = gm.graph.call_method("contiguous", (layer.node,), {"memory_format": torch.channels_last})
            layer.node.replace_all_uses_with(nhwc, delete_user_cb=lambda user: user is not nhwc)
            layer.report.channels_last_output = True
            inserted = True
    if inserted:
        gm.recompile()
