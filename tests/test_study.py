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


def test_profile_piece_profiles_the_best_row(tiny, tmp_path):
    out = tmp_path / "study"
    cfg = runner.Config(out=out, models=("tiny",), rows=("fp32", "int8"), threads=1, blocks=1,
                        seconds_per_block=0.005, loaded=False, profile=True)
    text = runner.Study(cfg, log=lambda m: None).run().read_text()
    prof = json.loads((out / "timing" / "tiny.profile.json").read_text())["profile"]
    timing = json.loads((out / "timing" / "tiny.json").read_text())
    assert prof["row"] == report.best_row("tiny", {r: {**json.loads((out / "rows" / "tiny" / f"{r}.json").read_text()),
                                                       "median_ms": timing["quiet"][r]["median_ms"]}
                                                   for r in ("fp32", "int8")})[0]
    assert (out / "profile" / "tiny" / "profile.md").is_file()
    assert f"Profile, fp32 against {prof['row']}" in text


def test_time_stage_resumes_within_a_budget(tiny, monkeypatch, tmp_path):
    other = subjects.Subject("tiny2", "tiny DS-CNN, second (speed only)", "dscnn_small", (1, 40, 64))
    monkeypatch.setitem(subjects.SUBJECTS, "tiny2", other)
    out = tmp_path / "study"
    common = dict(out=out, models=("tiny", "tiny2"), rows=("fp32", "int8"), threads=1, blocks=1,
                  seconds_per_block=0.005, loaded=False, profile=False)
    runner.Study(runner.Config(stages=("build",), **common), log=lambda m: None).run()
    timed = lambda log: [line for line in log if "timing 2 rows" in line]  # noqa: E731
    # budget 0: the first piece always runs, the second is left for the next run
    log = []
    study = runner.Study(runner.Config(stages=("time",), budget=0.0, **common), log=log.append)
    study.run()
    assert len(timed(log)) == 1 and "tiny:" in timed(log)[0]
    assert study.left == [("time", "tiny2")] and any("1 timing piece(s) left" in line for line in log)
    assert (out / "timing" / "tiny.json").is_file() and not (out / "timing" / "tiny2.json").exists()
    # the next run times only what is left
    log = []
    study = runner.Study(runner.Config(stages=("time",), budget=0.0, **common), log=log.append)
    study.run()
    assert len(timed(log)) == 1 and "tiny2:" in timed(log)[0] and study.left == []
    # nothing changed: nothing is timed again; a rebuilt row invalidates that model's timing only
    log = []
    runner.Study(runner.Config(stages=("time",), **common), log=log.append).run()
    assert timed(log) == []
    row = out / "rows" / "tiny2" / "int8.json"
    row.write_text(row.read_text().replace('"key": "', '"key": "changed-'))
    log = []
    runner.Study(runner.Config(stages=("time",), **common), log=log.append).run()
    assert len(timed(log)) == 1 and "tiny2:" in timed(log)[0]
    durations = json.loads((runner.Study(runner.Config(**common)).cache / "durations.json").read_text())
    assert durations["time/tiny/"] > 0 and durations["time/tiny2/"] > 0


def test_study_command_exits_3_while_timing_pieces_are_left(tiny, monkeypatch, tmp_path):
    other = subjects.Subject("tiny2", "tiny DS-CNN, second (speed only)", "dscnn_small", (1, 40, 64))
    monkeypatch.setitem(subjects.SUBJECTS, "tiny2", other)
    args = ["study", "--models", "tiny,tiny2", "--rows", "fp32", "--threads", "1", "--blocks", "1", "--seconds",
            "0.005", "--no-loaded", "--no-profile", "--out", str(tmp_path / "s")]
    assert cli.main([*args, "--stage", "build"]) == 0
    assert cli.main([*args, "--stage", "time,report", "--budget", "0"]) == 3
    assert cli.main([*args, "--stage", "time,report", "--budget", "0"]) == 0


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


def _profiled(fp32_ms, int8_ms, compute_ms, memory_ms):
    rows = {"fp32": _entry("fp32", 0.9, fp32_ms, "base"), "int8": _entry("int8", 0.9, int8_ms)}
    prof = {"row": "int8", "fp32_by_bound_ms": {"compute": compute_ms, "memory": memory_ms},
            "best_by_bound_ms": {"compute": 1.0, "overhead": 3.0}}
    return {"rows": rows, "timing": {"profile": prof}}


def test_conclusions_are_computed_from_the_rows_and_profiles():
    data = {"ravdess": _profiled(10.0, 4.0, 8.0, 2.0), "cifar10": _profiled(10.0, 8.0, 2.0, 8.0)}
    text = "\n".join(report.conclusions(data))
    # the ranking of rows: int8 is 2.5x on a and 1.25x on b -> geometric mean sqrt(3.125)
    assert f"{math.sqrt(2.5 * 1.25):.2f}x fp32 eager (range 1.25-2.50x over 2 models)" in text
    assert "- ravdess: fp32 compute 80%, memory 20%; int8 PTQ 2.50x fp32 eager; left in int8: overhead 75%, compute 25%" in text
    assert "2.50x fp32 eager (geometric mean) on the 1 model(s) whose fp32 time is at least half compute-bound, " \
           "1.25x on the 1 other(s)" in text
    assert text.index("- ravdess: fp32") < text.index("- cifar10: fp32")  # most compute-bound first
    assert "best is *int8 PTQ*" in text and "2.50x fp32 eager" in text
    # other figures, other conclusions: int8 now pays more on the memory-bound model
    data["cifar10"]["rows"]["int8"]["median_ms"] = 2.0
    text = "\n".join(report.conclusions(data))
    assert "- cifar10: fp32 memory 80%, compute 20%; int8 PTQ 5.00x fp32 eager" in text
    assert "2.50x fp32 eager (geometric mean) on the 1 model(s) whose fp32 time is at least half compute-bound, " \
           "5.00x on the 1 other(s)" in text


def test_stored_weights_counts_what_layers_keep():
    from edgeopt.nn import QuantConv2d

    conv = nn.Conv2d(4, 8, 3)
    q = QuantConv2d.from_float(conv, input_range=(-1.0, 1.0))
    assert runner.stored_weights(nn.Sequential(conv)) == 8 * 4 * 9 + 8
    assert runner.stored_weights(nn.Sequential(q)) == 8 * 4 * 9
    assert runner.stored_weights(lambda x: x) is None
