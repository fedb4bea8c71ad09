"""Per-layer times of one forward pass: every layer and every torch op between layers, with its cost.

The model is traced with torch.fx (edgeopt's modules and torch's own layers are leaves; a submodule that
cannot be traced becomes a leaf too), and a copy of the graph is generated with a clock read after every
node. A clock read is one Python call (~0.1 us), far cheaper than forward hooks (which also push every
module call onto nn.Module's slow path), so the instrumented pass runs at nearly the model's own speed and the
steps of one call tile it exactly: step i lasts from stamp i to stamp i+1, the first stamp is taken after
the inputs are bound, the last one after the final node. Where the model cannot be traced at all, pre- and
post-forward hooks on its leaf modules time the layers and the gaps between them become "between" steps.

Costs (MACs, bytes) come from one untimed pass that records every node's inputs and output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import fx, nn

from edgeopt.perf.cost import Cost, function_cost, module_cost, module_macs

_STAMPS: list[float] = []
_LABELED: list[tuple[str, float]] = []
_clock = time.perf_counter


def _stamp() -> None:
    _STAMPS.append(_clock())


@dataclass
class Step:
    """One timed piece of the forward pass."""

    name: str                 # module path for a layer ("layer1.0.conv1"), fx node name for an op ("add_3")
    kind: str                 # "layer" (a module call), "op" (a torch function/method), "between" (hooks mode)
    op: str                   # what it is: the module class (QuantConv2d) or the function (add, flatten)
    scope: str = ""           # the module whose forward the op belongs to ("layer1.0"), for ops
    cost: Cost = field(default_factory=Cost)
    detail: str = ""          # e.g. "64->64 3x3 s1 @56x56"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "op": self.op, "scope": self.scope, "detail": self.detail,
                **self.cost.to_dict()}


def _edgeopt_module_types() -> tuple[type, ...]:
    from edgeopt import nn as eo

    return tuple(getattr(eo, n) for n in eo.__all__)


class _Tracer(fx.Tracer):
    """torch's leaves plus edgeopt's modules; a submodule whose forward cannot be traced (data-dependent
    control flow) is rolled back and kept as one leaf, so the rest of the model is still seen op by op."""

    def __init__(self, leaves: tuple[type, ...] = ()):
        super().__init__()
        self.leaf_types = _edgeopt_module_types() + tuple(leaves)
        self.opaque: set[str] = set()

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.opaque or isinstance(m, self.leaf_types) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        qualname = self.path_of_module(m)
        if self.is_leaf_module(m, qualname):
            return super().call_module(m, forward, args, kwargs)
        last = self.graph._root.prev  # the last node so far
        depth = len(self.module_stack)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:  # noqa: BLE001  (any failure inside: trace it as one opaque call instead)
            while len(self.module_stack) > depth:
                self.module_stack.popitem(last=True)
            while self.graph._root.prev is not last:
                self.graph.erase_node(self.graph._root.prev)
            self.opaque.add(qualname)
            return super().call_module(m, forward, args, kwargs)


def trace(model: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    graph = tracer.trace(model)
    gm = fx.GraphModule(tracer.root, graph, model.__class__.__name__)
    gm.opaque_modules = sorted(tracer.opaque)
    return gm


def _describe(module: nn.Module, out) -> str:
    shape = getattr(out, "shape", None)
    where = f" @{shape[-2]}x{shape[-1]}" if shape is not None and len(shape) == 4 else ""
    if hasattr(module, "kernel_size") and hasattr(module, "in_channels"):
        k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        s = module.stride if isinstance(module.stride, tuple) else (module.stride,) * 2
        groups = getattr(module, "groups", 1)
        g = " dw" if groups > 1 and groups == module.in_channels else (f" g{groups}" if groups > 1 else "")
        return (f"{module.in_channels}->{module.out_channels} {'x'.join(map(str, k))} s{s[0]}{g}{where}")
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return f"{module.in_features}->{module.out_features}"
    return where.strip()


def _scope_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    return list(stack.values())[-1][0]


def _function_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps each timed node's cost."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.steps: dict[fx.Node, Step] = {}
        self.calls: dict[str, int] = {}

    def run_node(self, node: fx.Node):
        inner, handles = Cost(), []
        if node.op == "call_module":
            # a leaf with submodules (one kept opaque because it could not be traced): its MACs are theirs
            module = self.module.get_submodule(node.target)

            def add_inner(m, inputs, output):
                nonlocal inner
                inner = inner + Cost(macs=module_macs(m, inputs, output), int8=module_cost(m, (), None).int8)

            handles = [m.register_forward_hook(add_inner) for m in module.modules() if m is not module]
        try:
            out = super().run_node(node)
        finally:
            for h in handles:
                h.remove()
        if node.op == "call_module":
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            n = self.calls[node.target] = self.calls.get(node.target, 0) + 1
            name = node.target if n == 1 else f"{node.target}#{n}"
            cost = module_cost(module, args, out)
            cost.macs += inner.macs
            cost.int8 = cost.int8 or inner.int8
            self.steps[node] = Step(name, "layer", type(module).__name__, cost=cost, detail=_describe(module, out))
        elif node.op in ("call_function", "call_method"):
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            fn = _function_name(node)
            inplace = fn.endswith("_") and not fn.startswith("_") or bool(kwargs.get("inplace"))
            self.steps[node] = Step(node.name, "op", fn, scope=_scope_of(node),
                                    cost=function_cost(node.target, args, kwargs, out, inplace=inplace))
        return out


class LayerTimer:
    """`timer = LayerTimer(model, example)`; `durations = timer.run(x)` gives the seconds of each of
    `timer.steps` for one call (their sum is the call's time, minus the clock reads themselves)."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        self.model = model
        self.mode = "fx"
        self.trace_error: str | None = None
        try:
            gm = trace(model)
            self.opaque = gm.opaque_modules
            with torch.no_grad():
                recorder = _Recorder(gm)
                recorder.run(example)
            self._timed_nodes = list(recorder.steps)
            self.steps = [recorder.steps[n] for n in self._timed_nodes]
            self._instrumented = self._instrument(gm, set(self._timed_nodes))
        except Exception as exc:  # noqa: BLE001  (untraceable at the top level: hooks instead)
            self.mode, self.trace_error, self.opaque = "hooks", f"{type(exc).__name__}: {exc}", []
            self._setup_hooks(example)

    # ------------------------------------------------------------------ fx mode
    @staticmethod
    def _instrument(gm: fx.GraphModule, timed: set) -> fx.GraphModule:
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        started = False
        for node in gm.graph.nodes:
            if node.op == "output":
                graph.output(fx.map_arg(node.args[0], lambda n: env[n]))
                continue
            if node.op != "placeholder" and not started:
                graph.call_function(_stamp, ())
                started = True
            env[node] = graph.node_copy(node, lambda n: env[n])
            if node in timed:
                graph.call_function(_stamp, ())
        if not started:
            graph.call_function(_stamp, ())
        return fx.GraphModule(gm, graph, "Instrumented" + gm.__class__.__name__)

    def _run_fx(self, x) -> list[float]:
        _STAMPS.clear()
        self._instrumented(x)
        s = _STAMPS
        return [s[i + 1] - s[i] for i in range(len(s) - 1)]

    # ------------------------------------------------------------------ hooks mode
    def _setup_hooks(self, example) -> None:
        leaf_types = _edgeopt_module_types()
        leaves = [(n, m) for n, m in self.model.named_modules()
                  if n and (isinstance(m, leaf_types) or not any(True for _ in m.children()))]
        costs: dict[str, list] = {}

        def record(name):
            def hook(module, inputs, output):
                costs.setdefault(name, []).append((module_cost(module, inputs, output), _describe(module, output),
                                                   type(module).__name__))
            return hook

        handles = [m.register_forward_hook(record(n)) for n, m in leaves]
        try:
            with torch.no_grad():
                self.model(example)
        finally:
            for h in handles:
                h.remove()
        self._leaves = leaves
        self.steps, self._sequence = [], []
        # the call sequence of the example pass decides the steps: layer, gap, layer, gap, ...
        order = self._hooked_sequence(example)
        seen: dict[str, int] = {}
        previous = "input"
        for name in order:
            self.steps.append(Step(f"between {previous} and {name}", "between", "torch ops"))
            k = seen[name] = seen.get(name, 0)
            cost, detail, op = costs[name][k]
            seen[name] = k + 1
            self.steps.append(Step(name if k == 0 else f"{name}#{k + 1}", "layer", op, cost=cost, detail=detail))
            previous = name
        self.steps.append(Step(f"between {previous} and output", "between", "torch ops"))

    def _hooked_sequence(self, x) -> list[str]:
        _LABELED.clear()
        self._call_hooked(x)
        return [label for label, _ in _LABELED[1:-1:2]]

    def _call_hooked(self, x):
        def pre(name):
            return lambda module, inputs: _LABELED.append((name, _clock()))

        def post(name):
            return lambda module, inputs, output: _LABELED.append((name, _clock()))

        handles = []
        for n, m in self._leaves:
            handles.append(m.register_forward_pre_hook(pre(n)))
            handles.append(m.register_forward_hook(post(n)))
        try:
            _LABELED.append(("start", _clock()))
            with torch.no_grad():
                self.model(x)
            _LABELED.append(("end", _clock()))
        finally:
            for h in handles:
                h.remove()

    def _run_hooks(self, x) -> list[float]:
        _LABELED.clear()
        self._call_hooked(x)
        t = [s for _, s in _LABELED]
        return [t[i + 1] - t[i] for i in range(len(t) - 1)]

    # ------------------------------------------------------------------
    def run(self, x) -> list[float]:
        """Seconds of each step for one call on `x` (no_grad)."""
        with torch.no_grad():
            durations = self._run_fx(x) if self.mode == "fx" else self._run_hooks(x)
        if len(durations) != len(self.steps):
            raise RuntimeError(f"edgeopt profile: {len(durations)} timed steps, expected {len(self.steps)} "
                               "(the model took a different path than on the example input)")
        return durations

    def instrumented(self) -> Callable:
        return self._instrumented if self.mode == "fx" else self.model
