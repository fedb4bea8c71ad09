"""What every `edgeopt` command does with a mistake in its arguments: one line on stderr,
`edgeopt <command>: error: <what and what to do>`, exit status 2, and before any long work (data loading,
training, timing). Argument types for argparse (`type=positive_int`, ...) catch values; `UsageError` raised
by a command's early checks (a model, checkpoint or data folder that does not exist) reaches `edgeopt.cli.main`,
which prints it the same way."""
from __future__ import annotations

import argparse
import ast
import contextlib
import sys
from collections.abc import Iterator

USAGE_EXIT = 2


class UsageError(Exception):
    """A mistake in the command line, found before the work starts: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line (argparse prints the whole usage first); subcommand parsers
    made by add_subparsers inherit the class."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
            from None
    if kind is float and value != value:  # NaN
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (a weight between two losses, a share)."""
    value = _number(float, text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE; the value a Python literal (32, 0.5, True, (1, 2)), else the string as written."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a name, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


@contextlib.contextmanager
def usage_errors(what: str) -> Iterator[None]:
    """Inside the block, the exceptions an argument's value causes (an unknown name, a missing file, a
    constructor refusing a keyword) become UsageError('<what>: <message>'). Only around early checks: an error
    in the work itself keeps its traceback."""
    from edgeopt.data.errors import DataError

    try:
        yield
    except (ValueError, TypeError, KeyError, FileNotFoundError, DataError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise UsageError(f"{what}: {message}") from exc
