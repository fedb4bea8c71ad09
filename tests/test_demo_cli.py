"""`edgeopt demo` headless (what CI runs) and the terminal view's table."""
import io
import json
import os
import subprocess
import sys

import pytest

from edgeopt.data import DataError, data_root
from edgeopt.demo.stats import DemoStats


def _has_data() -> bool:
    try:
        return (data_root() / "ravdess").is_dir()
    except DataError:
        return False


@pytest.mark.skipif(not _has_data(), reason="shared data not found (set EDGEOPT_DATA)")
def test_headless_run_streams_to_both_models_and_prints_the_summary(tmp_path):
    out = tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "edgeopt", "demo", "--seconds", "8", "--busy-after", "4", "--no-browser",
           "--port", "0", "--limit", "6", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for expected in ("3/3 streaming", "latency p50 ms", "CPU, % of one core", "one core busy", "targets:",
                     "accuracy, same windows"):
        assert expected in text, expected
    s = json.loads(out.read_text())
    assert s["error"] is None
    assert set(s["phases"]) == {"quiet", "busy"}
    for role in ("baseline", "optimized"):
        m = s["models"][role]
        assert m["processed"] > 30, (role, m)
        assert m["info"]["threads"] == 2
        quiet = s["phases"]["quiet"][role]
        assert 0 < quiet["latency_p50_ms"] <= quiet["latency_p95_ms"] <= quiet["latency_max_ms"]
        assert quiet["cpu_percent"] > 0
        if "per-library switches" in s["isa"] or "avx2only" in s["isa"]:  # masked: the models must report AVX2
            assert m["info"]["torch_cpu_capability"] == "AVX2", m["info"]
    assert s["models"]["optimized"]["info"]["edgeopt_isa"] in ("avx2", "ref")
    assert s["source"]["kind"] == "files" and s["paired"]["windows"] > 0


def test_terminal_view_table_shows_both_models_and_the_ratio():
    from rich.console import Console

    from edgeopt.demo.tui import _table

    stats = DemoStats(30, [f"class{i}" for i in range(8)])
    stats.set_source({"kind": "files", "seconds": 10.0, "utterances": [(3, "03-01-04-01-01-01-21", 21)]})
    stats.start_clock()
    for seq in range(40):
        for role, latency, cpu in (("baseline", 0.008, 0.5), ("optimized", 0.002, 0.1)):
            probs = [0.0] * 8
            probs[3] = 1.0
            stats.add_result(role, seq, 0, probs, 100 + seq / 30, 100 + seq / 30, 100 + seq / 30 + latency, 0, 0,
                             cpu * seq / 30)
    console = Console(file=io.StringIO(), width=140, record=True)
    console.print(_table(stats.live(playing=0), stats.classes, "header"))
    text = console.export_text()
    assert "baseline" in text and "optimized" in text
    assert "8.00 / 8.00" in text and "2.00 / 2.00" in text  # latency p50 / p95 ms
    assert "4.0x lower" in text and "0.20x" in text  # latency and CPU ratios
    assert "class3 100% (right)" in text
