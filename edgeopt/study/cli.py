"""`edgeopt study`: every optimization alone and combined, on the models with real data, in one report."""
from __future__ import annotations

import sys
from pathlib import Path

from edgeopt.cli_args import positive_float, positive_int


def run(args) -> int:
    from edgeopt.study import recipes, runner

    if args.list:
        print("rows:")
        for r in recipes.RECIPES.values():
            print(f"  {r.name:22s} {r.label}{'  [quick]' if r.quick else ''}{'  (trains)' if r.trains else ''}")
        print("models: " + ", ".join(runner.FULL_MODELS) + f"  (quick: {', '.join(runner.QUICK_MODELS)})")
        return 0
    stages = tuple(args.stage.split(",")) if args.stage != "all" else runner.STAGES
    unknown = [s for s in stages if s not in runner.STAGES]
    if unknown:
        raise ValueError(f"edgeopt study: unknown stage(s) {unknown}; choose from {', '.join(runner.STAGES)} or all")
    out = Path(args.out) if args.out else Path("edgeopt-study") / ("quick" if args.quick else "full")
    cfg = runner.Config(out=out, quick=args.quick, models=tuple(filter(None, args.models.split(","))),
                        rows=tuple(filter(None, args.rows.split(","))), threads=args.threads, stages=stages,
                        blocks=args.blocks, seconds_per_block=args.seconds, loaded=not args.no_loaded,
                        profile=not args.no_profile, force=args.force, budget=args.budget)
    study = runner.Study(cfg, log=lambda m: print(m, flush=True))
    report = study.run()
    if report is not None:
        print(f"\nreport: {report}\nJSON:   {report.parent / 'results.json'}")
    return PIECES_LEFT if study.left else 0


# exit status when the timing budget left pieces for another run (a script repeats the command until 0)
PIECES_LEFT = 3


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="every optimization alone and combined: accuracy, latency, size, report",
                              description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="fewer models and rows, short fine-tunes, test subsets (about 15 minutes on 2 cores)")
    p.add_argument("--models", default="", help="comma-separated (default: all; --list shows them)")
    p.add_argument("--rows", default="", help="comma-separated rows (default: all, or the quick ones)")
    p.add_argument("--stage", default="all",
                   help="train, build, time, report (comma-separated) or all; each resumes from its cached pieces")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for every contender (default 2)")
    p.add_argument("--blocks", type=positive_int, default=5, help="alternating-block rounds when timing (default 5)")
    p.add_argument("--seconds", type=positive_float, default=0.2, help="seconds per block per row (default 0.2)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="time stage: start no timing piece that would end past SECONDS from the start (the first "
                        "always runs); exits with status 3 while pieces are left, so a quiet window can be "
                        "filled by repeating the command")
    p.add_argument("--no-loaded", action="store_true", help="skip the timing with one core kept busy")
    p.add_argument("--no-profile", action="store_true", help="skip the per-layer profile of the best row")
    p.add_argument("--force", action="store_true", help="rebuild and re-measure rows found in the cache")
    p.add_argument("--out", default=None, help="results folder (default edgeopt-study/quick or edgeopt-study/full)")
    p.add_argument("--list", action="store_true", help="list the rows and models and exit")
    p.set_defaults(run=run)


if __name__ == "__main__":
    from edgeopt.cli import main

    sys.exit(main(["study", *sys.argv[1:]]))
