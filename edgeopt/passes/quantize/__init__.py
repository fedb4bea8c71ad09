"""The int8 lowering: one pass for dense, block-sparse and low-rank layers.

    qmodel, report = edgeopt.quantize(model, data)
    print(report)

In order:
1. traces the model with torch.fx (falls back to swapping leaf modules, without folding or fusion, when
   the model is not traceable; the report says why)            -- plan.py
2. runs the calibration data through the float model (min/max, counts, a batch of inputs for SQNR and
   timing, E[x x^T] for the weight rounding; a second pass for the outlier-robust observers)  -- observers.py
3. folds BatchNorm into the conv/linear it follows, and plans which activation (ReLU / ReLU6 / hardtanh /
   clamp consuming a layer's output alone) and which residual add (`act(conv(x) + r)`, a ResNet block's
   end) each layer's epilogue takes                              -- bn.py, plan.py
4. rounds each layer's 7-bit weights to minimise its output error on the calibration inputs (GPTQ; a
   pruned layer's zeros stay zero) and builds every kernel the layer can run on: dense int8, block-sparse
   int8 (weights with zeros), low-rank int8 (LowRankLinear: int8 factors, static ranges at both stages),
   or float; times them on this machine and keeps the fastest    -- gptq.py, candidates.py
5. rewrites the graph around the chosen modules (folded BatchNorms out; activations and residual adds into
   the epilogues that take them)                                  -- fusion.py
6. hands activations from one lowered conv to the next channels-last, and (`u8_between_layers`) as uint8
   in the consumer's input parameters where a layer feeds only int8 layers that take it  -- layout.py

The result is a torch.fx.GraphModule with the original module names, one module per layer. To rebuild a
saved state_dict, lower a freshly built float model with any calibration batch of the right shape and the
same kernel choice (`kernels={name: kernel}` from the report), then `load_state_dict`.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgeopt.nn.low_rank_linear import LowRankLinear
from edgeopt.passes.common import model_inputs, renamed_keyword, resolve_names, set_submodule, sqnr_db
from edgeopt.passes.quantize import candidates as cand
from edgeopt.passes.quantize.bn import fold_batchnorm
from edgeopt.passes.quantize.fusion import rewrite
from edgeopt.passes.quantize.gptq import WEIGHT_ROUNDINGS, gptq_applies, gptq_round, input_rows, linear_rows
from edgeopt.passes.quantize.layout import link_channels_last, link_u8, reset_hand_offs, restore_float_pools
from edgeopt.passes.quantize.observers import OBSERVERS, Stats, calibrate, input_range
from edgeopt.passes.quantize.plan import (Layer, check_calibrated, find_layers, global_pools, plan_fusion,
                                          plan_residual, trace)
from edgeopt.passes.report import Report, describe_activation
from edgeopt.progress import Progress

# Measured on resnet18 and vgg_audio at batch 1 (bench/NOTES.md, "Issue 4 - quantize pass").
U8_BETWEEN_LAYERS_DEFAULT = True
# Quantized convs hand channels_last (NHWC) output to consumers that cannot tell the difference (other
# quantized convs, elementwise ops, pooling, flatten): the kernels work in NHWC, and an NCHW hand-off
# costs a transpose out of one layer and another into the next.
CHANNELS_LAST_BETWEEN_LAYERS = True
# `act(conv(x) + r)` (a ResNet block's end) becomes one call with `residual=r` where the chosen module
# takes it: the add and the activation run in the conv's epilogue instead of two more passes in torch.
FUSE_RESIDUAL_ADD = True
OWNER = "edgeopt.quantize"


class Lowering:
    """What the lowering learned about one model, once: the traced float graph, the plan (folding,
    fusion), calibration statistics and every layer's candidate kernels. `assemble(kernels)` builds the
    lowered model for any choice of kernels without calibrating again -- the accuracy-aware mode of
    edgeopt.optimize tries back-offs this way. Each assemble re-links the shared candidate modules, so
    only the model from the latest call is valid."""

    def __init__(self, model: nn.Module, batches: list[torch.Tensor], *, dtype: str = "int8",
                 kernels: Iterable[str] | Mapping[str, str] = cand.FAMILIES, measure: bool = True,
                 observer: str = "percentile", percentile: float = 99.99, skip: Iterable[str] = (),
                 layers: Iterable[str] | None = None, inplace: bool = False,
                 u8_between_layers: bool = U8_BETWEEN_LAYERS_DEFAULT, progress: bool = True,
                 weight_rounding: str = "gptq", timing_rows: int = 1, repeats: int = 5,
                 alternatives: Mapping[str, nn.Module] | None = None, keep_int8_under_us: float = 0.0):
        if observer not in OBSERVERS:
            raise ValueError(f"{OWNER}: observer must be one of {OBSERVERS}, got {observer!r}")
        if not (0.0 < float(percentile) <= 100.0):
            raise ValueError(f"{OWNER}: percentile must be in (0, 100], got {percentile}")
        if weight_rounding not in WEIGHT_ROUNDINGS:
            raise ValueError(f"{OWNER}: weight_rounding must be one of {WEIGHT_ROUNDINGS}, got {weight_rounding!r}")
        if dtype not in cand.DTYPES:
            raise ValueError(f"{OWNER}: dtype must be one of {cand.DTYPES}, got {dtype!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"{OWNER} expects an nn.Module, got {type(model).__name__}")
        forced = dict(kernels) if isinstance(kernels, Mapping) else {}
        families = cand.FAMILIES if forced else tuple(kernels)
        bad = [f for f in families if f not in cand.FAMILIES]
        if bad or not families:
            raise ValueError(f"{OWNER}: kernels must name families among {cand.FAMILIES} (or map layer names to "
                             f"kernels), got {list(kernels)!r}")
        if timing_rows < 1:
            raise ValueError(f"{OWNER}: timing_rows must be >= 1, got {timing_rows}")
        skip = resolve_names(model, skip, "skip", OWNER)
        only = resolve_names(model, layers, "layers", OWNER)
        resolve_names(model, forced, "kernels", OWNER)
        self.batches, self.dtype, self.measure = batches, dtype, measure
        self.observer, self.percentile = observer, float(percentile)
        self.u8_between_layers = u8_between_layers
        self.inplace = inplace
        # the float layer each named layer replaced (before pruning or factorization; BatchNorms by their
        # names too): extra, less aggressive candidates "dense int8 (original)" / "torch fp32 (original)"
        # for the accuracy-aware mode
        self.alternatives = dict(alternatives or {})

        work = model if inplace else copy.deepcopy(model)
        work.eval()
        self.trace_error = None
        try:
            gm = trace(work)
        except Exception as exc:  # data-dependent control flow, unsupported Python, ...
            gm = None
            self.trace_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        self.gm, self.work = gm, work
        root = gm if gm is not None else work
        if gm is not None:  # every node's shape, which finding the spatial means needs
            try:
                with torch.no_grad():
                    ShapeProp(gm).propagate(batches[0])
            except Exception:  # noqa: BLE001  (calibration below runs the model and says what failed)
                pass
        # channel means (AdaptiveAvgPool2d(1), x.mean((2, 3))): edgeopt's pool averages a conv's uint8 output
        self.global_pools = global_pools(gm) if gm is not None and dtype == "int8" else []
        self.functional_pools = {name: gm.get_submodule(name).edgeopt_replaces for name in self.global_pools
                                 if hasattr(gm.get_submodule(name), "edgeopt_replaces")}
        modules = dict(root.named_modules())
        # names from the model itself: gm lacks what forward never calls
        self.layers: list[Layer] = find_layers(work, gm, skip, only)
        targets = [layer.name for layer in self.layers if layer.convertible]
        keep_float = {layer.name for layer in self.layers if layer.keep_float}
        gptq = weight_rounding == "gptq" and dtype == "int8"
        rows_for, derived = {}, {}
        for name in targets:
            m = modules[name]
            if isinstance(m, LowRankLinear):
                vt = m.factors()[1]
                derived[name + "/inner"] = (name, lambda x, vt=vt: torch.nn.functional.linear(x, vt))
                if gptq:
                    rows_for[name] = rows_for[name + "/inner"] = linear_rows
            elif gptq and name not in keep_float and gptq_applies(m):
                rows_for[name] = lambda x, n, g, m=m: input_rows(m, x, n, g)
        # calibrate on the traced float model: the same modules, so hooks see what the lowered layers will
        self.stats = calibrate(root, batches, targets + self.global_pools, observer, self.percentile, progress,
                               rows_for, derived, owner=OWNER)
        self.pool_ranges = {name: input_range(self.stats[name], observer, self.percentile)
                            for name in self.global_pools if self.stats[name].count and self.stats[name].dtype ==
                            torch.float32}
        with torch.no_grad():
            if gm is not None:  # the reference output, and every node's shape for the residual fusion
                self.reference = ShapeProp(gm).propagate(batches[0])
            else:
                self.reference = root(batches[0])
        check_calibrated(self.layers, self.stats)
        if gm is not None:
            plan_fusion(gm, self.layers, modules, self.stats)
            if FUSE_RESIDUAL_ADD:
                plan_residual(self.layers, modules)

        bar = Progress(len(targets), f"{OWNER}: choosing kernels") if progress and targets else None
        for layer in self.layers:
            if not layer.convertible:
                continue
            self._build(layer, modules, families)
            if layer.convertible:
                s = self.stats[layer.name]
                if measure and layer.name not in forced:
                    cand.measure_candidates(layer, s, timing_rows, repeats)
                if layer.name in forced:
                    if forced[layer.name] not in layer.candidates:
                        raise ValueError(f"{OWNER}: kernels asks {forced[layer.name]!r} for {layer.name}, which can run "
                                         f"{sorted(layer.candidates)}")
                    layer.kernel = forced[layer.name]
                else:
                    layer.kernel = cand.choose(layer, measure, keep_int8_under_us=keep_int8_under_us)
            if bar is not None:
                bar.advance()
        if bar is not None:
            bar.close()
        for layer in self.layers:
            if not layer.convertible:
                layer.report.reason = layer.reason

    def _build(self, layer: Layer, modules, families) -> None:
        s = self.stats[layer.name]
        folded = layer.module
        if layer.bn_name is not None:
            folded = fold_batchnorm(layer.module, modules[layer.bn_name])
        if isinstance(folded, LowRankLinear):
            folded = copy.deepcopy(folded).freeze().eval() if folded.trainable else folded
        layer.folded = folded.eval()
        inner = self.stats.get(layer.name + "/inner")
        lo, hi = input_range(s, self.observer, self.percentile)
        inner_range = input_range(inner, self.observer, self.percentile) if inner is not None else None
        try:
            layer.candidates = cand.build(layer, s, inner, (lo, hi), inner_range, self.dtype, families)
        except (ValueError, TypeError) as exc:  # e.g. NaN weights, padding="same" with an even kernel
            layer.convertible, layer.reason = False, f"the edgeopt module refused it: {exc}"
            layer.bn_name = layer.bn_node = layer.act = layer.act_node = layer.add_node = None
            return
        original = self.alternatives.get(layer.name)
        if original is not None and type(original) in (nn.Conv2d, nn.Linear) and _fits(original, layer.module):
            alt = copy.copy(layer)
            alt.module = original
            # with the BatchNorm as it was too (its statistics may have been re-estimated for the new weights)
            bn = self.alternatives.get(layer.bn_name, modules.get(layer.bn_name)) if layer.bn_name else None
            alt.folded = (fold_batchnorm(original, bn) if bn is not None else original).eval()
            if torch.equal(alt.folded.weight, _float_weight(layer.folded)):
                return  # nothing changed this layer: no alternative
            alt.report = copy.copy(layer.report)
            extra = cand.build(alt, s, None, (lo, hi), None, self.dtype, ("dense",))
            layer.candidates.update({f"{k} (original)": m for k, m in extra.items()})
        if any(cand.is_int8(k) for k in layer.candidates):
            layer.report.input_range = (lo, hi)
            layer.report.observed_min_max = (s.lo, s.hi)

    # --- building the lowered model ---
    def kernels(self) -> dict[str, str]:
        """The kernel chosen for each lowered layer."""
        return {layer.name: layer.kernel for layer in self.layers if layer.kernel is not None}

    def assemble(self, kernels: Mapping[str, str] | None = None) -> nn.Module:
        """The lowered model with each layer on kernels[name] (default: the chosen kernel)."""
        chosen = self.kernels()
        for name, kernel in (kernels or {}).items():
            layer = next((l for l in self.layers if l.name == name and l.kernel is not None), None)
            if layer is None or kernel not in layer.candidates:
                raise ValueError(f"{OWNER}: no kernel {kernel!r} for layer {name!r}")
            chosen[name] = kernel
        active = [layer for layer in self.layers if layer.name in chosen]
        for layer in active:
            for m in layer.candidates.values():
                reset_hand_offs(m)
            layer.report.u8_output, layer.report.u8_output_to = False, ()
            layer.report.channels_last_output = False
        modules_for = {layer.name: layer.candidates[chosen[layer.name]] for layer in active}
        for layer in active:  # before the hand-offs are linked: SQNR on the float output
            layer.kernel = chosen[layer.name]
            cand.finish_report(layer, self.stats[layer.name])
        if self.gm is None:
            for name, m in modules_for.items():
                set_submodule(self.work, name, m)
            for layer in active:
                layer.report.folded_bn, layer.report.activation, layer.report.residual_add = None, None, False
            self._record(active)
            return self.work.eval()
        if self.inplace:
            gm, view = self.gm, active
        else:
            graph = fx.Graph()
            val_map: dict = {}
            graph.output(graph.graph_copy(self.gm.graph, val_map))
            gm = fx.GraphModule(self.gm, graph, self.gm.__class__.__name__)

            def node(n):
                return None if n is None else val_map[n]

            view = [copy.copy(layer) for layer in active]
            for v in view:
                v.node, v.bn_node, v.act_node, v.add_node = (node(v.node), node(v.bn_node), node(v.act_node),
                                                             node(v.add_node))
        rewrite(gm, view, modules_for, self.pool_ranges)
        if CHANNELS_LAST_BETWEEN_LAYERS:
            link_channels_last(gm, view)
        if self.u8_between_layers:
            link_u8(gm, view, self.pool_ranges)
        restore_float_pools(gm, self.functional_pools)
        self._record(active)
        return gm.eval()

    def _record(self, active: list[Layer]) -> None:
        for layer in active:
            rep = layer.report
            rep.converted = cand.is_int8(layer.kernel) or cand.family(layer.kernel) in ("sparse", "low-rank")
            applied = []
            if rep.folded_bn:
                applied.append(f"+{rep.folded_bn} folded")
            if rep.activation:
                applied.append(f"{describe_activation(rep.activation)} fused")
            if rep.residual_add:
                applied.append("residual add fused")
            if cand.is_int8(layer.kernel):
                applied.append("int8 static" + (" (GPTQ)" if rep.weight_rounding == "gptq" else ""))
            rep.applied = applied
            if not rep.converted:
                rep.reason = layer.keep_float or (
                    f"float measured faster ({rep.kernel_us[layer.kernel]:.0f} us vs int8 "
                    f"{min(v for k, v in rep.kernel_us.items() if cand.is_int8(k)):.0f} us)"
                    if rep.kernel_us and any(cand.is_int8(k) for k in rep.kernel_us) else "kept float")
            else:
                rep.reason = ""

    def report(self, model: nn.Module) -> Report:
        with torch.no_grad():
            result = model(self.batches[0])
        reference = self.reference
        model_sqnr = sqnr_db(reference, result) if isinstance(result, torch.Tensor) and isinstance(
            reference, torch.Tensor) and result.shape == reference.shape else None
        int8 = self.dtype == "int8"
        report = Report([layer.report for layer in self.layers if layer.report is not None],
                        passes=[f"lower ({self.dtype})"], model_sqnr_db=model_sqnr,
                        observer=self.observer if int8 else None,
                        percentile=self.percentile if int8 and self.observer == "percentile" else None,
                        calibration_batches=len(self.batches),
                        calibration_samples=sum(int(x.shape[0]) for x in self.batches),
                        traced=self.gm is not None, trace_error=self.trace_error,
                        u8_between_layers=bool(self.u8_between_layers and self.gm is not None and int8))
        if self.u8_between_layers and self.gm is None and int8:
            report.notes.append("u8_between_layers needs a traced graph; every layer returns float32")
        return report


def quantize(model: nn.Module, data=None, *, dtype: str = "int8",
             kernels: Iterable[str] | Mapping[str, str] = cand.FAMILIES, measure: bool = True,
             observer: str = "percentile", percentile: float = 99.99, skip: Iterable[str] = (),
             layers: Iterable[str] | None = None, inplace: bool = False,
             u8_between_layers: bool = U8_BETWEEN_LAYERS_DEFAULT, progress: bool = True,
             weight_rounding: str = "gptq", timing_rows: int = 1, keep_int8_under_us: float = 0.0,
             **renamed) -> tuple[nn.Module, Report]:
    """Lower a model's Conv2d, Linear and LowRankLinear layers to int8 (or `dtype="fp32"`: float kernels
    only); returns (lowered model, Report).

    data: calibration inputs: an iterable of model inputs (float tensors, or (input, label) pairs such as a
        DataLoader yields; a single tensor counts as one batch). A few hundred samples is typical.
        (`calibration_data=` is its former name.)
    kernels: the kernel families a layer may run on, among ("dense", "sparse", "low-rank"): sparse for
        weights with zeros (after edgeopt.prune), low-rank for LowRankLinear (after edgeopt.low_rank); or a
        dict {layer name: kernel} forcing the kernel of those layers ("sparse int8", "dense int8",
        "torch fp32", ... as the report names them).
    measure: time each layer's candidate kernels on its calibration input (`timing_rows` samples, this
        machine, now) and keep the fastest int8 one (a float one only when clearly faster); without, a
        sparse kernel where at most half the blocks are stored, low-rank where factorized, else dense.
    observer: how each layer's input range is chosen: "minmax", "percentile" (the `percentile`-th and
        (100 - `percentile`)-th percentiles, exact), or "mse" (least expected quantization error).
    skip: layer names (as in model.named_modules()) to leave as they are; layers: if given, only these.
    inplace: work on the model's own modules instead of a deep copy (saves memory); the model passed in
        must then not be used any more.
    u8_between_layers: where a lowered conv's output goes only into other int8 layers that take uint8, it
        emits uint8 in their input parameters instead of float32.
    weight_rounding: "gptq" (minimise each layer's output error on the calibration inputs; long reductions
        and grouped convs use nearest rounding) or "nearest".
    keep_int8_under_us: with measure, an int8 kernel measured under this many microseconds stays even where
        a float one measured faster. The measurement times a layer as a module call (~20 us of Python each);
        under edgeopt.runtime a plan node costs ~1 us and every float layer splits the plan, so for a
        model that goes to edgeopt.runtime.compile ~50 keeps small layers int8. 0 (default): time decides.
    """
    data = renamed_keyword(renamed, "calibration_data", "data", data, OWNER)
    if renamed:
        raise TypeError(f"{OWNER}() got unexpected keyword arguments {sorted(renamed)}")
    if data is None:
        raise ValueError(f"{OWNER}: data is required (calibration inputs: an iterable of model inputs)")
    batches = model_inputs(data, OWNER, "calibration data")
    lowering = Lowering(model, batches, dtype=dtype, kernels=kernels, measure=measure, observer=observer,
                        percentile=percentile, skip=skip, layers=layers, inplace=inplace,
                        u8_between_layers=u8_between_layers, progress=progress, weight_rounding=weight_rounding,
                        timing_rows=timing_rows, keep_int8_under_us=keep_int8_under_us)
    lowered = lowering.assemble()
    return lowered, lowering.report(lowered)


def fusion_plan(model: nn.Module, example_input: torch.Tensor, skip: Iterable[str] = ()) -> dict[str, dict]:
    """What `quantize` would fold and fuse, without converting anything: {layer name: {"bn": BatchNorm
    name or None, "activation": fused activation or None}} for every layer it would convert. Raises what
    torch.fx raises if not traceable."""
    model = copy.deepcopy(model).eval()
    gm = trace(model)
    modules = dict(gm.named_modules())
    layers = find_layers(model, gm, set(skip))
    targets = [layer.name for layer in layers if layer.convertible]
    stats = calibrate(gm, model_inputs(example_input, OWNER), targets, "minmax", 100.0, progress=False, owner=OWNER)
    check_calibrated(layers, stats)
    plan_fusion(gm, layers, modules, stats)
    return {layer.name: {"bn": layer.bn_name, "activation": layer.act} for layer in layers if layer.convertible}


def _fits(original: nn.Module, current: nn.Module) -> bool:
    """The original layer is a drop-in alternative to the current one: the same mapping shape."""
    if isinstance(current, LowRankLinear):
        return isinstance(original, nn.Linear) and (original.in_features, original.out_features) == (
            current.in_features, current.out_features)
    return type(original) is type(current) and original.weight.shape == current.weight.shape


def _float_weight(m: nn.Module) -> torch.Tensor:
    if isinstance(m, LowRankLinear):
        u, vt, _ = m.factors()
        return (u.double() @ vt.double()).float()
    return m.weight


QuantizeReport = Report

__all__ = ["Lowering", "OBSERVERS", "QuantizeReport", "Report", "Stats", "fold_batchnorm", "fusion_plan",
           "gptq_round", "quantize", "sqnr_db"]
