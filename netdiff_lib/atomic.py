"""File output: atomic where it can be (write to a temporary name beside the target, then rename), in place
where a rename would do harm; and JSON files.

The rule: the temporary file is renamed onto a new path or an existing regular file only.  A rename never
replaces a device, a FIFO, a socket or a symbolic link: ``-W /dev/null`` (as root), a FIFO or a link to
``/proc/self/fd/1`` are opened and written in place, as nPrint and every shell tool do.  A symlink to a regular
file (or to a path that does not exist yet) keeps its link: the file it leads to is replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from netdiff_lib.errors import InputError, OutputError, os_cause


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def rename_target(dest: str | Path) -> Path | None:
    """The path a temporary file may be renamed onto to write ``dest``, or None when ``dest`` must be written in
    place (it is, or a link leads to, a device, FIFO or socket).

    A new path is its own target; so is a regular file that is not a link.  A link resolves to the regular file
    (or new path) it leads to, checked to be the file ``dest`` opens; a link through ``/proc`` (``/dev/stdout``,
    ``/dev/fd/N``, ``/proc/self/fd/N``) names a file the process has open, which is written in place (whoever
    reads it through that open file sees the output).
    """
    dest = Path(dest)
    try:
        st = os.stat(dest)  # follows links
    except FileNotFoundError:
        return Path(os.path.realpath(dest)) if dest.is_symlink() else dest
    except OSError as exc:
        raise OutputError(dest, os_cause(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        return dest  # the rename fails (IsADirectoryError) and the temporary file goes away
    if not stat.S_ISREG(st.st_mode):
        return None
    if not dest.is_symlink():
        return dest
    if _via_proc(dest):
        return None
    real = Path(os.path.realpath(dest))
    try:
        same = os.path.samestat(os.stat(real), st)
    except OSError:
        same = False
    return real if same else None


def _via_proc(link: Path) -> bool:
    """Whether following ``link`` passes through ``/proc`` (an open file of the process rather than a path)."""
    p = link
    for _ in range(40):  # the kernel's own limit on links followed
        if Path(os.path.realpath(p.parent)).parts[1:2] == ("proc",):
            return True
        if not p.is_symlink():
            return False
        target = Path(os.readlink(p))
        p = target if target.is_absolute() else p.parent / target
    return False


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``'s file; rename it onto that file only if the block succeeds.

    Where a rename would replace a device, FIFO or link (see :func:`rename_target`), ``dest`` itself is yielded
    and written in place.
    """
    dest = Path(dest)
    target = rename_target(dest)
    if target is None:
        yield dest
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(dest: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``dest`` for writing; it becomes ``dest`` on success only (devices, FIFOs
    and links to them are opened in place: see :func:`atomic_path`)."""
    with atomic_path(dest) as tmp, open(tmp, mode) as fh:
        yield fh


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return Path(path)


def read_json(path: str | Path, missing: str = "no such file") -> Any:
    """Parse a JSON file; a missing or unparsable file is an :class:`InputError` (``missing`` says the first)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, missing) from None
    except OSError as exc:
        raise InputError(path, os_cause(exc, "cannot read")) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
