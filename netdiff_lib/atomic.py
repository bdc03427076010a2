"""Atomic file output (write to a temporary name in the target folder, then rename) and JSON files."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from netdiff_lib.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(dest: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``dest`` for writing; it becomes ``dest`` on success only."""
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
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
