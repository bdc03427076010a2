"""Output folders, checked before any work starts: a clear error naming the user's path instead of a traceback
at the end of a long run, and a policy for results already there.

:func:`check_output_dir` accepts a folder that exists and is writable, or one that can be created (its nearest
existing ancestor is a writable folder); ``s3://`` URIs are left to the object store.  :func:`reuse_policy`
refuses a folder that already holds a run's results unless the user says ``resume`` or ``overwrite``.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from netdiff_lib import storage
from netdiff_lib.errors import SYMLINK_LOOP, OutputError


def check_output_dir(path: str | Path, what: str = "output folder") -> None:
    """Raise :class:`OutputError` naming ``path`` unless it is, or can be made, a writable folder."""
    if storage.is_remote(path):
        return
    p = Path(path)
    probe = p
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(path, f"is a file; the {what} must be a folder" if probe == p
                          else f"cannot create the {what}: {probe} is a file")
    if not probe.exists():
        raise OutputError(path, f"cannot create the {what}: {probe} is a {_link_problem(probe)}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(path, f"the {what} is not writable" if probe == p
                          else f"cannot create the {what}: {probe} is not writable")


def _link_problem(link: Path) -> str:
    """What is wrong with a link that leads nowhere: a loop, or a target that does not exist."""
    try:
        os.stat(link)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return SYMLINK_LOOP
    return "broken link"


def existing_results(uri: str | Path, names: Sequence[str]) -> list[str]:
    """Which of ``names`` (files or folders) already exist under the folder or ``s3://`` prefix ``uri``.  An object
    store that cannot be asked (no bucket, wrong credentials) holds none here: the pipeline's first step reports
    that, naming the input before the output."""
    if not storage.is_remote(uri) and not Path(uri).is_dir():
        return []
    try:
        return [n for n in names if storage.exists(storage.join(uri, n))]
    except storage.StorageError:
        return []


def reuse_policy(path: str | Path, found: Sequence[str], *, resume: bool, overwrite: bool) -> None:
    """Refuse results already in ``path`` (``found``) unless ``resume`` or ``overwrite``; ``overwrite`` deletes
    them (local folders only)."""
    if not found or resume:
        return
    if not overwrite:
        raise OutputError(path, f"already holds results ({', '.join(found)}): pass --resume to continue "
                                "training its model, --overwrite to replace them, or choose a new folder")
    if storage.is_remote(path):
        raise OutputError(path, "--overwrite deletes local folders only: remove the objects or choose a new prefix")
    for name in found:
        target = Path(path) / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
