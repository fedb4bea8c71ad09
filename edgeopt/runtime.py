"""edgeopt.runtime: run a quantized model as native execution plans, one native call per inference.

    qmodel, _ = edgeopt.quantize(model, calibration_data)
    fast = edgeopt.runtime.compile(qmodel, example_input)   # an nn.Module (a torch.fx.GraphModule)
    y = fast(x)                                              # bit-identical to qmodel(x)
    print(edgeopt.runtime.format_profile(edgeopt.runtime.profile(fast, x)))

`compile` lowers the torch.fx graph that `edgeopt.quantize` produces: every run of consecutive nodes the
native runtime can execute -- edgeopt modules that describe themselves as a plan node (`plan_node()`:
QuantConv2d dense and depthwise, with a fused residual; QuantLinear; MaxPool2d; GlobalAvgPool2d on uint8), `torch.flatten`,
Dropout / Identity (inference only) and layout-only `.contiguous()` -- becomes one `NativePartition`
submodule that runs them as one C++ plan (csrc/runtime): NHWC activations in one preallocated arena, the
thread pool's workers kept hot from the first node to the last, each node calling the op its module calls
with the same arguments. What it cannot run stays as it was, in torch, around the partitions.

The result keeps the quantized model's submodules under their names: `state_dict()` has the same keys,
`load_state_dict` / `torch.save` / `torch.load` / `copy.deepcopy` rebuild the plans from the modules;
`torch.compile(fullgraph=True)` traces a partition as one op (`edgeopt::run_plan`). The plans snapshot
their modules' packed weights and quantization parameters when they are built: after changing a source
module in place, call `edgeopt.runtime.rebuild(compiled)`. Inference only: Dropout is the identity.
"""
from __future__ import annotations

import itertools
import math
import operator
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from edgeopt._native import _C
from edgeopt.threads import get_num_threads


@dataclass
class PlanNode:
    """A module described as a node of a native plan: the op, its packed weight blob (a registered buffer
    of the module, or None), the op's parameters, its tensor inputs in call order and the layout it
    works in ('nhwc' activations or 'rows')."""

    op: str
    packed: torch.Tensor | None
    params: dict[str, Any]
    inputs: tuple[str, ...] = ("x",)
    layout: str = "nhwc"
    accepts: tuple[torch.dtype, ...] = (torch.float32, torch.uint8)  # dtypes of x it runs natively


@dataclass
class NodeTime:
    """One node of a plan in the profile: total time over `runs` runs and its multiply-adds per run."""

    partition: str
    name: str
    op: str
    ms: float
    runs: int
    macs: float

    @property
    def ms_per_run(self) -> float:
        return self.ms / self.runs if self.runs else 0.0


# Modules that are the identity at inference.
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout2d, nn.Identity)


# ---------------------------------------------------------------------------------------------- lowering

@dataclass
class _Step:
    """One fx node of a partition: how to add it to a plan."""

    name: str                 # the fx node's target (module path) or name: what the profile shows
    kind: str                 # "module" (a plan_node() module), "flatten" or "alias"
    inputs: list[str]         # fx node names of its tensor inputs (None entries dropped)
    output: str               # its fx node name
    module: nn.Module | None = None
    residual: str | None = None


@dataclass
class _ValueMeta:
    dtype: torch.dtype
    shape: tuple[int, ...]
    channels_last: bool       # a 4-D tensor laid out NHWC in memory (and not also NCHW-contiguous)


def _meta_of(t: torch.Tensor) -> _ValueMeta:
    cl = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return _ValueMeta(t.dtype, tuple(t.shape), cl)


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps the dtype, shape and memory format of every tensor it produces."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.meta: dict[str, _ValueMeta] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.meta[n.name] = _meta_of(out)
        return out


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    return [a for a in itertools.chain(node.args, node.kwargs.values()) if isinstance(a, fx.Node)]


def _lower_rule(node: fx.Node, modules: dict[str, nn.Module], meta: dict[str, _ValueMeta]) -> _Step | None:
    """How the runtime runs this node, or None when it stays in torch."""
    if node.name not in meta or any(a.name not in meta for a in _tensor_args(node)):
        return None
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, _IDENTITY_MODULES) and len(node.args) == 1 and not node.kwargs:
            return _Step(node.target, "alias", [node.args[0].name], node.name)
        if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) == (1, -1) and len(node.args) == 1:
            return _flatten_step(node, node.args[0], meta, name=node.target)
        plan_node = getattr(m, "plan_node", None)
        if plan_node is None or plan_node() is None:
            return None
        spec = plan_node()
        args = list(node.args) + [node.kwargs[k] for k in spec.inputs[len(node.args):] if k in node.kwargs]
        if len(args) > len(spec.inputs) or set(node.kwargs) - set(spec.inputs):
            return None
        if not args or not isinstance(args[0], fx.Node):
            return None
        x = args[0]
        residual = args[1] if len(args) > 1 else None
        if residual is not None and not isinstance(residual, fx.Node):
            return None
        if spec.layout == "rows" and len(meta[x.name].shape) != 2:
            return None
        if spec.layout == "nhwc" and len(meta[x.name].shape) != 4:
            return None
        if meta[x.name].dtype not in spec.accepts:
            return None
        return _Step(node.target, "module", [x.name] + ([residual.name] if residual is not None else []),
                     node.name, module=m, residual=None if residual is None else residual.name)
    if node.op == "call_function" and node.target is torch.flatten:
        x = node.args[0] if node.args else None
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        if isinstance(x, fx.Node) and (start, end) == (1, -1):
            return _flatten_step(node, x, meta)
        return None
    if node.op == "call_method" and node.target == "flatten":
        x = node.args[0]
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        if (start, end) == (1, -1):
            return _flatten_step(node, x, meta)
        return None
    if node.op == "call_method" and node.target == "contiguous" and len(node.args) == 1:
        return _Step(node.name, "alias", [node.args[0].name], node.name)  # layout only: values unchanged
    return None


def _flatten_step(node: fx.Node, x: fx.Node, meta, name: str | None = None) -> _Step | None:
    if len(meta[x.name].shape) != 4:
        return None
    return _Step(name or node.name, "flatten", [x.name], node.name)


@dataclass
class _PartitionSpec:
    steps: list[_Step]
    inputs: list[str]                       # fx node names produced outside, in first-use order
    outputs: list[str]                      # fx node names used outside (or returned)
    meta: dict[str, _ValueMeta] = field(default_factory=dict)


@dataclass
class _Region:
    """A stretch of the original node order around one partition: the nodes that do not depend on the
    partition run before it (`before`), its members as one plan, then the nodes that do (`after`)."""

    before: list[fx.Node] = field(default_factory=list)
    members: list[tuple[fx.Node, _Step]] = field(default_factory=list)
    after: list[fx.Node] = field(default_factory=list)
    spec: _PartitionSpec | None = None


def _partition(gm: fx.GraphModule, meta: dict[str, _ValueMeta]) -> list[fx.Node | _Region]:
    """The graph's nodes in an order that groups what the runtime can run into as few partitions as
    possible: a native node joins the open partition unless one of its inputs comes from a torch node that
    depends on that partition (then the partition closes and a new one opens). Torch nodes that do not
    depend on the open partition move before it, those that do after it; neither move breaks a
    dependency (a node that does not depend on the partition cannot depend on one that does)."""
    modules = dict(gm.named_modules())
    order: list[fx.Node | _Region] = []
    region: _Region | None = None
    inside: set[fx.Node] = set()   # the open partition's members and the torch nodes depending on them
    for node in gm.graph.nodes:
        step = _lower_rule(node, modules, meta) if node.op not in ("placeholder", "output") else None
        if step is not None:
            if region is None or any(a in inside and a not in dict(region.members) for a in node.all_input_nodes):
                region = _Region()
                order.append(region)
                inside = set()
            region.members.append((node, step))
            inside.add(node)
        elif region is None:
            order.append(node)
        elif node.op == "output" or any(a in inside for a in node.all_input_nodes):
            region.after.append(node)
            inside.add(node)
        else:
            region.before.append(node)
    for item in order:
        if isinstance(item, _Region):
            item.spec = _region_spec(item, meta)
    return order


def _region_spec(region: _Region, meta: dict[str, _ValueMeta]) -> _PartitionSpec | None:
    """The partition of a region, or None when it would compute nothing (aliases only)."""
    if not any(step.kind != "alias" for _, step in region.members):
        return None
    members = {n.name for n, _ in region.members}
    inputs: list[str] = []
    for _, step in region.members:
        for name in step.inputs:
            if name not in members and name not in inputs:
                inputs.append(name)
    outputs = [n.name for n, _ in region.members if any(u.name not in members for u in n.users)]
    steps = [step for _, step in region.members]
    return _PartitionSpec(steps, inputs, outputs,
                          {k: meta[k] for k in set(inputs) | set(outputs) | members if k in meta})


# --------------------------------------------------------------------------------------- native partition

_PLAN_IDS = itertools.count()
_PARTITIONS: "weakref.WeakValueDictionary[int, NativePartition]" = weakref.WeakValueDictionary()


class NativePartition(nn.Module):
    """A run of a quantized graph's nodes as one native plan. Holds no parameters of its own: its plan is
    built from the source modules (owned by the enclosing model) and rebuilt when they are reloaded."""

    def __init__(self, spec: _PartitionSpec, label: str):
        super().__init__()
        self._spec = spec
        self.label = label
        self._register()

    def _register(self) -> None:
        self._plan_id = next(_PLAN_IDS)
        _PARTITIONS[self._plan_id] = self
        self._plan = None
        self._out_specs: dict[tuple, list] = {}

    # --- building ---
    def rebuild(self) -> None:
        """Drop the plan; the next call builds it again from the source modules' current state."""
        self._plan = None
        self._out_specs = {}

    def _build(self):
        spec = self._spec
        plan = _C.Plan()
        values: dict[str, int] = {}
        for name in spec.inputs:
            m = spec.meta[name]
            if m.dtype not in (torch.float32, torch.uint8) or len(m.shape) not in (2, 4):
                raise TypeError(f"edgeopt.runtime: partition input {name} is {m.dtype} {m.shape}; a plan takes "
                                "float32 or uint8 images (4-D) or rows (2-D)")
            values[name] = plan.add_input(str(m.dtype).removeprefix("torch."), len(m.shape), name)
        for step in spec.steps:
            if step.kind == "alias":
                values[step.output] = values[step.inputs[0]]
                continue
            x = values[step.inputs[0]]
            if step.kind == "flatten":
                values[step.output] = plan.add_flatten(x, name=step.name)
                continue
            node = step.module.plan_node()
            if node is None:
                raise RuntimeError(f"edgeopt.runtime: {step.name} can no longer describe itself as a plan node "
                                   "(were its weights removed?)")
            packed = None if node.packed is None else node.packed.detach().numpy()
            p = node.params
            if node.op == "qconv2d":
                residual = None if step.residual is None else values[step.residual]
                values[step.output] = plan.add_qconv2d(
                    x, packed, p["kernel"], p["stride"], p["padding"], p["dilation"], p["groups"], p["dynamic"],
                    p["x_scale"], p["x_zero_point"], p["out_min"], p["out_max"], p["out_uint8"], p["out_scale"],
                    p["out_zero_point"], residual=residual, name=step.name)
            elif node.op == "qlinear":
                values[step.output] = plan.add_qlinear(x, packed, p["dynamic"], p["x_scale"], p["x_zero_point"],
                                                       p["out_min"], p["out_max"], name=step.name)
            elif node.op == "global_avg_pool2d":
                values[step.output] = plan.add_global_avg_pool2d(x, p["x_scale"], p["x_zero_point"], p["out_uint8"],
                                                                 p["out_scale"], p["out_zero_point"], name=step.name)
            elif node.op == "max_pool2d":
                values[step.output] = plan.add_max_pool2d(x, p["kernel"], p["stride"], p["padding"], p["dilation"],
                                                          p["ceil_mode"], name=step.name)
            else:
                raise RuntimeError(f"edgeopt.runtime: {step.name}: no native node for op {node.op!r}")
        # An output may be an alias of another (a .contiguous() of it used outside too): one plan output each.
        self._output_slots = []
        marked: list[int] = []
        for name in spec.outputs:
            v = values[name]
            if v in [values[i] for i in spec.inputs]:
                raise RuntimeError(f"edgeopt.runtime: partition output {name} is one of its inputs")
            if v not in marked:
                plan.mark_output(v)
                marked.append(v)
            self._output_slots.append(marked.index(v))
        self._plan = plan
        return plan

    # --- running ---
    def _input_shapes(self, xs) -> list[tuple[int, ...]]:
        if len(xs) != len(self._spec.inputs):
            raise TypeError(f"edgeopt.runtime: {self.label} takes {len(self._spec.inputs)} inputs, got {len(xs)}")
        shapes = []
        for x, name in zip(xs, self._spec.inputs):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"edgeopt.runtime: {self.label} input {name} must be a tensor, got {type(x).__name__}")
            if x.device.type != "cpu":
                raise ValueError(f"edgeopt.runtime runs on the CPU; {self.label} input {name} is on {x.device}")
            want = self._spec.meta[name]
            if x.dtype != want.dtype:
                raise TypeError(f"edgeopt.runtime: {self.label} input {name} must be {want.dtype}, got {x.dtype}")
            if x.dim() != len(want.shape):
                raise ValueError(f"edgeopt.runtime: {self.label} input {name} must be {len(want.shape)}-D like "
                                 f"{want.shape}, got {tuple(x.shape)}")
            n, *rest = (int(d) for d in x.shape)
            shapes.append((n, rest[1], rest[2], rest[0]) if x.dim() == 4 else (n, 1, 1, rest[0]))
        return shapes

    def _output_specs(self, xs) -> list:
        # int(): under torch.compile's dynamic shapes a plan specializes on the sizes (a guard), as it does here
        if not all(isinstance(x, torch.Tensor) for x in xs):
            self._input_shapes(xs)  # raises the error that names the input
        key = tuple((x.dtype, x.device.type, tuple(int(d) for d in x.shape)) for x in xs)
        specs = self._out_specs.get(key)
        if specs is None:
            plan = self._plan or self._build()
            shapes = plan.infer_output_shapes(self._input_shapes(xs))
            first_name = {slot: name for name, slot in reversed(list(zip(self._spec.outputs, self._output_slots)))}
            specs = []
            for slot, shape in enumerate(shapes):
                m = self._spec.meta[first_name[slot]]
                specs.append((shape if len(m.shape) == 4 else (shape[0], shape[3]), m))
            self._out_specs[key] = specs
        return specs

    def run_native(self, xs) -> list[torch.Tensor]:
        """The plan's outputs as it writes them: NHWC tensors (images) or (N, F) rows."""
        specs = self._output_specs(xs)
        plan = self._plan or self._build()
        outs = [torch.empty(shape, dtype=m.dtype) for shape, m in specs]
        plan.run([x.detach().numpy() for x in xs], [o.numpy() for o in outs], get_num_threads())
        return outs

    def forward(self, *xs):
        if torch.compiler.is_compiling():
            outs = run_plan(list(xs), self._plan_id)
        else:
            outs = self.run_native(xs)
        if not hasattr(self, "_output_slots"):
            self._plan or self._build()
        results = []
        for slot, name in zip(self._output_slots, self._spec.outputs):
            out = outs[slot]
            m = self._spec.meta[name]
            if out.dim() == 4:
                out = out.permute(0, 3, 1, 2)  # NHWC bytes seen as NCHW with channels_last strides
                if not m.channels_last:
                    out = out.contiguous()
            results.append(out)
        return results[0] if len(results) == 1 else tuple(results)

    def node_times(self) -> list[NodeTime]:
        if self._plan is None:
            return []
        return [NodeTime(self.label, t["name"], t["op"], t["ns"] / 1e6, t["runs"], t["macs"])
                for t in self._plan.node_times()]

    def reset_times(self) -> None:
        if self._plan is not None:
            self._plan.reset_times()

    def native_ms(self) -> tuple[float, int]:
        """Total time inside the plan's native run calls and how many runs."""
        return (0.0, 0) if self._plan is None else (self._plan.run_ns / 1e6, self._plan.runs)

    # pickling and deepcopy: the native plan is rebuilt, under a fresh id, on first use
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_plan"] = None
        state["_out_specs"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._register()

    def extra_repr(self) -> str:
        ops = [s.name for s in self._spec.steps if s.kind != "alias"]
        return f"{self.label}: {len(ops)} nodes ({ops[0]} ... {ops[-1]})" if ops else self.label


@torch.library.custom_op("edgeopt::run_plan", mutates_args=())
def run_plan(inputs: list[torch.Tensor], plan_id: int) -> list[torch.Tensor]:
    """A native partition's plan on its inputs; outputs as the plan writes them (NHWC images, rows)."""
    return _partition_of(plan_id).run_native(inputs)


@run_plan.register_fake
def _(inputs, plan_id):
    part = _partition_of(plan_id)
    return [inputs[0].new_empty(shape, dtype=m.dtype) for shape, m in part._output_specs(inputs)]


def _partition_of(plan_id: int) -> NativePartition:
    part = _PARTITIONS.get(plan_id)
    if part is None:
        raise RuntimeError(f"edgeopt.runtime: plan {plan_id} no longer exists (its module was deleted)")
    return part


# ------------------------------------------------------------------------------------------------- compile

def compile(model: nn.Module, example_input: torch.Tensor, *, check: bool = True) -> fx.GraphModule:  # noqa: A001
    """Lower a quantized torch.fx.GraphModule (what `edgeopt.quantize` returns) into native partitions.

    `example_input` is run once through the model to learn each value's dtype, shape and memory format
    (the plans accept other batch sizes and spatial sizes later). With `check`, the compiled model is run
    on it too and its output must equal the model's bit for bit (a RuntimeError otherwise)."""
    if not isinstance(model, fx.GraphModule):
        raise TypeError("edgeopt.runtime.compile expects the torch.fx.GraphModule that edgeopt.quantize returns, "
                        f"got {type(model).__name__} (a model quantize could not trace cannot be lowered)")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"edgeopt.runtime.compile: example_input must be a tensor, got {type(example_input).__name__}")
    recorder = _Recorder(model)
    with torch.no_grad():
        reference = recorder.run(example_input)
    order = _partition(model, recorder.meta)

    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    partition_modules: dict[str, NativePartition] = {}

    def copy_node(node: fx.Node) -> None:
        env[node.name] = graph.node_copy(node, lambda n: env[n.name])

    for item in order:
        if not isinstance(item, _Region):
            copy_node(item)
            continue
        for node in item.before:
            copy_node(node)
        spec = item.spec
        if spec is None:  # nothing to compute natively: the members stay as they were
            for node, _ in item.members:
                copy_node(node)
        elif spec.outputs:
            label = f"native_{len(partition_modules)}"
            partition_modules[label] = NativePartition(spec, label)
            call = graph.call_module(label, tuple(env[name] for name in spec.inputs))
            if len(spec.outputs) == 1:
                env[spec.outputs[0]] = call
            else:
                for i, name in enumerate(spec.outputs):
                    env[name] = graph.call_function(operator.getitem, (call, i))
        for node in item.after:
            copy_node(node)
    graph.lint()

    # Every top-level child of the model stays where it was (the partitions read submodules the graph no
    # longer calls; state_dict keys are unchanged), next to the partitions.
    root: dict[str, Any] = dict(model.named_children())
    root.update(partition_modules)
    for node in graph.nodes:
        if node.op in ("get_attr", "call_module") and node.target not in root:
            root[node.target] = _fetch_attr(model, node.target)
    compiled = NativeGraphModule(root, graph, class_name=type(model).__name__)
    for name, child in model.named_children():
        setattr(compiled, name, child)
    compiled._watch_loads()
    if check:
        with torch.no_grad():
            got = compiled(example_input)
        _check_identical(reference, got)
    return compiled


class NativeGraphModule(fx.GraphModule):
    """The compiled model: a GraphModule whose native partitions read submodules the graph does not call.
    fx rebuilds a GraphModule from its graph on deepcopy and unpickling, keeping only the submodules the
    graph references; this keeps the others too (so the partitions and state_dict keep them)."""

    def _watch_loads(self) -> None:
        self.register_load_state_dict_post_hook(_rebuild_after_load)

    def __deepcopy__(self, memo):
        import copy

        res = super().__deepcopy__(memo)
        for name, child in self.named_children():
            if name not in res._modules:
                setattr(res, name, copy.deepcopy(child, memo))
        return res

    def __reduce__(self):
        restore, args = super().__reduce__()
        return _restore_native_graph_module, (restore, args)


def _restore_native_graph_module(restore, args):
    plain = restore(*args)  # fx's own reconstruction: a GraphModule with the referenced submodules only
    gm = NativeGraphModule(plain, plain.graph, class_name=plain.__class__.__name__)
    for name, child in args[0]["_modules"].items():
        if name not in gm._modules:
            setattr(gm, name, child)
    gm._watch_loads()
    return gm


def _rebuild_after_load(module, _incompatible_keys) -> None:
    rebuild(module)


def _fetch_attr(module: nn.Module, target: str):
    for part in target.split("."):
        module = getattr(module, part)
    return module


def _check_identical(reference, got) -> None:
    ref = reference if isinstance(reference, (tuple, list)) else (reference,)
    out = got if isinstance(got, (tuple, list)) else (got,)
    for r, g in zip(ref, out):
        if isinstance(r, torch.Tensor) and not (r.dtype == g.dtype and r.shape == g.shape and torch.equal(r, g)):
            raise RuntimeError("edgeopt.runtime.compile: the native plan's output differs from the module-by-module "
                               "output on the example input; this is a bug, please report it")


def partitions(compiled: nn.Module) -> list[NativePartition]:
    return [m for m in compiled.modules() if isinstance(m, NativePartition)]


def rebuild(compiled: nn.Module) -> None:
    """Rebuild every plan of `compiled` from its modules' current weights and parameters (needed after
    changing a source module in place; load_state_dict does it by itself)."""
    for part in partitions(compiled):
        part.rebuild()


# -------------------------------------------------------------------------------------------------- profile

def node_times(compiled: nn.Module) -> list[NodeTime]:
    """Per-node time of every plan of `compiled`, accumulated since the last `reset_times`."""
    return [t for part in partitions(compiled) for t in part.node_times()]


def reset_times(compiled: nn.Module) -> None:
    for part in partitions(compiled):
        part.reset_times()


@dataclass
class Profile:
    """Where one inference's time goes (per run, ms): the whole forward as Python sees it; the plans' nodes
    (kernels and input copies); what stays in torch (timed in a separate pass, node by node); and the rest,
    `glue_ms`: Python, bindings, allocation and hand-offs between them -- the time outside any kernel."""

    runs: int
    forward_ms: float
    nodes_ms: float
    native_ms: float             # inside the plans' native run calls (nodes plus the plan's own bookkeeping)
    torch_ms: float
    nodes: list[NodeTime]
    torch_nodes: dict[str, float]  # graph node -> ms per run

    @property
    def outside_ms(self) -> float:
        """Everything but the plans' nodes (torch parts included)."""
        return self.forward_ms - self.nodes_ms

    @property
    def glue_ms(self) -> float:
        return self.forward_ms - self.nodes_ms - self.torch_ms

    @property
    def glue_fraction(self) -> float:
        return self.glue_ms / self.forward_ms if self.forward_ms > 0 else math.nan

    @property
    def outside_fraction(self) -> float:
        return self.outside_ms / self.forward_ms if self.forward_ms > 0 else math.nan


class _TorchTimer(fx.Interpreter):
    """Runs the compiled graph node by node, timing the nodes that are not native partitions."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.ms: dict[str, float] = {}

    def run_node(self, n: fx.Node):
        import time

        native = n.op == "call_module" and isinstance(self.module.get_submodule(n.target), NativePartition)
        if native or n.op not in ("call_module", "call_function", "call_method"):
            return super().run_node(n)
        t0 = time.perf_counter()
        out = super().run_node(n)
        self.ms[n.name] = self.ms.get(n.name, 0.0) + (time.perf_counter() - t0) * 1e3
        return out


def profile(compiled: nn.Module, example_input: torch.Tensor, runs: int = 20, warmup: int = 3) -> Profile:
    """Runs `compiled` `runs` times (after `warmup`) and reads its plans' timers; then runs it `runs` times
    more node by node to time what stays in torch."""
    import time

    with torch.no_grad():
        for _ in range(warmup):
            compiled(example_input)
        reset_times(compiled)
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            compiled(example_input)
            walls.append(time.perf_counter() - t0)
        nodes = node_times(compiled)
        native = sum(p.native_ms()[0] for p in partitions(compiled))
        timer = _TorchTimer(compiled)
        for _ in range(runs):
            timer.run(example_input)
    torch_nodes = {k: v / runs for k, v in timer.ms.items()}
    return Profile(runs, sum(walls) * 1e3 / runs, sum(t.ms for t in nodes) / runs, native / runs,
                   sum(torch_nodes.values()), nodes, torch_nodes)


def format_profile(p: Profile) -> str:
    lines = [f"{'node':<32} {'op':<11} {'ms':>8} {'GMAC/s':>7}"]
    for t in p.nodes:
        ms = t.ms_per_run
        rate = f"{t.macs / ms / 1e6:7.1f}" if t.macs and ms > 0 else ""
        lines.append(f"{t.name[:32]:<32} {t.op:<11} {ms:8.3f} {rate:>7}")
    for name, ms in p.torch_nodes.items():
        lines.append(f"{name[:32]:<32} {'torch':<11} {ms:8.3f}")
    lines.append(f"forward {p.forward_ms:.3f} ms per run ({p.runs} runs): plan nodes {p.nodes_ms:.3f} ms, native calls "
                 f"{p.native_ms:.3f} ms, torch {p.torch_ms:.3f} ms; outside any kernel {p.glue_ms:.3f} ms "
                 f"({100 * p.glue_fraction:.1f}%)")
    return "\n".join(lines)


__all__ = ["NativePartition", "NodeTime", "PlanNode", "Profile", "compile", "format_profile", "node_times",
           "partitions", "profile", "rebuild", "reset_times", "run_plan"]
