"""The file container of the trace store: a JSON header and raw numpy arrays, 8-byte aligned, nothing compressed.

``MAGIC`` (8 bytes), the header's length (uint64, little endian), the header (UTF-8 JSON: ``format``, whatever
the writer adds, and ``arrays``: name -> ``[dtype, shape, offset]``), then the arrays.  A reader checks the magic,
the format, and that every array lies inside the file and the file ends where the last one does, before it
hands out zero-copy views; a truncated or altered file is an :class:`InputError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from netdiff_lib.atomic import atomic_path
from netdiff_lib.errors import InputError, os_cause

STORE_FORMAT = "netdiff-trace-store/1"
MAGIC = b"NDTSTOR\x01"
MAX_HEADER = 256 << 20
_ALIGN = 8


def _pad(n: int) -> int:
    return -n % _ALIGN


def write_container(path: str | Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[int, str]:
    """Write ``header`` and ``arrays`` atomically; returns ``(bytes, sha256)`` of the file."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    table, offset = {}, 0
    for name, a in arrays.items():
        table[name] = [a.dtype.str, list(a.shape), offset]
        offset += a.nbytes + _pad(a.nbytes)
    head = json.dumps({"format": STORE_FORMAT, **header, "arrays": table, "data_bytes": offset},
                      separators=(",", ":")).encode()
    head += b" " * _pad(len(MAGIC) + 8 + len(head))
    parts = [MAGIC, struct.pack("<Q", len(head)), head]
    for a in arrays.values():
        parts += [memoryview(a.reshape(-1)).cast("B") if a.size else b"", b"\0" * _pad(a.nbytes)]
    digest, size = hashlib.sha256(), 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
            digest.update(part)
            size += len(part)
    return size, digest.hexdigest()


def read_container(path: str | Path, kind: str, sha256: str | None = None) -> tuple[dict[str, Any],
                                                                                   dict[str, np.ndarray]]:
    """The header and the arrays (read-only views of the file's bytes) of a container of ``kind``; with
    ``sha256`` the file must have that digest (what the store's index recorded when it was written)."""
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(path, "missing (the trace store lists it but it is not there)") from None
    except OSError as exc:
        raise InputError(path, os_cause(exc, "cannot read")) from None
    if blob[: len(MAGIC)] != MAGIC:
        raise InputError(path, f"not a netdiff trace store file (expected {STORE_FORMAT})")
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise InputError(path, "corrupt: its sha256 differs from the one the store recorded (changed or truncated)")
    try:
        (hlen,) = struct.unpack_from("<Q", blob, len(MAGIC))
        if hlen > MAX_HEADER or len(MAGIC) + 8 + hlen > len(blob):
            raise ValueError("the header runs past the end of the file")
        header = json.loads(blob[len(MAGIC) + 8 : len(MAGIC) + 8 + hlen].decode())
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"corrupt trace store file (truncated?): {exc}") from None
    if header.get("format") != STORE_FORMAT:
        raise InputError(path, f"unknown trace store format {header.get('format')!r}, expected {STORE_FORMAT}")
    if header.get("kind") != kind:
        raise InputError(path, f"a trace store {header.get('kind')!r} file, not a {kind!r} file")
    base = len(MAGIC) + 8 + hlen
    try:
        if base + int(header["data_bytes"]) != len(blob):
            raise ValueError(f"{len(blob) - base:,} data bytes, the header declares {int(header['data_bytes']):,} "
                             "(truncated?)")
        arrays = {}
        for name, (dtype, shape, offset) in header["arrays"].items():
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            if dt.hasobject or offset < 0 or base + offset + count * dt.itemsize > len(blob):
                raise ValueError(f"array {name!r} lies outside the file")
            arrays[name] = np.frombuffer(blob, dt, count, base + offset).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"corrupt trace store file: {exc}") from None
    return header, arrays
