"""The demo's two models: the shipped optimized model is the current recipe's, loads, and is rebuilt and
cached when it does not fit."""
import numpy as np
import pytest
import torch

from edgeopt.data import DataError, data_root
from edgeopt.demo import models


def _has_data() -> bool:
    try:
        return (data_root() / "ravdess").is_dir()
    except DataError:
        return False


needs_data = pytest.mark.skipif(not _has_data(), reason="shared data not found (set EDGEOPT_DATA)")


@needs_data
def test_shipped_optimized_model_is_the_current_recipe_and_int8():
    from edgeopt.demo.stream import Playlist, ticks
    from edgeopt.models import load_pretrained
    from edgeopt import nn as enn

    assert models.SHIPPED.is_file() and models.SHIPPED.stat().st_size < 400_000
    model, meta = models.load_artifact(models.SHIPPED)  # raises ArtifactMismatch for another recipe / format
    assert sum(isinstance(m, (enn.QuantConv2d, enn.SparseConv2d)) for m in model.modules()) >= 4
    student = load_pretrained(models.OPTIMIZED_RECIPE["student"])
    windows = [t.window for t in ticks(Playlist.ravdess(limit=6), max_seconds=18) if t.clip >= 0 and t.seq % 3 == 0]
    x = torch.from_numpy(np.stack(windows)).unsqueeze(1)
    with torch.inference_mode():
        agree = (model(x).argmax(1) == student(x).argmax(1)).float().mean().item()
    assert len(windows) >= 30 and agree >= 0.9, (len(windows), agree)


def test_an_artifact_of_another_recipe_or_format_is_refused(tmp_path):
    other = dict(models.OPTIMIZED_RECIPE, quantize={"observer": "minmax"})
    path = models.save_artifact(torch.nn.Linear(2, 2), {}, tmp_path / "m.pt", recipe=other)
    with pytest.raises(models.ArtifactMismatch, match="recipe"):
        models.load_artifact(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(models.ArtifactMismatch, match="cannot read"):
        models.load_artifact(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="role"):
        models.load("nonsense")


@needs_data
def test_prepare_builds_once_and_caches_when_the_shipped_model_does_not_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path / "cache"))
    # the recipe's model, calibrated on fewer windows and lowered without timing each layer's kernels (the
    # recipe's own build takes minutes: GPTQ and a measured kernel choice for every layer)
    recipe = dict(models.OPTIMIZED_RECIPE, calibration={"split": "val", "samples": 32, "batch": 16},
                  quantize=dict(models.OPTIMIZED_RECIPE["quantize"], weight_rounding="nearest", measure=False))
    shipped = tmp_path / "shipped.pt"
    shipped.write_bytes(b"truncated")
    monkeypatch.setattr(models, "SHIPPED", shipped)
    logs = []
    path = models.prepare_optimized(logs.append, recipe)
    assert path == models.cached_path(recipe) and path.is_file()
    assert any("not using" in line for line in logs) and any("building" in line for line in logs)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    model, _ = models.load_artifact(path, recipe)
    assert model(torch.zeros(models.INPUT_SHAPE)).shape == (1, 8)
    monkeypatch.setattr(models, "build_optimized", lambda *a, **k: pytest.fail("rebuilt instead of using the cache"))
    assert models.prepare_optimized(logs.append, recipe) == path
