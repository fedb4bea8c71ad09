"""Pieces every pass shares: replacing a submodule, reading the data argument, watching layer inputs.

Written once here instead of in each pass (quantize, prune, low_rank, sparsify each had their own copy).
"""
from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called `name` (dotted, as in named_modules()) by `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def model_inputs(data, owner: str = "edgeopt", what: str = "data") -> list[torch.Tensor]:
    """Model inputs from `data`: an iterable of tensors or (input, label) pairs (a DataLoader), or one
    tensor (one batch). Every item must be a non-empty float tensor with a batch dimension, all finite."""
    if isinstance(data, torch.Tensor):
        data = [data]
    if data is None:
        raise ValueError(f"{owner}: {what} is required (an iterable of model inputs)")
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(f"{owner}: {what} must be an iterable of input tensors or (input, label) pairs, got "
                        f"{type(data).__name__}") from None
    batches = []
    for i, item in enumerate(iterator):
        if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"{owner}: {what} item {i} is a {type(item).__name__}; expected a tensor or an "
                            "(input, label) pair")
        if not item.is_floating_point():
            raise TypeError(f"{owner}: {what} item {i} has dtype {item.dtype}; expected float inputs")
        if item.dim() == 0:
            raise ValueError(f"{owner}: {what} item {i} is a scalar; expected a batch of inputs")
        if item.numel() == 0:
            raise ValueError(f"{owner}: {what} item {i} is empty (shape {tuple(item.shape)}); expected a batch of at "
                             "least one input")
        bad = int((~torch.isfinite(item)).sum())
        if bad:
            raise ValueError(f"{owner}: {what} item {i} holds {bad} NaN or Inf value(s); model inputs must be finite "
                             "(one would leave every layer it reaches without a range)")
        batches.append(item.detach())
    if not batches:
        raise ValueError(f"{owner}: {what} is empty; pass a few batches of model inputs")
    return batches


InputHook = Callable[[nn.Module, torch.Tensor], None]


@torch.no_grad()
def observe_inputs(model: nn.Module, hooks: Mapping[str, InputHook], batches: Iterable[torch.Tensor], *,
                   output_hooks: Mapping[str, Callable[[nn.Module, Any], None]] | None = None,
                   owner: str = "edgeopt", what: str = "batch",
                   on_batch: Callable[[int], None] | None = None) -> None:
    """Run `batches` through `model` in eval mode (its mode is restored after), calling hooks[name](module,
    x) with the first input of every call of the submodule `name`, and output_hooks[name](module, output)
    after it. A model that fails on a batch raises ValueError naming the batch."""
    modules = dict(model.named_modules())

    def pre(hook):
        def call(module, inputs):
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor):
                hook(module, x)
        return call

    def post(hook):
        return lambda module, _inputs, output: hook(module, output)

    handles = [modules[name].register_forward_pre_hook(pre(h)) for name, h in hooks.items()]
    handles += [modules[name].register_forward_hook(post(h)) for name, h in (output_hooks or {}).items()]
    was_training = model.training
    model.eval()
    try:
        for i, x in enumerate(batches):
            if on_batch is not None:
                on_batch(i)
            try:
                model(*x) if isinstance(x, tuple) else model(x)
            except Exception as exc:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{owner}: the model failed on {what} {i} (input {shape}): {type(exc).__name__}: "
                                 f"{exc}") from exc
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def first_inputs(model: nn.Module, names: Iterable[str], example, owner: str = "edgeopt") -> dict[str, torch.Tensor]:
    """The input each named submodule sees first when `example` (one model input, or a tuple of
    inputs) runs through the model; names not reached are missing from the result."""
    seen: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(_module, x):
            seen.setdefault(name, x.detach().clone())
        return hook

    observe_inputs(model, {n: hook_for(n) for n in names}, [example], owner=owner)
    return seen


def resolve_names(model: nn.Module, names: Iterable[str] | None, what: str, owner: str) -> set[str] | None:
    """`names` as a set after checking each names a submodule of `model` (None stays None)."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    names = set(names)
    unknown = sorted(names - {n for n, _ in model.named_modules()})
    if unknown:
        raise ValueError(f"{owner}: {what} names no module of the model: {', '.join(unknown)}")
    return names


def renamed_keyword(kwargs: dict, old: str, new: str, value, owner: str):
    """The value of keyword `new`, or of its former name `old` (given in kwargs), not both."""
    if old in kwargs:
        old_value = kwargs.pop(old)
        if value is not None:
            raise TypeError(f"{owner}: give {new}= only ({old}= is its former name)")
        return old_value
    return value


def callable_module(module_name: str, function: Callable) -> None:
    """Make the module `module_name` callable as `function`: `import edgeopt.quantize` binds the package
    attribute to the module, so the module itself must be the function for `edgeopt.quantize(model, ...)`
    to keep working after that import."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of `test` against `ref`, in dB (inf when equal)."""
    ref, test = ref.detach().double(), test.detach().double()
    noise = (ref - test).pow(2).mean()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(ref.pow(2).mean() / noise))
