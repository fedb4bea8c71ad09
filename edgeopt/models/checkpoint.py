"""Checkpoint files and the trained reference models.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``): the registry name and
constructor arguments of the model, its state_dict, and metadata saying how it was made (command, seed,
data version, metrics, feature settings). Rebuilding from name + kwargs instead of pickling the module
keeps checkpoints loadable across code changes that do not touch parameter names.

Reference models are looked up first in ``edgeopt/checkpoints/`` (small ones committed with the
package), then in the cache directory that ``edgeopt reproduce`` writes to.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from edgeopt.files import atomic_save

from edgeopt.models.registry import get_model

CHECKPOINT_FORMAT = 1
PACKAGE_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
CACHE_ENV_VAR = "EDGEOPT_CACHE"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or was written in an incompatible format."""


class PretrainedNotFoundError(FileNotFoundError):
    """No checkpoint exists yet for a reference model; the message says which command makes it."""


def cache_dir() -> Path:
    """``$EDGEOPT_CACHE``, else ``<repo>/.edgeopt-cache`` in a source checkout, else ``~/.cache/edgeopt``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    if (_REPO_ROOT / "pyproject.toml").is_file():
        return _REPO_ROOT / ".edgeopt-cache"
    return Path.home() / ".cache" / "edgeopt"


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_name: str, model_kwargs: dict | None = None,
                    **metadata) -> Path:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model_name,
        "model_kwargs": dict(model_kwargs or {}),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    return atomic_save(payload, path)  # never a half-written checkpoint under the real name


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """``(model in eval mode, metadata)`` from a file written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an edgeopt checkpoint of format {CHECKPOINT_FORMAT}")
    model = get_model(payload["model_name"], **payload["model_kwargs"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit model {payload['model_name']}: {exc}") from exc
    meta = dict(payload["metadata"], model_name=payload["model_name"], model_kwargs=payload["model_kwargs"])
    return model.eval(), meta


def pretrained_path(name: str) -> Path:
    for folder in (PACKAGE_CHECKPOINTS, cache_dir() / "checkpoints"):
        path = folder / f"{name}.pt"
        if path.is_file():
            return path
    raise PretrainedNotFoundError(
        f"no trained checkpoint {name!r} in {PACKAGE_CHECKPOINTS} or {cache_dir() / 'checkpoints'}; "
        f"make it with `edgeopt reproduce {name}` (list them with `edgeopt reproduce --list`)"
    )


def load_pretrained(name: str, with_metadata: bool = False):
    """A trained reference model (e.g. ``"ravdess_vgg_audio"``) in eval mode; with `with_metadata`,
    ``(model, metadata)`` where metadata holds the feature settings, metrics and producing command."""
    model, meta = load_checkpoint(pretrained_path(name))
    return (model, meta) if with_metadata else model
