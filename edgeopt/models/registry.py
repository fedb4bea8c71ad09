"""Name -> model constructor registry, so CLIs, checkpoints and benchmarks refer to models by name."""
from __future__ import annotations

from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = builder
        return builder

    return decorator


def get_model(name: str, **kwargs) -> nn.Module:
    """Build a freshly initialised model by registry name; `kwargs` go to its constructor."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**kwargs)


def list_models() -> list[str]:
    return sorted(_MODELS)
