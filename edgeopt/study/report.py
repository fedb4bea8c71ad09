"""The study's report: a table per model, conclusions computed from the figures, JSON, Pareto plots."""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from edgeopt.perf.report import atomic_write, fmt, fmt_ratio, markdown_table, write_json
from edgeopt.study import recipes as R
from edgeopt.study import subjects as S

MAX_DROP_POINTS = 1.0


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(out: Path, models: list[str], rows: list[str]) -> dict:
    """model -> {"rows": {row: result + timing}, "timing": the model's timing file}."""
    data = {}
    for model in models:
        timing = _read(out / "timing" / f"{model}.json") or {}
        entries = {}
        for row in rows:
            res = _read(out / "rows" / model / f"{row}.json")
            if res is None:
                entries[row] = {"row": row, "label": R.RECIPES[row].label, "status": "not built", "kind": R.RECIPES[row].kind}
                continue
            res.pop("predictions", None)
            q = timing.get("quiet", {}).get(row)
            if q:
                res["median_ms"], res["p95_ms"] = q["median_ms"], q["p95_ms"]
            busy = timing.get("loaded", {}).get(row)
            if busy:
                res["loaded_ms"] = busy["median_ms"]
            if row in timing.get("not_timed", {}):
                res["not_timed"] = timing["not_timed"][row]
            if timing.get("isa", {}).get(row):
                res["isa"] = timing["isa"][row]
            entries[row] = res
        data[model] = {"rows": entries, "timing": timing}
    return data


def _speedup(ref, other):
    return ref / other if ref and other else math.nan


def _gmean(values):
    values = [v for v in values if v and math.isfinite(v) and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else math.nan


def best_row(model: str, entries: dict) -> tuple[str | None, str]:
    """The fastest edgeopt row within MAX_DROP_POINTS of fp32's accuracy (speed-only models: the fastest
    edgeopt row, accuracy unknown). Returns (row, why)."""
    base = entries.get("fp32", {})
    timed = {r: e for r, e in entries.items() if e.get("median_ms") and e.get("kind") in ("edgeopt",)}
    if not timed:
        return None, "no edgeopt row was timed"
    if S.get_subject(model).task is None:
        row = min(timed, key=lambda r: timed[r]["median_ms"])
        return row, "the fastest edgeopt row (speed only: random weights, accuracy not measured)"
    if base.get("accuracy") is None:
        return None, "fp32 accuracy missing"
    within = {r: e for r, e in timed.items()
              if e.get("accuracy") is not None and 100 * (base["accuracy"] - e["accuracy"]) <= MAX_DROP_POINTS}
    if not within:
        return None, f"no edgeopt row is within {MAX_DROP_POINTS:g} point of fp32's accuracy"
    row = min(within, key=lambda r: within[r]["median_ms"])
    return row, f"the fastest edgeopt row within {MAX_DROP_POINTS:g} point of fp32's accuracy"


def model_table(model: str, entries: dict) -> str:
    subject = S.get_subject(model)
    base = entries.get("fp32", {})
    ov = entries.get("ov_int8", {}).get("median_ms")
    headers = ["row", "accuracy %", "vs fp32 (points)", "agreement", "median ms", "p95 ms", "one core busy ms",
               "pred/s"]
    if subject.audio_seconds:
        headers.append("real-time factor")
    headers += ["MMAC", "weights (k)", "KB on disk", "vs fp32", "vs OpenVINO int8"]
    rows = []
    for row, e in entries.items():
        if e.get("status") != "ok":
            rows.append([f"{e.get('label', row)} ({row})", f"{e.get('status')}: {e.get('reason', '')}".strip(": ")]
                        + [""] * (len(headers) - 2))
            continue
        med = e.get("median_ms")
        acc = e.get("accuracy")
        cells = [f"{e['label']} ({row})", fmt(100 * acc, 2) if acc is not None else "speed only",
                 fmt(100 * (acc - base["accuracy"]), 2) if acc is not None and base.get("accuracy") is not None else "-",
                 fmt(100 * e["agreement"], 1) + "%" if e.get("agreement") is not None else "-",
                 fmt(med, 3), fmt(e.get("p95_ms"), 3),
                 (f"{e['loaded_ms']:.3f} ({e['loaded_ms'] / med:.1f}x)" if e.get("loaded_ms") and med else "-"),
                 fmt(1e3 / med, 0) if med else e.get("not_timed", "-")]
        if subject.audio_seconds:
            cells.append(fmt(subject.audio_seconds / (med / 1e3), 0) if med else "-")
        cells += [fmt(e["macs"] / 1e6, 1) if e.get("macs") else "-",
                  fmt(e["weights_stored"] / 1e3, 1) if e.get("weights_stored") else "-",
                  fmt(e["bytes_on_disk"] / 1e3, 0) if e.get("bytes_on_disk") else "-",
                  fmt_ratio(_speedup(base.get("median_ms"), med)), fmt_ratio(_speedup(ov, med))]
        rows.append(cells)
    return markdown_table(headers, rows, "l" + "r" * (len(headers) - 1))


def conclusions(data: dict) -> list[str]:
    lines = ["## Conclusions (computed from the figures below)", ""]
    for model, d in data.items():
        entries = d["rows"]
        base = entries.get("fp32", {})
        row, why = best_row(model, entries)
        if row is None:
            lines.append(f"- **{model}**: {why}.")
            continue
        e = entries[row]
        ov = entries.get("ov_int8", {}).get("median_ms")
        acc = e.get("accuracy")
        text = (f"- **{model}**: best is *{e['label']}* ({why}): {e['median_ms']:.3f} ms, "
                f"{fmt_ratio(_speedup(base.get('median_ms'), e['median_ms']))} fp32 eager"
                + (f", {fmt_ratio(_speedup(ov, e['median_ms']))} OpenVINO int8 ({ov:.3f} ms)" if ov else
                   ", OpenVINO int8 not timed")
                + (f"; accuracy {100 * acc:.2f}% vs {100 * base['accuracy']:.2f}%" if acc is not None and
                   base.get("accuracy") is not None else "") + ".")
        prof = d["timing"].get("profile") or {}
        if prof.get("row") == row and prof.get("top_layers"):
            total = prof["best_total_ms"]
            by = sorted(prof["best_by_bound_ms"].items(), key=lambda kv: -kv[1])
            tops = "; ".join(f"{t['name']} ({t['what']}) {t['ms']:.3f} ms, {100 * t['share']:.0f}%, {t['bound']}"
                             + (f" at {100 * t['compute_fraction']:.0f}% of the compute ceiling"
                                if t['bound'] == 'compute' and t.get('compute_fraction') == t.get('compute_fraction')
                                else "") for t in prof["top_layers"][:3])
            text += (f" Where its time goes: " + ", ".join(f"{k} {v:.2f} ms ({100 * v / total:.0f}%)" for k, v in by)
                     + f"; the largest layers: {tops}.")
        elif prof.get("row"):
            text += f" (profiled row: {prof['row']})"
        lines.append(text)
    lines += ["", "Which optimization pays on the AVX2 path (geometric mean over the models where the row ran; "
              "accuracy change in points on the models with real data):", ""]
    families: dict[str, list] = {}
    for model, d in data.items():
        base = d["rows"].get("fp32", {})
        for row, e in d["rows"].items():
            if row == "fp32" or e.get("status") != "ok" or not e.get("median_ms") or not base.get("median_ms"):
                continue
            drop = (100 * (e["accuracy"] - base["accuracy"]) if e.get("accuracy") is not None and
                    base.get("accuracy") is not None else None)
            families.setdefault(row, []).append((model, base["median_ms"] / e["median_ms"], drop))
    ranked = sorted(families.items(), key=lambda kv: -_gmean([s for _, s, _ in kv[1]]))
    for row, vals in ranked:
        speed = _gmean([s for _, s, _ in vals])
        drops = [d for _, _, d in vals if d is not None]
        lines.append(f"- {R.RECIPES[row].label} ({row}): {fmt_ratio(speed)} fp32 eager "
                     f"(range {min(s for _, s, _ in vals):.2f}-{max(s for _, s, _ in vals):.2f}x over "
                     f"{len(vals)} model{'s' if len(vals) != 1 else ''})"
                     + (f", accuracy {statistics.fmean(drops):+.2f} points on average (worst {min(drops):+.2f})"
                        if drops else ""))
    why = []
    for model, d in data.items():
        prof = d["timing"].get("profile") or {}
        fb = prof.get("fp32_by_bound_ms")
        if fb:
            total = sum(fb.values())
            why.append(f"{model} fp32: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in
                                                     sorted(fb.items(), key=lambda kv: -kv[1])))
    if why:
        lines += ["", "Why, from the profiles (share of the fp32 model's time by bound): " + "; ".join(why) + ". "
                  "Compute-bound layers are where int8 (twice the MACs per instruction of fp32 FMA on AVX2 with "
                  "vpmaddubsw) and fewer MACs (pruning, low rank, a smaller student) can pay; memory-bound and "
                  "overhead time only moves with fewer bytes or fewer calls."]
    return lines


def write_report(out: Path, models: list[str], rows: list[str], cfg, log=print) -> Path:
    data = collect(out, models, rows)
    lines = [f"# edgeopt study ({cfg.mode})", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}. Batch 1, {cfg.threads} threads; every row of a model timed in the "
             "same run in alternating blocks (median, p95), then again with one core kept busy by another process."]
    paths = {d["timing"].get("path") for d in data.values() if d["timing"].get("path")}
    if paths:
        lines.append("AVX2 path: " + "; ".join(sorted(paths)) + ".")
    for model, d in data.items():
        t = d["timing"]
        if t.get("load_quiet"):
            b, a = t["load_quiet"]["before"], t["load_quiet"]["after"]
            lines.append(f"- {model}: load {'/'.join(f'{v:.2f}' for v in b)} before timing, "
                         f"{'/'.join(f'{v:.2f}' for v in a)} after")
    if cfg.quick:
        lines += ["", "**Quick mode**: fewer rows and models, short fine-tunes (epochs per model: "
                  + ", ".join(f"{k} {v}" for k, v in R.FINE_TUNE_EPOCHS["quick"].items())
                  + "; training subsets: " + ", ".join(f"{k} {v}" for k, v in R.FINE_TUNE_SAMPLES["quick"].items())
                  + "), test subsets for CIFAR-10/MNIST (" + ", ".join(
                      f"{k} {v}" for k, v in __import__("edgeopt.study.runner", fromlist=["TEST_LIMIT"]).TEST_LIMIT["quick"].items())
                  + " samples). Its accuracy figures after fine-tuning are lower bounds of what the full study reaches."]
    lines += [""] + conclusions(data)
    plots = []
    for model, d in data.items():
        subject = S.get_subject(model)
        lines += ["", f"## {subject.label}", "",
                  f"Weights: {next((e.get('weights') for e in d['rows'].values() if e.get('weights')), '?')}; "
                  f"calibration: {next((e.get('calibration') for e in d['rows'].values() if e.get('calibration')), '?')}"
                  + ("; speed only: accuracy is not measured (random weights)" if subject.speed_only else
                     f"; accuracy on the {subject.task} test split"
                     + (f" ({next((e.get('test_samples') for e in d['rows'].values() if e.get('test_samples')), '?')} samples)")),
                  "", model_table(model, d["rows"])]
        notes = [(row, n) for row, e in d["rows"].items() for n in e.get("notes", []) or []]
        if notes:
            lines += [""] + [f"- {row}: {n}" for row, n in notes]
        paths_isa = {row: e["isa"] for row, e in d["rows"].items() if e.get("isa")}
        if paths_isa:
            lines += [""] + [f"- {row} ran: {p}" for row, p in paths_isa.items()]
        prof = d["timing"].get("profile") or {}
        if prof.get("files"):
            rel = {k: Path(v).relative_to(out) if Path(v).is_relative_to(out) else Path(v)
                   for k, v in prof["files"].items()}
            lines += ["", f"Profile, fp32 against {prof['row']}: [{rel.get('markdown')}]({rel.get('markdown')}); "
                      f"per-layer accounting error fp32 {100 * prof['accounting_error']['fp32']:+.1f}%, "
                      f"{prof['row']} {100 * prof['accounting_error'][prof['row']]:+.1f}%."]
            if rel.get("roofline"):
                lines += ["", f"![roofline]({rel['roofline']})", "", f"![layers]({rel['layers']})"]
        elif prof.get("error"):
            lines += ["", f"Profile of {prof.get('row')}: failed: {prof['error']}"]
        if subject.task is not None:
            png = _pareto(out, model, d["rows"])
            if png:
                plots.append(png)
                lines += ["", f"![Pareto front, {model}]({png.relative_to(out)})"]
    write_json(out / "results.json", data)
    return atomic_write(out / "report.md", "\n".join(lines) + "\n")


def _pareto(out: Path, model: str, entries: dict) -> Path | None:
    from edgeopt.perf import plots

    points = [{"label": row, "x": e["median_ms"], "y": 100 * e["accuracy"],
               "kind": {"base": "base", "torch": "torch", "peer": "peer"}.get(e.get("kind"), "edgeopt")}
              for row, e in entries.items() if e.get("median_ms") and e.get("accuracy") is not None]
    if len(points) < 2:
        return None
    try:
        return plots.pareto(points, out / f"pareto-{model}.png",
                            title=f"{S.get_subject(model).label}: latency vs accuracy, one point per row")
    except plots.PlotsUnavailable:
        return None
