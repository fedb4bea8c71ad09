"""Ordinary command-line mistakes: one line on stderr naming the mistake, exit status 2, and no data loaded or
training started first (the dataset and training entry points are replaced by tripwires)."""
import importlib

import pytest

from edgeopt import cli
from edgeopt.training import tasks
from edgeopt.training.loop import FitConfig

CASES = {
    "unknown task": (["train", "nosuchtask"], "invalid choice"),
    "unknown model": (["train", "ravdess", "--model", "nosuchnet"], "unknown model 'nosuchnet'"),
    "model arg without =": (["train", "ravdess", "--model-arg", "width"], "expected KEY=VALUE"),
    "model arg the model refuses": (["train", "ravdess", "--model-arg", "nosuchkw=3"], "nosuchkw"),
    "zero epochs": (["train", "ravdess", "--epochs", "0"], "--epochs: must be at least 1"),
    "zero threads": (["train", "ravdess", "--threads", "0"], "--threads: must be at least 1"),
    "not a number": (["train", "ravdess", "--lr", "fast"], "expected a number"),
    "bad data root": (["train", "ravdess", "--data-root", "/nonexistent/data"], "is not a directory"),
    "alpha above 1": (["distill", "ravdess", "--teacher", "ravdess_vgg_audio", "--student", "vgg_audio_small",
                       "--alpha", "1.5"], "--alpha: must be in [0, 1]"),
    "missing checkpoint": (["eval", "ravdess", "--model", "missing.pt"], "no such checkpoint file"),
    "unknown reference model": (["eval", "ravdess", "--model", "nosuch_reference"], "nosuch_reference"),
    "task mismatch": (["eval", "fsdd", "--model", "ravdess_vgg_audio"], "trained on 'ravdess', not 'fsdd'"),
    "zero runs": (["compare", "ravdess", "ravdess_vgg_audio", "--runs", "0"], "--runs: must be at least 1"),
    "unknown recipe": (["reproduce", "nosuch_recipe"], "no reference recipe named 'nosuch_recipe'"),
    "zero eval images": (["demo", "--task", "mnist", "--eval-images", "0"], "--eval-images: must be at least 1"),
    "zero demo threads": (["demo", "--threads", "0"], "--threads: must be at least 1"),
    "profile zero blocks": (["profile", "ravdess", "--blocks", "0"], "--blocks: must be at least 1"),
    "study negative seconds": (["study", "--seconds", "-1"], "--seconds: must be a positive finite number"),
}


@pytest.fixture
def tripwires(monkeypatch):
    def loaded(*args, **kwargs):
        raise AssertionError("the command loaded data before checking its arguments")

    monkeypatch.setattr(tasks.Task, "dataset", loaded)
    # edgeopt.training re-exports functions named like its modules: patch the modules themselves
    monkeypatch.setattr(importlib.import_module("edgeopt.training.train"), "train", loaded)
    monkeypatch.setattr(importlib.import_module("edgeopt.training.distill"), "distill_task", loaded)


@pytest.mark.parametrize("case", CASES)
def test_mistake_is_one_line_and_exit_status_2(case, tripwires, capsys):
    argv, text = CASES[case]
    try:
        status = cli.main(argv)
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    assert status == 2, (status, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeopt") and "error:" in lines[0] and text in lines[0], lines[0]
    assert "Traceback" not in out + err


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(epochs=-2), dict(batch_size=0), dict(lr=0.0),
                                 dict(epochs=True)])
def test_fit_config_refuses_what_would_train_nothing(bad):
    with pytest.raises(ValueError, match="FitConfig"):
        FitConfig(**bad)
