"""Errors that name the offending file and the cause."""

from __future__ import annotations

import errno
from pathlib import Path

#: How a symbolic link loop (ELOOP) is reported: "no such file" would send the user looking for a missing file.
SYMLINK_LOOP = "symlink loop (too many levels of symbolic links)"


def os_cause(exc: OSError, action: str = "cannot write") -> str:
    """A one-line cause for an OS refusal on a path: ``action (reason)``, or a symlink loop named as such."""
    if exc.errno == errno.ELOOP:
        return SYMLINK_LOOP
    return f"{action} ({exc.strerror or exc})"


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


class GenerationError(NetdiffError):
    """A generator produced nothing usable (e.g. no generated trace holds a packet)."""


class OutputError(NetdiffError):
    """An output path that cannot be written (a file where a folder should be, no permission, results already
    there): carries the path as the user gave it and a one-line cause."""

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")
