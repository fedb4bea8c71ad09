"""Errors raised by the data layer.

Every error names the file or directory it is about, so a user with a broken or partial copy of a
dataset can see at once which file to fix. They subclass the matching built-in exceptions, so code
that already catches ``FileNotFoundError`` or ``ValueError`` keeps working.
"""
from __future__ import annotations


class DataError(Exception):
    """Base class for every problem with a dataset on disk."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset directory or file that should exist does not."""


class DataCorruptError(DataError, ValueError):
    """A dataset file exists but cannot be decoded, or its content contradicts its metadata."""
