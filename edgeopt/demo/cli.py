"""`edgeopt demo`: the live before/after comparison (page by default, `--tui`, or headless).

    edgeopt demo                              # page on http://127.0.0.1:8765/, opens the browser; Ctrl-C stops
    edgeopt demo --tui                        # terminal view
    edgeopt demo --seconds 60 --no-browser    # headless: run 60 s, print the summary, exit
    edgeopt demo --seconds 120 --busy-after 60 --no-browser   # quiet, then one core busy, in one run
    edgeopt demo --evaluate                   # accuracy of both models on every window of the stream
    edgeopt demo --task mnist                 # the older MNIST Linear-layer demo (table, native ISA)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

from edgeopt.demo.stream import PREDICTIONS_PER_SECOND
from edgeopt.files import atomic_write
from edgeopt.cli_args import positive_float, positive_int

DEFAULT_PORT = 8765
STATUS_EVERY = 5.0  # s between status lines in page / headless mode


def register(subparsers) -> None:
    from edgeopt.demo import mnist

    p = subparsers.add_parser("demo", help="the real-time before/after demo: speech emotion streamed to the float "
                                           "baseline and the optimized int8 model side by side",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("ravdess", "mnist"), default="ravdess",
                   help="ravdess: the live speech demo (default); mnist: the MNIST Linear-layer table")
    p.add_argument("--tui", action="store_true", help="terminal view instead of the web page")
    p.add_argument("--seconds", type=positive_float, default=None, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser (the page is still served)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: any free port (printed)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads per model")
    p.add_argument("--busy", action="store_true", help="keep one core busy from the start")
    p.add_argument("--busy-after", type=positive_float, default=None, metavar="S", help="switch the busy core on after S seconds")
    p.add_argument("--only", choices=("baseline", "optimized"), default=None,
                   help="run one model alone (to measure it without the other sharing the cores)")
    p.add_argument("--mic", action="store_true", help="microphone input (falls back to the files without a device)")
    p.add_argument("--isa", choices=("avx2", "native"), default="avx2",
                   help="avx2: keep every model on the AVX2 path where the CPU has AVX-512 (default)")
    p.add_argument("--avx2-shim", default=None, metavar="PATH", help="the avx2only shim (.so) to preload")
    p.add_argument("--evaluate", action="store_true",
                   help="no live stream: run both models on every window of one pass over the playlist and print accuracy")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="play only the first N sentences")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the summary as JSON")
    mnist.add_arguments(p)
    p.set_defaults(run=run)


def run(args) -> int:
    if args.task == "mnist":
        from edgeopt.demo import mnist

        return mnist.run(args)
    if args.evaluate:
        return evaluate(args)
    return live(args)


def _log(message: str) -> None:
    print(message, flush=True)


def _free_port(host: str, port: int) -> int:
    if port == 0:
        return 0
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            _log(f"  port {port} is in use; using a free one")
            return 0
    return port


def live(args) -> int:
    from edgeopt.data import RAVDESS_EMOTIONS
    from edgeopt.demo import isa, models
    from edgeopt.demo.engine import DemoError, Engine, SourceSpec
    from edgeopt.demo.stats import DemoStats
    from edgeopt.demo.views import status_line, summary_text

    launched = time.perf_counter()
    _log("edgeopt demo: speech emotion, float baseline vs optimized int8, streamed in real time")
    mic = args.mic and _microphone_available()
    if not mic:
        _require_data()
    _log("1/3 models")
    optimized_path = models.prepare_optimized(_log)
    _log(f"  optimized model: {optimized_path} ({optimized_path.stat().st_size / 1e3:.0f} kB)")
    plan = isa.plan(args.isa, args.avx2_shim)
    _log(f"  ISA for the model processes: {plan.mechanism}")
    stats = DemoStats(PREDICTIONS_PER_SECOND, RAVDESS_EMOTIONS)
    stats.isa_mechanism, stats.threads = plan.mechanism, args.threads
    engine = Engine(stats, threads=args.threads, child_env=plan.env, optimized_path=optimized_path,
                    source=SourceSpec(mic=mic, playlist_limit=args.limit),
                    roles=(args.only,) if args.only else ("baseline", "optimized"))
    server = None
    try:
        _log("2/3 starting the stream and the model processes")
        try:
            engine.start(_log)
        except DemoError as exc:
            _log(f"edgeopt demo: {exc}")
            return 1
        _log(f"3/3 streaming: {time.perf_counter() - launched:.1f} s after launch")
        if args.busy:
            engine.set_busy(True)
        header = _header(stats, plan)
        if args.tui:
            from edgeopt.demo import tui

            tui.run(engine, RAVDESS_EMOTIONS, header, args.seconds, args.busy_after)
        else:
            from edgeopt.demo.server import DemoApp, PageServer

            server = PageServer(DemoApp(engine, page_info(stats, plan, args)), args.host, _free_port(args.host, args.port))
            url = server.start()
            _log(f"  page: {url}" + ("" if args.seconds else "   (Ctrl-C stops)"))
            if not args.no_browser:
                _open_browser(url)
            _wait(engine, args, status_line)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
        engine.close()
    summary = stats.summary()
    print()
    print(summary_text(summary))
    if args.json:
        atomic_write(args.json, json.dumps(summary, indent=1, default=str))
    return 1 if summary["error"] else 0


def _wait(engine, args, status_line) -> None:
    start = last = time.monotonic()
    busy_after = args.busy_after
    while args.seconds is None or time.monotonic() - start < args.seconds:
        time.sleep(0.2)
        now = time.monotonic()
        if busy_after is not None and now - start >= busy_after:
            engine.set_busy(True)
            busy_after = None
        if now - last >= STATUS_EVERY:
            _log(status_line(engine.live()))
            last = now
        if engine.error:
            _log(engine.error)
            return


def _require_data() -> None:
    from edgeopt.data import DataError
    from edgeopt.data.paths import dataset_dir

    try:
        dataset_dir("ravdess")
    except DataError as exc:
        raise SystemExit(f"edgeopt demo: no RAVDESS audio to stream: {exc}") from None


def _microphone_available() -> bool:
    from edgeopt.demo.stream import Microphone, MicrophoneUnavailable

    try:
        mic = Microphone()
    except MicrophoneUnavailable as exc:
        _log(f"  --mic: {exc}; streaming the held-out files instead")
        return False
    _log(f"  microphone: {mic.device_name} at {mic.device_rate} Hz")
    return True


def _open_browser(url: str) -> None:
    import webbrowser

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform in ("darwin", "win32")):
        _log("  no display here: open the page from another machine (ssh -L) or use --tui")
        return
    try:
        webbrowser.open(url)
    except Exception as exc:  # a broken browser setting must not stop the demo
        _log(f"  could not open a browser ({exc}); open {url} yourself")


def _header(stats, plan) -> str:
    return (f"edgeopt demo: held-out RAVDESS speech, {PREDICTIONS_PER_SECOND} predictions/s, "
            f"{stats.threads} threads per model, {plan.mechanism}")


def _isa_line(info: dict, plan) -> str:
    ran = f"torch {info['torch_cpu_capability']} kernels"
    if "edgeopt_isa" in info:
        ran += f", edgeopt {info['edgeopt_isa']} kernels"
        if info.get("cpu_reports_avx512") is not None:
            ran += f" (CPU seen by the process reports AVX-512: {'yes' if info['cpu_reports_avx512'] else 'no'})"
    return f"Ran on: {ran}. AVX2 path: {plan.mechanism}."


def page_info(stats, plan, args) -> dict:
    """The static facts the page shows (GET /api/info)."""
    import torch

    import edgeopt
    from edgeopt._native import _C
    from edgeopt.demo.engine import QUEUE_CAPACITY
    from edgeopt.training.tasks import RAVDESS_FEATURES

    f = RAVDESS_FEATURES
    window_s = f.logmel.num_samples(f.frames) / f.logmel.sample_rate
    source = stats.source or {}
    where = ("microphone " + source.get("device", "")) if source.get("kind") == "mic" else \
        "RAVDESS, held-out actors 21-24, streamed in real time"
    models = {}
    for role, m in stats.models.items():
        info = dict(m.info or {"title": f"{role}: not running (--only)", "method": "-", "macs": 0,
                               "weight_bytes": 0, "threads": 0})
        info["isa_line"] = _isa_line(info, plan) if m.info else ""
        models[role] = info
    cpu = _C.cpu_info()["brand"] or platform.processor() or "unknown CPU"
    return {
        "subtitle": (f"{where} · a prediction every {1000 / PREDICTIONS_PER_SECOND:.0f} ms on the last "
                     f"{window_s:.1f} s · {stats.threads} threads per model · AVX2 path: {plan.mechanism}"),
        "classes": list(stats.classes), "rate": PREDICTIONS_PER_SECOND, "models": models,
        "facts": (f"{cpu}, {os.cpu_count()} logical CPUs · torch {torch.__version__} · edgeopt {edgeopt.__version__} · "
                  f"a model more than {QUEUE_CAPACITY} windows behind drops the oldest · the busy core is a spinning "
                  f"process pinned to the last CPU"),
    }


def evaluate(args) -> int:
    """Accuracy of both models on every window of one pass over the playlist (no pacing, batched)."""
    import numpy as np
    import torch

    from edgeopt.demo import models
    from edgeopt.demo.stream import Playlist, ticks

    torch.set_num_threads(args.threads)
    _require_data()
    t0 = time.perf_counter()
    playlist = Playlist.ravdess(limit=args.limit)
    windows, clips = [], []
    for tick in ticks(playlist, max_seconds=playlist.seconds):
        windows.append(tick.window)
        clips.append(tick.clip)
    clips = np.array(clips)
    x = torch.from_numpy(np.stack(windows)).unsqueeze(1)
    labels = np.array([playlist.utterance(c).label if c >= 0 else -1 for c in clips])
    scored = clips >= 0
    _log(f"{len(playlist)} held-out sentences, {playlist.seconds:.0f} s of audio: {len(windows)} windows at "
         f"{PREDICTIONS_PER_SECOND}/s, {scored.sum()} scored ({time.perf_counter() - t0:.0f} s)")
    results, preds = {}, {}
    for role in ("baseline", "optimized"):
        model, info = models.load(role)
        with torch.inference_mode():
            probs = torch.cat([torch.softmax(model(x[i:i + 256]), 1) for i in range(0, len(x), 256)]).numpy()
        pred = probs.argmax(1)
        preds[role] = pred
        clip_ids = np.unique(clips[scored])
        clip_correct = [probs[clips == c].mean(0).argmax() == playlist.utterance(int(c)).label for c in clip_ids]
        results[role] = {"title": info.title, "window_accuracy": float((pred[scored] == labels[scored]).mean()),
                         "clip_accuracy": float(np.mean(clip_correct)), "clips": int(len(clip_ids))}
        _log(f"  {role:9s} {info.title:34s} windows {100 * results[role]['window_accuracy']:.2f}%  "
             f"clips (vote) {100 * results[role]['clip_accuracy']:.2f}% of {len(clip_ids)}")
    agree = float((preds["baseline"][scored] == preds["optimized"][scored]).mean())
    delta = 100 * (results["optimized"]["window_accuracy"] - results["baseline"]["window_accuracy"])
    _log(f"  optimized - baseline: {delta:+.2f} points on {scored.sum()} scored windows; the two agree on "
         f"{100 * agree:.1f}% of them")
    if args.json:
        atomic_write(args.json, json.dumps({"models": results, "agreement": agree, "windows": int(scored.sum()),
                                            "delta_points": delta}, indent=1))
    return 0
