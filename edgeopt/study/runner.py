"""Running the study: stages, the per-row cache, progress with an estimate of the time left.

Stages, each resumable (a finished piece is a file, written atomically, and is never redone unless what made
it changed):
  train   the training parts of the rows (fine-tuning; heavy, cached by the recipes)
  build   each row's runnable (cached where it pickles), its accuracy on the real test split, agreement
          with fp32, MACs, stored weights, bytes on disk -> rows/<model>/<row>.json
  time    per model, two pieces: every built row in one run in alternating blocks at `threads` threads,
          then again with one core kept busy by another process (-> timing/<model>.json); and a profile of
          fp32 against the fastest edgeopt row (-> timing/<model>.profile.json, profile/<model>/). A piece
          whose inputs (the rows' build keys, the schedule) did not change is not timed again. With a
          `budget` (seconds) the stage starts no piece that would end past it and says how many are left,
          so a shared machine can run it in short quiet windows: repeat
          `/work/tools/quiet edgeopt study --quick --stage time --budget 240` until it reports none left
  report  report.md, results.json and the Pareto plots from whatever is there
"""
from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeopt.perf.busy import BusyCore
from edgeopt.study import recipes as R
from edgeopt.study import subjects as S

STAGES = ("train", "build", "time", "report")
QUICK_MODELS = ("fsdd", "ravdess", "cifar10", "resnet18")
FULL_MODELS = ("ravdess", "fsdd", "cifar10", "mnist_vit", "resnet18", "mobilenet_v2", "resnet50")
# test samples used for accuracy (None: the whole test split)
TEST_LIMIT = {"quick": {"cifar10": 1000, "mnist_vit": 1000}, "full": {}}


@dataclass
class Config:
    out: Path
    quick: bool = False
    models: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()
    threads: int = 2
    stages: tuple[str, ...] = STAGES
    blocks: int = 5
    seconds_per_block: float = 0.2
    loaded: bool = True
    profile: bool = True
    force: bool = False
    budget: float | None = None   # seconds for the timing pieces of this run (None: no limit)

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    def row_names(self) -> list[str]:
        if self.rows:
            return list(self.rows)
        return [r.name for r in R.RECIPES.values() if r.quick or not self.quick]

    def model_names(self) -> list[str]:
        return list(self.models or (QUICK_MODELS if self.quick else FULL_MODELS))


# ------------------------------------------------------------------------------------------ progress

# rough seconds per piece on the 2-core laptop-class machine, refined as pieces finish
_ESTIMATE = {"train": {"ravdess": 40, "fsdd": 15, "cifar10": 50, "mnist_vit": 30, "resnet18": 8, "mobilenet_v2": 8,
                       "resnet50": 20},
             "build": {"ravdess": 12, "fsdd": 5, "cifar10": 15, "mnist_vit": 8, "resnet18": 15, "mobilenet_v2": 12,
                       "resnet50": 45},
             "time": {"ravdess": 40, "fsdd": 30, "cifar10": 35, "mnist_vit": 30, "resnet18": 60, "mobilenet_v2": 55,
                      "resnet50": 100},
             "profile": {"ravdess": 25, "fsdd": 15, "cifar10": 15, "mnist_vit": 15, "resnet18": 35,
                         "mobilenet_v2": 30, "resnet50": 60}}


class Eta:
    """Progress over the study's pieces, with the time left: the estimates of the pieces not done yet,
    scaled by how long the pieces done so far took against their estimates. A piece found in the cache
    costs nothing and leaves the count."""

    def __init__(self, pieces: list[tuple[str, str, str]], log=print, measured: dict | None = None):
        self.left = list(pieces)
        self.measured = measured if measured is not None else {}  # "stage/model/row" -> seconds, from earlier runs
        self.total = len(pieces)
        self.log = log
        self.start = time.perf_counter()
        self.estimated_done = 0.0
        self.actual_done = 0.0
        self.count = 0
        self._began: dict = {}

    def estimate(self, piece) -> float:
        stage, model, row = piece
        if "/".join(piece) in self.measured:  # what the piece took when it last ran here
            return self.measured["/".join(piece)]
        base = _ESTIMATE.get(stage, {}).get(model, 20)
        if stage == "train" and row in R.RECIPES and not R.RECIPES[row].trains:
            return 0.5
        return base

    def seconds_left(self) -> float:
        scale = self.actual_done / self.estimated_done if self.estimated_done > 0 else 1.0
        return scale * sum(self.estimate(p) for p in self.left)

    def begin(self, piece, what: str) -> None:
        self.count += 1
        self._began[piece] = time.perf_counter()
        self.log(f"[{self.count}/{self.total}] {what}   (elapsed {_mmss(time.perf_counter() - self.start)}, "
                 f"about {_mmss(self.seconds_left())} left)")

    def end(self, piece, cached: bool = False) -> None:
        if piece in self.left:
            self.left.remove(piece)
        began = self._began.pop(piece, None)
        if cached:
            self.total -= 1 if began is None else 0
            return
        if began is not None:
            took = time.perf_counter() - began
            self.estimated_done += self.estimate(piece)
            self.actual_done += took
            self.measured["/".join(piece)] = took


def _mmss(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ------------------------------------------------------------------------------------------ helpers

def _atomic_json(path: Path, obj) -> None:
    from edgeopt.perf.report import write_json

    write_json(path, obj)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _key(cfg: Config, subject, row: str, base_key: str) -> str:
    """What a row's result depends on: the mode, the fp32 weights, the code that builds and runs it."""
    from edgeopt.perf.cache import code_fingerprint

    return f"{cfg.mode}:{subject.name}:{row}:{base_key}:{code_fingerprint()}"


def stored_weights(model) -> int | None:
    """Weight values a model stores: dense layers their parameters, int8 layers their weights, block-sparse
    layers the values of their stored blocks, low-rank layers their factors."""
    if not isinstance(model, nn.Module):
        return None
    from edgeopt import nn as eo

    total = 0
    for m in model.modules():
        if isinstance(m, (eo.SparseConv2d, eo.SparseLinear)):
            info = m.packed_info()
            total += info["blocks"] * info["block"][0] * info["block"][1]
        elif isinstance(m, eo.LowRankLinear):
            total += m.rank * (m.in_features + m.out_features)
        elif isinstance(m, eo.QuantConv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += m.out_channels * (m.in_channels // m.groups) * k
        elif isinstance(m, (eo.QuantLinear, eo.HalfLinear)):
            total += m.in_features * m.out_features
        else:
            total += sum(int(torch.count_nonzero(p)) for p in m.parameters(recurse=False))
    return total


def bytes_on_disk(runnable) -> int | None:
    """Bytes of the saved model: its state_dict as torch.save writes it, or the ONNX file a peer runs."""
    path = getattr(runnable, "path", None)
    if path is not None and Path(path).is_file():
        return Path(path).stat().st_size
    module = getattr(runnable, "_orig_mod", runnable)
    if not isinstance(module, nn.Module):
        return None
    buffer = io.BytesIO()
    try:
        torch.save(module.state_dict(), buffer)
    except Exception:  # noqa: BLE001  (a state that does not serialise: unknown size)
        return None
    return buffer.tell()


def _forward(runnable, x: torch.Tensor) -> torch.Tensor:
    out = runnable(x)
    return out if isinstance(out, torch.Tensor) else torch.from_numpy(out)


@torch.no_grad()
def predict(runnable, dataset, batch: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    # evenly spaced when limited: every class, the same samples for every row
    idx = list(range(n)) if limit is None or n == len(dataset) else [i * len(dataset) // n for i in range(n)]
    preds, labels = [], []
    for start in range(0, len(idx), batch):
        items = [dataset[i] for i in idx[start:start + batch]]
        x = torch.stack([it[0] for it in items])
        preds.append(_forward(runnable, x).argmax(-1))
        labels.append(torch.tensor([int(it[1]) for it in items]))
    return torch.cat(preds), torch.cat(labels)


# ------------------------------------------------------------------------------------------ the study

@dataclass
class ModelState:
    subject: object
    base: nn.Module
    weights: str
    calibration: list
    calibration_source: str
    example: torch.Tensor
    folder: Path
    base_key: str
    notes: list = field(default_factory=list)


class Study:
    def __init__(self, cfg: Config, log=print):
        self.cfg = cfg
        self.log = log
        from edgeopt.models import cache_dir

        self.cache = cache_dir() / "study" / cfg.mode
        self.out = Path(cfg.out)

    # ---- per model
    def model(self, name: str) -> ModelState:
        from edgeopt.perf.peers import weights_key

        subject = S.get_subject(name)
        base, weights = S.load_model(subject, log=self.log)
        calib, source = S.calibration(subject)
        return ModelState(subject, base, weights, calib, source, S.example_input(subject), self.cache / subject.name,
                          weights_key(base))

    def context(self, m: ModelState, train_only: bool = False) -> R.Context:
        return R.Context(m.subject, m.base, m.calibration, m.example, threads=self.cfg.threads, quick=self.cfg.quick,
                         folder=m.folder, log=lambda s: self.log("  " + s), train_only=train_only)

    def row_path(self, model: str, row: str) -> Path:
        return self.out / "rows" / model / f"{row}.json"

    def built_path(self, m: ModelState, row: str) -> Path:
        return R.built_path(m.folder, row, m.base_key)

    # ---- stages
    def run(self) -> Path | None:
        """Runs the configured stages; returns the report's path (None without the report stage). After it,
        `self.left` lists the timing pieces the budget left for a later run."""
        cfg = self.cfg
        models, rows = cfg.model_names(), cfg.row_names()
        for name in models:
            S.get_subject(name)
        for row in rows:
            R.get_recipe(row)
        pieces = [(stage, mdl, row) for stage in ("train", "build") if stage in cfg.stages for mdl in models
                  for row in rows if not (stage == "train" and not R.RECIPES[row].trains)]
        if "time" in cfg.stages:
            pieces += [(part, mdl, "") for mdl in models for part in ("time", "profile")
                       if part == "time" or cfg.profile]
        self.left: list[tuple[str, str]] = []
        durations = self.cache / "durations.json"
        eta = Eta(pieces, self.log, measured=_read_json(durations) or {})
        self._began, self._timed_any = time.perf_counter(), False
        self.log(f"edgeopt study ({cfg.mode}): {len(models)} models x {len(rows)} rows, stages "
                 f"{', '.join(s for s in STAGES if s in cfg.stages)}; results in {self.out}; cache {self.cache}"
                 + (f"; timing budget {cfg.budget:.0f} s" if cfg.budget and "time" in cfg.stages else ""))
        try:
            for name in models:
                if not (set(cfg.stages) & {"train", "build", "time"}):
                    break
                if set(cfg.stages) <= {"time", "report"} and self._timed(name, rows):
                    for part in ("time", "profile"):
                        eta.end((part, name, ""), cached=True)
                    continue
                m = self.model(name)
                if "train" in cfg.stages:
                    for row in rows:
                        if R.RECIPES[row].trains:
                            self._train(m, row, eta)
                if "build" in cfg.stages:
                    base_preds = None
                    for row in (["fp32"] + [r for r in rows if r != "fp32"]):
                        result = self._build(m, row, eta, base_preds)
                        if row == "fp32" and result and result.get("predictions") is not None:
                            base_preds = torch.tensor(result["predictions"])
                if "time" in cfg.stages:
                    self._time(m, rows, eta)
        finally:
            _atomic_json(durations, eta.measured)
        if self.left:
            self.log(f"timing budget reached: {len(self.left)} timing piece(s) left ("
                     + ", ".join(f"{model} {part}" for part, model in self.left)
                     + "); run the same command again to continue")
        if "report" in cfg.stages:
            from edgeopt.study.report import write_report

            return write_report(self.out, models, rows, self.cfg, log=self.log)
        return None

    def _train(self, m: ModelState, row: str, eta: Eta) -> None:
        piece = ("train", m.subject.name, row)
        recipe = R.RECIPES[row]
        eta.begin(piece, f"{m.subject.name} {row}: training part")
        t0 = time.perf_counter()
        try:
            R.build(recipe, self.context(m, train_only=True))
            status = "done"
        except R.NotApplicable as exc:
            status = f"not applicable: {exc}"
        cached = time.perf_counter() - t0 < 2
        eta.end(piece, cached=cached)
        self.log(f"  {status} ({time.perf_counter() - t0:.0f} s{', cached' if cached else ''})")

    def _build(self, m: ModelState, row: str, eta: Eta, base_preds) -> dict | None:
        from edgeopt.perf import peers
        from edgeopt.perf.cache import save

        cfg = self.cfg
        path = self.row_path(m.subject.name, row)
        key = _key(cfg, m.subject, row, m.base_key)
        piece = ("build", m.subject.name, row)
        old = _read_json(path)
        if old is not None and old.get("key") == key and not cfg.force:
            eta.end(piece, cached=True)
            return old
        eta.begin(piece, f"{m.subject.name} {row}: build, accuracy, size")
        recipe = R.RECIPES[row]
        ctx = self.context(m)
        t0 = time.perf_counter()
        result = {"key": key, "model": m.subject.name, "row": row, "label": recipe.label, "kind": recipe.kind,
                  "family": recipe.family, "weights": m.weights, "calibration": m.calibration_source}
        try:
            torch.set_num_threads(cfg.threads)
            runnable = R.build(recipe, ctx)
        except R.NotApplicable as exc:
            result.update(status="not applicable", reason=str(exc))
        except peers.PeerUnavailable as exc:
            result.update(status="skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001  (a row that fails is shown as failed, the study goes on)
            result.update(status="failed", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        else:
            result.update(status="ok", notes=ctx.notes)
            result.update(self._measure(m, recipe, runnable, base_preds))
            if recipe.pickles and isinstance(runnable, nn.Module):
                try:
                    save(self.built_path(m, row), runnable)
                except Exception as exc:  # noqa: BLE001  (rebuilt at timing instead)
                    result["notes"].append(f"not cached ({type(exc).__name__}); rebuilt when timed")
        result["build_s"] = time.perf_counter() - t0
        _atomic_json(path, result)
        eta.end(piece)
        status = result["status"] + (f": {result.get('reason')}" if result["status"] != "ok" else "")
        acc = result.get("accuracy")
        self.log(f"  {status}" + (f"; accuracy {100 * acc:.2f}%" if acc is not None else "")
                 + f" ({result['build_s']:.0f} s)")
        return result

    def _measure(self, m: ModelState, recipe, runnable, base_preds) -> dict:
        from edgeopt.perf.cost import count_macs

        out: dict = {}
        module = getattr(runnable, "_orig_mod", runnable)
        # peers and compiled graphs run the fp32 model's arithmetic; edgeopt's rows are counted as built
        counted = module if recipe.kind in ("base", "edgeopt") and isinstance(module, nn.Module) else m.base
        try:
            out["macs"] = count_macs(counted, m.subject.input_shape)
        except Exception:  # noqa: BLE001  (a module the hooks cannot run: unknown)
            out["macs"] = None
        if recipe.kind in ("peer",) or not isinstance(module, nn.Module):
            out["weights_stored"] = stored_weights(m.base)
        else:
            out["weights_stored"] = stored_weights(module)
        out["bytes_on_disk"] = bytes_on_disk(runnable)
        with torch.no_grad():
            ref = m.base(m.example)
            y = _forward(runnable, m.example).float()
        out["output_rel_error"] = float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        if m.subject.task is not None:
            limit = TEST_LIMIT[self.cfg.mode].get(m.subject.name)
            batch = 1 if (recipe.kind == "peer" or recipe.name.startswith("compile")) else 64
            test = S.dataset(m.subject, "test")
            preds, labels = predict(runnable, test, batch, limit)
            out["accuracy"] = float((preds == labels).float().mean())
            out["test_samples"] = len(labels)
            out["predictions"] = preds.tolist()
            if base_preds is not None and len(base_preds) == len(preds):
                out["agreement"] = float((preds == base_preds).float().mean())
        return out

    # ---- timing
    def timing_path(self, model: str, part: str = "time") -> Path:
        return self.out / "timing" / (f"{model}.json" if part == "time" else f"{model}.{part}.json")

    def timing_key(self, model: str, rows: list[str]) -> str:
        """What a model's timing depends on: each row's build (its key and status) and the schedule."""
        cfg = self.cfg
        built = [f"{row}={(_read_json(self.row_path(model, row)) or {}).get('key', 'none')}" for row in rows]
        return (f"{cfg.mode}:{model}:threads={cfg.threads}:blocks={cfg.blocks}:s={cfg.seconds_per_block}:"
                f"loaded={cfg.loaded}:" + ",".join(built))

    def _fresh(self, model: str, rows: list[str], part: str) -> bool:
        old = _read_json(self.timing_path(model, part))
        return old is not None and old.get("key") == self.timing_key(model, rows) and not self.cfg.force

    def _timed(self, model: str, rows: list[str]) -> bool:
        """Both timing pieces of `model` are done for the current builds (nothing to load the model for)."""
        return self._fresh(model, rows, "time") and (not self.cfg.profile or self._fresh(model, rows, "profile"))

    def _within_budget(self, piece, eta: Eta) -> bool:
        """Whether `piece` may start: always the first timing piece of a run (so every run makes progress),
        after it only when the piece's estimate ends within the budget (counted from the run's start)."""
        first, self._timed_any = not self._timed_any, True
        if self.cfg.budget is None or first:
            return True
        return time.perf_counter() - self._began + eta.estimate(piece) <= self.cfg.budget

    def _runnables(self, m: ModelState, rows: list[str]) -> tuple[dict, dict]:
        from edgeopt.perf import peers

        ok, why = {}, {}
        for row in rows:
            res = _read_json(self.row_path(m.subject.name, row))
            if res is None:
                why[row] = "not built (run the build stage)"
                continue
            if res.get("status") != "ok":
                why[row] = f"{res.get('status')}: {res.get('reason', '')}"
                continue
            recipe = R.RECIPES[row]
            path = self.built_path(m, row)
            try:
                if recipe.pickles and path.is_file():
                    ok[row] = torch.load(path, weights_only=False).eval()
                else:
                    ok[row] = R.build(recipe, self.context(m))
            except (R.NotApplicable, peers.PeerUnavailable) as exc:
                why[row] = str(exc)
        return ok, why

    def _time(self, m: ModelState, rows: list[str], eta: Eta) -> None:
        import edgeopt
        from edgeopt.perf import isa, plots
        from edgeopt.perf.timing import LoadRecord, alternating_blocks

        cfg = self.cfg
        name = m.subject.name
        key = self.timing_key(name, rows)
        piece = ("time", name, "")
        need_time = not self._fresh(name, rows, "time")
        need_profile = cfg.profile and not self._fresh(name, rows, "profile")
        if not need_time:
            eta.end(piece, cached=True)
        if not need_profile:
            eta.end(("profile", name, ""), cached=True)
        if not (need_time or need_profile):
            return
        if need_time and not self._within_budget(piece, eta):
            self.left += [("time", name)] + ([("profile", name)] if need_profile else [])
            return
        plots.preload()  # before any peer runs (see plots.preload)
        torch.set_num_threads(cfg.threads)
        edgeopt.set_num_threads(cfg.threads)
        if need_time:
            eta.begin(piece, f"{name}: timing {len(rows)} rows in alternating blocks ({cfg.threads} threads)")
        runnables, why = self._runnables(m, rows)
        if need_time:
            x = m.example
            result = {"key": key, "model": name, "threads": cfg.threads, "path": isa.describe(), "not_timed": why,
                      "isa": {row: getattr(r, "meta", {}).get("contender_isa", "") for row, r in runnables.items()}}
            contenders = {row: (lambda r=r: r(x)) for row, r in runnables.items()}
            load = LoadRecord()
            quiet = alternating_blocks(contenders, blocks=cfg.blocks, seconds_per_block=cfg.seconds_per_block)
            result["quiet"] = {row: s.to_dict() for row, s in quiet.items()}
            result["load_quiet"] = load.stop().to_dict()
            if cfg.loaded:
                busy = BusyCore()
                busy.set(True)
                try:
                    time.sleep(0.5)
                    load = LoadRecord()
                    busy_samples = alternating_blocks(contenders, blocks=max(2, cfg.blocks - 2),
                                                      seconds_per_block=cfg.seconds_per_block)
                    result["loaded"] = {row: s.to_dict() for row, s in busy_samples.items()}
                    result["load_loaded"] = load.stop().to_dict()
                finally:
                    busy.set(False)
            _atomic_json(self.timing_path(name), result)
            eta.end(piece)
            fast = sorted(quiet.items(), key=lambda kv: kv[1].median)[:3]
            self.log("  fastest: " + ", ".join(f"{row} {s.median * 1e3:.2f} ms" for row, s in fast))
        if need_profile:
            piece = ("profile", name, "")
            if not self._within_budget(piece, eta):
                self.left.append(("profile", name))
                return
            eta.begin(piece, f"{name}: per-layer profile, fp32 against the fastest edgeopt row")
            medians = {row: s["median_ms"] for row, s in (_read_json(self.timing_path(name)) or {})
                       .get("quiet", {}).items()}
            summary = self._profile(m, runnables, medians)
            _atomic_json(self.timing_path(name, "profile"), {"key": key, "model": name, "profile": summary})
            eta.end(piece)

    def _profile(self, m: ModelState, runnables: dict, medians: dict) -> dict | None:
        """fp32 against the row the report names best (report.best_row: the fastest edgeopt row within the
        accuracy budget) among those the profiler can trace, with OpenVINO's per-node times for the QDQ model
        where that row is int8; saved in profile/<model>/."""
        import edgeopt
        from edgeopt.study.report import best_row

        entries = {}
        for row in runnables:
            res = _read_json(self.row_path(m.subject.name, row)) or {}
            if row in medians and R.RECIPES[row].pickles:
                entries[row] = {**res, "kind": R.RECIPES[row].kind, "median_ms": medians[row]}
        best, _ = best_row(m.subject.name, entries)
        if best is None or "fp32" not in runnables:
            return None
        peer_files = None
        qdq = m.folder / "onnx"
        files = sorted(qdq.glob(f"{m.subject.name}-{m.base_key}-qdq.onnx")) if qdq.is_dir() else []
        fp32_files = sorted(qdq.glob(f"{m.subject.name}-{m.base_key}-fp32.onnx")) if qdq.is_dir() else []
        if files and fp32_files and best.endswith("int8"):
            peer_files = (fp32_files[0], files[0])
        try:
            r = edgeopt.profile(m.base, m.example, optimized=runnables[best], threads=self.cfg.threads, blocks=3,
                                seconds_per_block=0.15, peer="openvino" if peer_files else None,
                                peer_model=peer_files, labels=("fp32", best), name=f"{m.subject.label}: fp32 vs {best}")
        except Exception as exc:  # noqa: BLE001  (the study goes on; the report says the profile failed)
            return {"row": best, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        folder = self.out / "profile" / m.subject.name
        written = r.save(folder)
        after = r.after
        top = sorted(after.layers, key=lambda layer: -layer.seconds)[:5]
        return {"row": best, "files": {k: str(v) for k, v in written.items()},
                "fp32_by_bound_ms": {k: v * 1e3 for k, v in r.before.totals_by_bound().items()},
                "best_by_bound_ms": {k: v * 1e3 for k, v in after.totals_by_bound().items()},
                "accounting_error": {"fp32": r.before.accounting_error, best: after.accounting_error},
                "best_total_ms": after.layers_seconds * 1e3,
                "top_layers": [{"name": layer.name, "what": f"{layer.step.op} {layer.step.detail}".strip(),
                                "ms": layer.seconds * 1e3, "share": layer.share, "bound": layer.bound,
                                "compute_fraction": layer.compute_fraction,
                                "bandwidth_fraction": layer.bandwidth_fraction} for layer in top],
                "ceilings": r.ceilings.to_dict() if r.ceilings else None}
