"""The demo page in a real browser: headless Chromium (the distribution's package) driven by Playwright.

It opens the page of a running `edgeopt demo`, sees both model panels update, reads their figures, flips
the busy-core switch and saves a screenshot (its path is printed; `$EDGEOPT_ARTIFACTS` or
<repo>/test-artifacts/). Skipped when Playwright or Chromium is missing, unless EDGEOPT_REQUIRE_BROWSER=1
(set by .ci/run), where that is a failure.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeopt.data import DataError, data_root

REPO = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("EDGEOPT_REQUIRE_BROWSER") == "1"


def _missing(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (EDGEOPT_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def _chromium() -> str | None:
    for name in (os.environ.get("EDGEOPT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = name and (shutil.which(name) or (name if os.path.isfile(name) else None))
        if path:
            return path
    return None


def _number(text: str) -> float:
    m = re.search(r"-?\d+(?:\.\d+)?", text.replace("−", "-"))
    assert m, f"no number in {text!r}"
    return float(m.group())


def test_page_renders_and_updates_in_headless_chromium(capsys):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    chromium = _chromium()
    if chromium is None:
        _missing("no Chromium found (apt-get install chromium, or set EDGEOPT_CHROMIUM)")
    try:
        (data_root() / "ravdess").is_dir() or _missing("no RAVDESS data")
    except DataError:
        _missing("shared data not found (set EDGEOPT_DATA)")
    artifacts = Path(os.environ.get("EDGEOPT_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "edgeopt", "demo", "--seconds", "120", "--no-browser", "--port", "0", "--limit", "8"]
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        url = None
        deadline = time.monotonic() + 240
        while url is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"page: (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "the demo did not serve its page:\n" + "".join(lines)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("Number(document.body.dataset.updates || 0) >= 5", timeout=30_000)
            counts = {}
            for role in ("baseline", "optimized"):
                panel = f'.panel[data-role="{role}"]'
                page.wait_for_function("sel => { const t = document.querySelector(sel).textContent;"
                                       " return t.includes('ms') && !t.startsWith('–'); }",
                                       arg=f"{panel} [data-k=latency]", timeout=30_000)
                counts[role] = _number(page.inner_text(f"{panel} [data-k=processed]"))
            time.sleep(2.5)
            figures = {}
            for role in ("baseline", "optimized"):
                panel = f'.panel[data-role="{role}"]'
                assert _number(page.inner_text(f"{panel} [data-k=processed]")) > counts[role], f"{role} panel not updating"
                figures[role] = {k: page.inner_text(f"{panel} [data-k={k}]")
                                 for k in ("title", "pred", "latency", "cpu_percent", "rtf", "dropped", "isa")}
                assert _number(figures[role]["latency"]) > 0 and _number(figures[role]["cpu_percent"]) > 0
                assert figures[role]["pred"] != "–" and "Ran on" in figures[role]["isa"]
            assert "float32" in figures["baseline"]["title"] and "int8" in figures["optimized"]["title"]
            ratio = page.inner_text("#kpi-cpu [data-k=cpu_ratio]")
            assert ratio.endswith("×") and _number(ratio) > 0
            assert "AVX2 path" in page.inner_text("#subtitle")
            page.click("#busy")
            page.wait_for_function("document.querySelector('#busy').getAttribute('aria-pressed') === 'true'",
                                   timeout=15_000)
            page.wait_for_function("document.querySelector('#costs').textContent.includes('ms per redraw')"
                                   " && !document.querySelector('#costs').textContent.includes('browser – ms')",
                                   timeout=15_000)
            time.sleep(3)  # a few seconds of the busy core on the charts
            shot = artifacts / "demo-page.png"
            page.screenshot(path=str(shot), full_page=True)
            with capsys.disabled():  # shown even when the test passes
                print(f"\n  screenshot of the demo page: {shot}\n  figures read from the page: {figures}, "
                      f"CPU ratio {ratio}")
            assert not errors, errors
            browser.close()
        demo.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops, prints its summary and exits 0
        rest, _ = demo.communicate(timeout=60)
        lines.append(rest)
        assert demo.returncode == 0, "".join(lines)[-4000:]
        assert "one core busy" in rest and "targets:" in rest
    finally:
        if demo.poll() is None:  # a failure above: stop it the way a user would, then for good
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(30)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
