"""edgeopt.profile and `edgeopt profile`: structure, accounting and outputs (never a timing)."""
import json
import math

import pytest
import torch
from torch import nn

import edgeopt
from edgeopt import cli
from edgeopt.perf import plots


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 4)).eval()


@pytest.fixture(scope="module")
def result():
    model = small_cnn()
    x = torch.randn(1, 3, 16, 16)
    # measure=False: kernels chosen by rule, not by a timing on a loaded machine (the test checks structure)
    qmodel, _ = edgeopt.quantize(model, [torch.randn(4, 3, 16, 16)], progress=False, measure=False)
    return edgeopt.profile(model, x, optimized=qmodel, threads=1, blocks=2, seconds_per_block=0.01,
                           labels=("fp32", "int8"), name="small", ceiling_seconds=0.005)


def test_profile_accounts_for_every_step(result):
    for p in (result.before, result.after):
        assert p.layers and p.end_to_end.n >= 4 and p.instrumented.n >= 4
        assert math.isclose(sum(layer.seconds for layer in p.layers), p.layers_seconds)
        assert math.isclose(sum(layer.share for layer in p.layers), 1.0)
        assert math.isclose(p.accounting_error, p.layers_seconds / p.end_to_end.median - 1)
    # every step of both models lands in exactly one row
    assert sum(len(r.before) for r in result.rows) == len(result.before.layers)
    assert sum(len(r.after) for r in result.rows) == len(result.after.layers)
    names = [r.name for r in result.rows]
    assert names[0] == "0" and "4" in names and "8" in names  # the convs and the head, by module name
    first = result.rows[0]
    assert [layer.step.op for layer in first.after][0] == "QuantConv2d"
    assert {layer.step.op for layer in first.before} >= {"Conv2d", "BatchNorm2d"}  # folded into the int8 conv


def test_profile_classifies_with_the_ceilings_of_the_run(result):
    if result.ceilings is None:
        pytest.skip("no AVX2: no ceilings")
    assert result.ceilings.threads == 1 and result.ceilings.int8_gmacs > 0 and result.ceilings.read_gbs > 0
    bounds = {layer.bound for layer in result.after.layers}
    assert bounds <= {"compute", "memory", "overhead"} and bounds
    conv = next(layer for layer in result.after.layers if layer.step.op == "QuantConv2d")
    assert conv.cost.int8 and conv.compute_fraction == pytest.approx(conv.gmacs / result.ceilings.int8_gmacs)


def test_profile_outputs(result, tmp_path):
    text = str(result)
    assert "layers sum to" in text and "QuantConv2d" in text and "speedup" in text
    written = result.save(tmp_path, plots=True)
    data = json.loads(written["json"].read_text())
    assert data["after"]["layers"][0]["op"] == "QuantConv2d"
    assert math.isclose(data["before"]["layers_ms"], sum(layer["ms"] for layer in data["before"]["layers"]))
    assert "## Before and after" in written["markdown"].read_text()
    if plots.preload():
        for key in ("roofline", "layers"):
            assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_say_why_without_matplotlib(result, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(plots.PlotsUnavailable, match=r"edgeopt\[plots\]"):
        plots.roofline(result, tmp_path / "r.png")
    written = result.save(tmp_path / "out", plots=True)
    assert "roofline" not in written and any("matplotlib is not installed" in n for n in result.notes)


def test_profile_single_model_has_no_after():
    model = small_cnn()
    r = edgeopt.profile(model, torch.randn(1, 3, 16, 16), threads=1, blocks=1, seconds_per_block=0.01,
                        ceilings=False)
    assert r.after is None and r.ceilings is None and len(r.rows) >= 3
    assert "time by bound" in str(r)


def test_profile_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEOPT_NO_SHIM_REEXEC", "1")
    out = tmp_path / "prof"
    rc = cli.main(["profile", "dscnn_small", "--input-shape", "1,40,64", "--optimized", "int8", "--threads", "1",
                   "--blocks", "1", "--seconds", "0.01", "--ceiling-seconds", "0.005", "--out", str(out), "--no-plots"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "edgeopt profile: dscnn_small" in text and "int8:" in text
    data = json.loads((out / "profile.json").read_text())
    assert data["threads"] == 1 and data["after"]["label"] == "int8"


def test_profile_command_rejects_unknown_model(monkeypatch):
    monkeypatch.setenv("EDGEOPT_NO_SHIM_REEXEC", "1")
    with pytest.raises(ValueError, match="neither a study model"):
        cli.main(["profile", "no_such_model"])
