"""Errors that name the offending file and the cause."""

from __future__ import annotations

from pathlib import Path


class NetdiffError(Exception):
    """Base class for errors that netdiff reports to users without a traceback."""


class InputError(NetdiffError):
    """A bad input file: carries the path and a one-line cause."""

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class ConfigError(NetdiffError):
    """A bad option or combination of options."""


class TrainingError(NetdiffError):
    """Training cannot go on or its result is unusable (it diverged: the loss or the weights are not finite)."""


class OutputError(NetdiffError):
    """An output path that cannot be written (a file where a folder should be, no permission, results already
    there): carries the path as the user gave it and a one-line cause."""

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")
