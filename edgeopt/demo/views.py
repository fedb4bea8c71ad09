"""Text views of the demo's figures: the live table (terminal view, periodic status line) and the summary."""
from __future__ import annotations

from edgeopt.demo.stats import PHASES

CPU_TARGET = 1 / 3  # optimized CPU / baseline CPU at the demo's rate
ACCURACY_TARGET_POINTS = 1.0


def _f(value, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _pct(value, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _x(value, digits: int = 2, suffix: str = "x") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def live_rows(state: dict, classes) -> list[tuple[str, str, str, str]]:
    """(figure, baseline, optimized, ratio) rows of the live state, for the terminal view."""
    b, o, r = state["models"]["baseline"], state["models"]["optimized"], state["ratio"]

    def both(fn):
        return fn(b), fn(o)

    def pred(m):
        if m.get("pred") is None:
            return "-"
        mark = {True: " (right)", False: " (wrong)", None: ""}[m.get("correct")]
        return f"{classes[m['pred']]} {100 * m['conf']:.0f}%{mark}"

    def truth(m):
        return "-" if m.get("truth") is None else classes[m["truth"]] if m["truth"] >= 0 else "- (not scored)"

    playing = state.get("now_playing")
    delta = r.get("accuracy_delta_points")
    return [
        ("playing", f"{playing['emotion']}, actor {playing['actor']}" if playing else "-", "", ""),
        ("window's truth", *both(truth), ""),
        ("prediction", *both(pred), ""),
        ("accuracy, last 60 s", *both(lambda m: _pct(m.get("rolling_accuracy"))),
         "-" if delta is None else f"{delta:+.1f} points (same {r['paired_n']} windows)"),
        ("accuracy, whole run", *both(lambda m: f"{_pct(m.get('accuracy'))} of {m['scored']}"), ""),
        ("latency p50 / p95 ms", *both(lambda m: f"{_f(m.get('latency_p50_ms'), 2)} / {_f(m.get('latency_p95_ms'), 2)}"),
         _x(r.get("latency"), 1, "x lower")),
        ("CPU at the demo's rate", *both(lambda m: _f(m.get("cpu_percent"), 1, "% of a core")),
         _x(r.get("cpu"), 2, "x")),
        ("could sustain", *both(lambda m: _f(m.get("sustainable_per_s"), 0, " predictions/s")), ""),
        ("real-time factor", *both(lambda m: _f(m.get("rtf"), 3)), ""),
        ("lag p95", *both(lambda m: _f(m.get("lag_p95_ms"), 0, " ms")), ""),
        ("backlog (max, 10 s)", *both(lambda m: f"{m.get('backlog', '-')} ({m.get('backlog_max', '-')})"), ""),
        ("dropped windows", *both(lambda m: f"{m['dropped']} of {m['processed'] + m['dropped']}"), ""),
    ]


def status_line(state: dict) -> str:
    b, o, r = state["models"]["baseline"], state["models"]["optimized"], state["ratio"]

    def part(name, m):
        return (f"{name} {_f(m.get('latency_p50_ms'), 2)} ms, CPU {_f(m.get('cpu_percent'), 0, '%')}, "
                f"acc {_pct(m.get('accuracy'), 0)}, dropped {m['dropped']}")

    busy = " [one core busy]" if state["busy"] else ""
    return f"  {state['t']:6.1f} s{busy}  {part('baseline', b)} | {part('optimized', o)} | CPU ratio {_x(r.get('cpu'))}"


def summary_text(s: dict) -> str:
    """The headless mode's report: every figure per phase (quiet / one core busy), ratios and targets."""
    lines = [f"edgeopt demo: {s['seconds']:.0f} s streamed, {s['rate']} predictions/s, {s['threads']} threads per model; "
             f"ISA: {s['isa']}"]
    if s["source"].get("kind") == "files":
        lines.append(f"source: held-out RAVDESS speech (actors 21-24), {s['source']['seconds']:.0f} s playlist")
    elif s["source"].get("kind") == "mic":
        lines.append(f"source: microphone {s['source'].get('device')} (no ground truth)")
    m = s["models"]
    for role in ("baseline", "optimized"):
        info = m[role]["info"] or {}
        ran = f"torch {info.get('torch_cpu_capability', '?')}" + (
            f", edgeopt {info['edgeopt_isa']}" if "edgeopt_isa" in info else "")
        lines.append(f"{role:9s}: {info.get('title', '?')}, {info.get('method', '?')}, "
                     f"{info.get('macs', 0) / 1e6:.1f} M MACs; ran on {ran}")
    rows = []
    for phase in PHASES:
        figures = s["phases"].get(phase)
        if not figures:
            continue
        b, o, ratio = figures["baseline"] or {}, figures["optimized"] or {}, figures["ratio"]
        title = "quiet machine" if phase == "quiet" else "one core busy (another process spinning)"
        rows.append((f"-- {title}, {max(b.get('seconds', 0), o.get('seconds', 0)):.0f} s", "", "", ""))

        def row(label, key, fmt, ratio_text=""):
            rows.append((label, fmt(b.get(key)), fmt(o.get(key)), ratio_text))

        row("latency p50 ms", "latency_p50_ms", lambda v: _f(v, 2), _x(ratio["latency"], 2, "x lower"))
        row("latency p95 ms", "latency_p95_ms", lambda v: _f(v, 2))
        row("CPU, % of one core", "cpu_percent", lambda v: _f(v, 1), _x(ratio["cpu"], 3, "x"))
        row("predictions delivered/s", "delivered_per_s", lambda v: _f(v, 1))
        row("could sustain /s", "sustainable_per_s", lambda v: _f(v, 0))
        row("real-time factor", "rtf", lambda v: _f(v, 3))
        rows.append(("lag p50 / p95 / max ms", _lag(b), _lag(o), ""))
        row("dropped windows", "dropped", lambda v: "-" if v is None else str(v))
        rows.append(("backlog max (first / last third mean)", _backlog(b), _backlog(o), ""))
        row("accuracy (scored windows)", "accuracy", _pct)
    rows.append(("-- whole run", "", "", ""))
    p = s["paired"]
    delta = None if p["windows"] == 0 else 100 * (p["optimized_accuracy"] - p["baseline_accuracy"])
    rows.append(("accuracy, same windows", _pct(p["baseline_accuracy"], 2), _pct(p["optimized_accuracy"], 2),
                 "-" if delta is None else f"{delta:+.2f} points, {p['windows']} windows"))
    rows.append(("clip accuracy (vote)", f"{_pct(m['baseline']['clip_accuracy'])} of {m['baseline']['clips']}",
                 f"{_pct(m['optimized']['clip_accuracy'])} of {m['optimized']['clips']}", ""))
    rows.append(("windows processed / dropped", f"{m['baseline']['processed']} / {m['baseline']['dropped']}",
                 f"{m['optimized']['processed']} / {m['optimized']['dropped']}", ""))
    widths = [max(len(r[i]) for r in rows + [("", "baseline", "optimized", "ratio")]) for i in range(4)]
    header = ("", "baseline", "optimized", "optimized vs baseline")
    lines.append("")
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    page = s.get("page") or {}
    lines.append("")
    lines.append(f"not the models: streaming front end {_f(s['stream_cpu_percent'], 1, '%')} of a core, page server "
                 f"{_f(page.get('server_cpu_percent'), 1, '%')}, statistics {_f(page.get('stats_cpu_percent'), 1, '%')}, "
                 f"browser {_f(page.get('browser_render_ms'), 2, ' ms')} per redraw")
    lines += targets_lines(s)
    if s.get("error"):
        lines.append(f"ERROR: {s['error']}")
    return "\n".join(lines)


def _lag(m: dict) -> str:
    return "-" if not m else f"{m['lag_p50_ms']:.0f} / {m['lag_p95_ms']:.0f} / {m['lag_max_ms']:.0f}"


def _backlog(m: dict) -> str:
    return "-" if not m else (f"{m['backlog_max']} ({m['backlog_mean_first_third']:.2f} / "
                              f"{m['backlog_mean_last_third']:.2f})")


def keeps_real_time(m: dict | None) -> bool | None:
    """No window dropped and no growing backlog (the last third's mean not above the first third's + 1)."""
    if not m:
        return None
    return m["dropped"] == 0 and m["backlog_mean_last_third"] <= m["backlog_mean_first_third"] + 1


def targets_lines(s: dict) -> list[str]:
    out = ["", "targets:"]
    p = s["paired"]
    if p["windows"]:
        delta = 100 * (p["optimized_accuracy"] - p["baseline_accuracy"])
        out.append(f"  accuracy within {ACCURACY_TARGET_POINTS:.0f} point of the baseline: "
                   f"{'met' if delta >= -ACCURACY_TARGET_POINTS else 'MISSED'} ({delta:+.2f} points on "
                   f"{p['windows']} scored windows; short runs are noisy, see --evaluate)")
    quiet = s["phases"].get("quiet")
    if quiet and quiet["ratio"]["cpu"] is not None:
        r = quiet["ratio"]["cpu"]
        out.append(f"  CPU <= 1/3 of the baseline's (quiet): {'met' if r <= CPU_TARGET else 'MISSED'} ({r:.3f}x)")
    busy = s["phases"].get("busy")
    if busy and busy["optimized"]:
        ok = keeps_real_time(busy["optimized"])
        out.append(f"  optimized keeps real time with one core busy: {'met' if ok else 'MISSED'} "
                   f"(dropped {busy['optimized']['dropped']}, backlog max {busy['optimized']['backlog_max']})")
        if busy["ratio"]["cpu"] is not None:
            out.append(f"  (one core busy: CPU ratio {busy['ratio']['cpu']:.3f}x, baseline dropped "
                       f"{busy['baseline']['dropped']})")
    if len(out) == 2:
        out.append("  (none measured in this run)")
    return out
