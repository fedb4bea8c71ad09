"""PNG plots of profiles and studies: the roofline, per-layer before/after bars, Pareto fronts.

matplotlib is an optional extra (`pip install 'edgeopt[plots]'`); without it every function raises
`PlotsUnavailable`, whose message says so, and the callers write their tables and JSON anyway.
"""
from __future__ import annotations

import math
from pathlib import Path

BEFORE, AFTER, PEER = "#4C72B0", "#DD8452", "#55A868"


class PlotsUnavailable(RuntimeError):
    pass


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotsUnavailable("plots skipped: matplotlib is not installed (pip install 'edgeopt[plots]')") from exc
    return plt


def preload() -> bool:
    """Imports pyplot now, if it is installed. Needed before a peer runtime runs under the avx2only shim:
    importing matplotlib.pyplot after OpenVINO has run its int8 model there crashed the process (SIGSEGV,
    seen with OpenVINO 2026.4 and the shim; importing it first avoids it)."""
    try:
        _pyplot()
    except PlotsUnavailable:
        return False
    return True


def _save(fig, path: Path) -> Path:
    from edgeopt.files import atomic_by_name

    return atomic_by_name(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight"))


def roofline(result, path: Path) -> Path:
    """Each layer with MACs as a point (arithmetic intensity, achieved GMAC/s) under the measured roofs:
    int8 chain and fp32 FMA, each capped by read bandwidth x intensity. Marker area ~ share of the time."""
    plt = _pyplot()
    c = result.ceilings
    fig, ax = plt.subplots(figsize=(8.5, 5.8))
    sides = [(result.before, BEFORE, "o")] + ([(result.after, AFTER, "^")] if result.after else [])
    points = [(p, color, marker, layer) for p, color, marker in sides for layer in p.layers
              if layer.cost.macs and layer.seconds > 0]
    if not points:
        ax.text(0.5, 0.5, "no layer with multiply-accumulates", ha="center", transform=ax.transAxes)
        return _save(fig, path)
    xs = [layer.cost.intensity for *_, layer in points]
    lo, hi = min(xs) / 3, max(xs) * 3
    if c is not None:
        for peak, label, style in ((c.int8_gmacs, f"int8 chain {c.int8_gmacs:.0f} GMAC/s", "-"),
                                   (c.fp32_gmacs, f"fp32 FMA {c.fp32_gmacs:.0f} GMAC/s", "--")):
            ridge = peak / c.read_gbs
            grid = sorted({lo, hi, min(max(ridge, lo), hi)})
            ax.plot(grid, [min(peak, x * c.read_gbs) for x in grid], style, color="0.35", lw=1.4)
            ax.annotate(label, (hi, peak), textcoords="offset points", xytext=(-4, 4), ha="right", fontsize=8,
                        color="0.25")
        ax.annotate(f"read bandwidth {c.read_gbs:.1f} GB/s", (lo, lo * c.read_gbs), textcoords="offset points",
                    xytext=(4, 8), fontsize=8, color="0.25", rotation=0)
    for p, color, marker in sides:
        mine = [layer for q, _, _, layer in points if q is p]
        ax.scatter([layer.cost.intensity for layer in mine], [layer.gmacs for layer in mine],
                   s=[20 + 900 * layer.share for layer in mine], c=color, marker=marker, alpha=0.65,
                   edgecolors="white", linewidths=0.6,
                   label=f"{p.label}: {p.end_to_end.median * 1e3:.2f} ms ({len(mine)} layers with MACs)")
    # name the layers that take the most time on the last side
    last = sides[-1][0]
    top = sorted((layer for layer in last.layers if layer.cost.macs and layer.seconds > 0),
                 key=lambda layer: -layer.seconds)[:6]
    placed: list[tuple[float, float]] = []
    for layer in top:
        x, y = math.log10(layer.cost.intensity), math.log10(layer.gmacs)
        if any(abs(x - px) < 0.25 and abs(y - py) < 0.08 for px, py in placed):
            continue  # a label already sits there (e.g. identical layers of a repeated block)
        placed.append((x, y))
        ax.annotate(layer.name, (layer.cost.intensity, layer.gmacs), textcoords="offset points", xytext=(6, -3),
                    fontsize=7, color="0.15")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (MACs per byte moved)")
    ax.set_ylabel("achieved GMAC/s")
    ax.set_title(f"{result.name}: roofline, batch 1, {result.threads} thread{'s' if result.threads != 1 else ''} "
                 "(ceilings measured in the same run)", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return _save(fig, path)


def layer_bars(result, path: Path, most: int = 24) -> Path:
    """Per-layer time, before and after (and the peer where there is one), for the rows that take the most
    time, in execution order; the rest summed in one bar."""
    plt = _pyplot()
    rows = result.rows
    if result.after is not None:
        key = [max(_z(r.seconds("before")), _z(r.seconds("after"))) for r in rows]
    else:
        key = [_z(r.seconds("before")) for r in rows]
    keep = sorted(sorted(range(len(rows)), key=lambda i: -key[i])[:most])
    rest = [i for i in range(len(rows)) if i not in keep]
    labels = [rows[i].name for i in keep]
    series = [("before", result.before.label, BEFORE)]
    if result.after is not None:
        series.append(("after", result.after.label, AFTER))
    values = {side: [_z(rows[i].seconds(side)) * 1e3 for i in keep] for side, _, _ in series}
    peer_sides = [side for side, _, _ in series if any(r.peer.get(side) for r in rows)]
    if rest:
        labels.append(f"{len(rest)} other steps")
        for side, _, _ in series:
            values[side].append(sum(_z(rows[i].seconds(side)) for i in rest) * 1e3)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.3 * n))
    width = 0.8 / len(series)
    for k, (side, label, color) in enumerate(series):
        ys = [i + (k - (len(series) - 1) / 2) * width for i in range(n)]
        p = getattr(result, side)
        ax.barh(ys, values[side], height=width, color=color,
                label=f"{label}: {p.end_to_end.median * 1e3:.2f} ms end to end")
        if side in peer_sides:
            peer = [rows[i].peer_seconds(side) * 1e3 for i in keep] + ([math.nan] if rest else [])
            ax.scatter(peer, ys, marker="|", s=140, linewidths=2, color=PEER if k == len(series) - 1 else "0.55",
                       zorder=3, label=f"OpenVINO {label}, per node")
    shown = [v for side in values for v in values[side] if v > 0]
    if shown and max(shown) / min(shown) > 30:  # a 10x optimization would flatten the after bars on a linear axis
        ax.set_xscale("log")
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per call (mean over the calls in the interquartile range)"
                  + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_title(f"{result.name}: where the time goes, batch 1, {result.threads} thread"
                 f"{'s' if result.threads != 1 else ''}", fontsize=10)
    ax.grid(True, axis="x", alpha=0.25)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return _save(fig, path)


def pareto(points: list[dict], path: Path, title: str, x_label: str = "batch-1 latency, ms (median, 2 threads)",
           y_label: str = "accuracy on the test split, %") -> Path:
    """points: {"label", "x", "y", "kind"} (kind: "edgeopt", "peer", "base"); the frontier (lowest x for
    the highest y) is drawn through the points no other point beats on both."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.2))
    colors = {"base": "0.3", "edgeopt": AFTER, "peer": PEER, "torch": BEFORE}
    shown = [p for p in points if _finite(p["x"]) and _finite(p["y"])]
    for kind in ("base", "torch", "edgeopt", "peer"):
        mine = [p for p in shown if p.get("kind", "edgeopt") == kind]
        if mine:
            ax.scatter([p["x"] for p in mine], [p["y"] for p in mine], s=38, color=colors[kind], label=kind, zorder=3)
    front = frontier(shown)
    if len(front) > 1:
        ax.step([p["x"] for p in front], [p["y"] for p in front], where="post", color="0.5", lw=1, zorder=2,
                label="Pareto front")
    for p in shown:
        ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    if shown:
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def frontier(points: list[dict]) -> list[dict]:
    """The points no other point beats on both axes (lower x, higher y), by increasing x."""
    best, out = -math.inf, []
    for p in sorted(points, key=lambda p: (p["x"], -p["y"])):
        if p["y"] > best:
            out.append(p)
            best = p["y"]
    return out


def _z(v: float) -> float:
    return v if v == v and v is not None else 0.0


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)
