"""The `edgeopt` command line: `edgeopt <command> ...` (also `python -m edgeopt`).

Each feature area registers its own subcommands through a `register(subparsers)` function, so this
file only assembles them and stays free of feature logic.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from edgeopt.cli_args import Parser

    parser = Parser(prog="edgeopt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from edgeopt import info, profile
    from edgeopt.demo import cli as demo_cli

    info.register(sub)
    demo_cli.register(sub)
    profile.register(sub)
    from edgeopt.study import cli as study_cli

    study_cli.register(sub)
    try:
        from edgeopt.training import cli as training_cli
    except ImportError:  # the training area is optional until it lands
        training_cli = None
    if training_cli is not None:
        training_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["profile"], ["study"]):  # timing commands: on the AVX2 path, set up before torch loads
        from edgeopt.perf import isa

        isa.prepare_process()
    from edgeopt.cli_args import USAGE_EXIT, UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return USAGE_EXIT
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:  # a command's early checks: one line, as argparse's own errors
        print(f"edgeopt {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
