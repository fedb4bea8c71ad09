"""edgeopt study: the stages, the per-row cache, the report's arithmetic. Tiny models; no timing asserted."""
import json
import math

import pytest
import torch
from torch import nn

from edgeopt import cli
from edgeopt.study import recipes, report, runner, subjects


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A speed-only subject small enough for the suite, and a private cache."""
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEOPT_NO_SHIM_REEXEC", "1")
    subject = subjects.Subject("tiny", "tiny DS-CNN (speed only)", "dscnn_small", (1, 40, 64))
    monkeypatch.setitem(subjects.SUBJECTS, "tiny", subject)
    return subject


def test_study_stages_cache_rows_and_write_the_report(tiny, tmp_path):
    out = tmp_path / "study"
    cfg = runner.Config(out=out, models=("tiny",), rows=("fp32", "fp16", "int8", "student"), threads=1, blocks=1,
                        seconds_per_block=0.005, loaded=False, profile=False)
    log = []
    path = runner.Study(cfg, log=log.append).run()
    rows = {r: json.loads((out / "rows" / "tiny" / f"{r}.json").read_text()) for r in cfg.rows}
    assert rows["fp32"]["status"] == rows["fp16"]["status"] == rows["int8"]["status"] == "ok"
    assert rows["student"]["status"] == "not applicable" and "training data" in rows["student"]["reason"]
    assert rows["int8"]["macs"] == rows["fp32"]["macs"] > 0
    assert rows["int8"]["bytes_on_disk"] < rows["fp32"]["bytes_on_disk"]  # int8 weights
    timing = json.loads((out / "timing" / "tiny.json").read_text())
    assert set(timing["quiet"]) == {"fp32", "fp16", "int8"} and "student" in timing["not_timed"]
    text = path.read_text()
    assert "## Conclusions" in text and "int8 PTQ (int8)" in text and "not applicable" in text
    assert json.loads((out / "results.json").read_text())["tiny"]["rows"]["int8"]["median_ms"] > 0
    # a second run finds every row in the cache: nothing is built again
    log.clear()
    runner.Study(cfg, log=log.append).run()
    assert not any("build, accuracy" in line for line in log)


def test_study_command_lists_rows(capsys):
    assert cli.main(["study", "--list"]) == 0
    text = capsys.readouterr().out
    assert "prune80_int8" in text and "[quick]" in text and "ravdess" in text


def test_study_command_rejects_unknown_names(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        cli.main(["study", "--models", "nope", "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="unknown recipe"):
        cli.main(["study", "--models", "tiny", "--rows", "nope", "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="unknown stage"):
        cli.main(["study", "--stage", "bake", "--out", str(tmp_path / "s")])


def test_eta_scales_the_remaining_estimate_by_what_the_done_pieces_took(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: now[0])
    pieces = [("time", "fsdd", ""), ("time", "fsdd", "x"), ("build", "fsdd", "int8")]
    eta = runner.Eta(pieces, log=lambda m: None)
    estimate = runner._ESTIMATE["time"]["fsdd"]
    assert eta.seconds_left() == 2 * estimate + runner._ESTIMATE["build"]["fsdd"]
    eta.begin(pieces[0], "first")
    now[0] = estimate / 2                  # took half its estimate
    eta.end(pieces[0])
    assert math.isclose(eta.seconds_left(), (estimate + runner._ESTIMATE["build"]["fsdd"]) / 2)
    eta.end(pieces[2], cached=True)        # found in the cache: no time, leaves the count
    assert eta.total == 2 and math.isclose(eta.seconds_left(), estimate / 2)


def _entry(row, acc, ms, kind="edgeopt"):
    return {"row": row, "label": recipes.RECIPES[row].label, "status": "ok", "kind": kind, "accuracy": acc,
            "median_ms": ms, "p95_ms": ms * 1.1}


def test_best_row_respects_the_accuracy_budget():
    entries = {"fp32": _entry("fp32", 0.80, 10.0, "base"), "int8": _entry("int8", 0.795, 4.0),
               "prune90": _entry("prune90", 0.70, 2.0), "ov_int8": _entry("ov_int8", 0.79, 3.0, "peer")}
    row, why = report.best_row("ravdess", entries)
    assert row == "int8" and "within 1 point" in why
    lines = report.conclusions({"ravdess": {"rows": entries, "timing": {}}})
    text = "\n".join(lines)
    assert "2.50x fp32 eager" in text and "0.75x OpenVINO int8" in text


def test_stored_weights_counts_what_layers_keep():
    from edgeopt.nn import QuantConv2d

    conv = nn.Conv2d(4, 8, 3)
    q = QuantConv2d.from_float(conv, input_range=(-1.0, 1.0))
    assert runner.stored_weights(nn.Sequential(conv)) == 8 * 4 * 9 + 8
    assert runner.stored_weights(nn.Sequential(q)) == 8 * 4 * 9
    assert runner.stored_weights(lambda x: x) is None
