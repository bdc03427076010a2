"""A trace: one capture (or one generated sample) as an nPrint matrix plus timestamps.

The compact array file is an ``.npz`` holding the int8 matrix, the column names, the timestamps (ns since
the epoch), the label and the source file; it is ~1 byte per bit, loads without parsing, and is what every
netdiff stage passes around.  ``-1`` means "not on the wire", as in nPrint.  Files from elsewhere are read
through :class:`ArrayFile`, which checks what they declare before inflating anything and can stream the rows.
"""

from __future__ import annotations

import contextlib
import json
import math
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npformat

from netdiff_lib.atomic import atomic_path
from netdiff_lib.errors import InputError
from netdiff_lib.schema import Layout

ARRAY_FORMAT = "netdiff-nprint/1"
#: Largest JSON header an array file may declare (bytes), and the rows read at a time.
MAX_HEADER_BYTES = 1 << 20
CHUNK_ROWS = 4096


@dataclass
class Trace:
    """An nPrint matrix ``(packets, layout.width)`` of int8 in {-1, 0, 1} with per-packet timestamps."""

    matrix: np.ndarray
    layout: Layout
    ts_ns: np.ndarray | None = None
    label: str | None = None
    source: str | None = None
    index: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.int8)
        if self.matrix.ndim != 2 or self.matrix.shape[1] != self.layout.width:
            raise ValueError(f"matrix shape {self.matrix.shape} does not fit layout width {self.layout.width}")
        if self.ts_ns is not None:
            self.ts_ns = np.asarray(self.ts_ns, dtype=np.int64)
            if self.ts_ns.shape != (len(self.matrix),):
                raise ValueError("ts_ns needs one timestamp per packet")

    def __len__(self) -> int:
        return len(self.matrix)

    def iat_us(self) -> np.ndarray:
        """Inter-arrival times in microseconds (float64, first packet 0); zeros when there are no timestamps."""
        if self.ts_ns is None or len(self.ts_ns) == 0:
            return np.zeros(len(self.matrix))
        return np.diff(self.ts_ns, prepend=self.ts_ns[:1]).astype(np.float64) / 1e3

    def head(self, n: int) -> Trace:
        """The first ``n`` packets."""
        ts = None if self.ts_ns is None else self.ts_ns[:n]
        index = None if self.index is None else self.index[:n]
        return Trace(self.matrix[:n], self.layout, ts, self.label, self.source, index, dict(self.meta))

    def with_layout(self, layout: Layout) -> Trace:
        """The same packets in another layout that this one contains (e.g. NETDIFFUSION from its full layout)."""
        cols = {c: i for i, c in enumerate(self.layout.columns)}
        missing = [c for c in layout.columns if c not in cols]
        if missing:
            raise ValueError(f"layout {layout.describe()} needs columns this trace lacks, e.g. {missing[:3]}")
        idx = np.fromiter((cols[c] for c in layout.columns), dtype=np.intp, count=layout.width)
        return Trace(self.matrix[:, idx], layout, self.ts_ns, self.label, self.source, self.index, dict(self.meta))


def save_trace(path: str | Path, trace: Trace, compress: bool = True) -> None:
    """Write the compact array file atomically (``.npz``; zlib-compressed unless ``compress=False``)."""
    header = {
        "format": ARRAY_FORMAT,
        "layout": trace.layout.to_dict(),
        "label": trace.label,
        "source": trace.source,
        "meta": trace.meta,
    }
    arrays = {"matrix": trace.matrix, "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    if trace.ts_ns is not None:
        arrays["ts_ns"] = trace.ts_ns
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)


class ArrayFile:
    """An array file opened for reading, its sizes checked before anything is inflated.

    The zip directory and each member's ``.npy`` header declare shape, dtype and size; they are checked (a
    2-D integer matrix as wide as the layout, one int64 timestamp per row, sizes that agree with the zip
    directory, at most ``max_rows`` rows) before a byte of the matrix is decompressed, so a small file that
    claims a huge or ill-shaped matrix is refused at once.  :meth:`chunks` then streams the matrix rows.
    """

    def __init__(self, path: str | Path, max_rows: int | None = None) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise InputError(path, "no such file") from None
        except IsADirectoryError:
            raise InputError(path, "a folder, not an array file") from None
        except OSError as exc:
            raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
        except zipfile.BadZipFile:
            raise InputError(path, "not a netdiff array file (not a complete .npz zip archive; truncated?)") from None
        try:
            self._open(max_rows)
        except BaseException:
            self.close()
            raise

    def _open(self, max_rows: int | None) -> None:
        with self._guard():
            names = set(self._zip.namelist())
            for need in ("header.npy", "matrix.npy"):
                if need not in names:
                    raise ValueError(f"no {need[:-4]!r} array in it")
            shape, dtype, fh = self._member("header.npy")
            if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
                raise ValueError(f"its header has shape {shape} ({dtype}), not JSON text "
                                 f"(at most {MAX_HEADER_BYTES} bytes)")
            with fh:
                header = json.loads(fh.read(shape[0]).decode())
        if not isinstance(header, dict) or header.get("format") != ARRAY_FORMAT:
            found = header.get("format") if isinstance(header, dict) else None
            raise InputError(self.path, f"unknown array format {found!r}, expected {ARRAY_FORMAT}")
        try:
            self.layout = Layout.from_dict(header["layout"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(self.path, f"not a netdiff array file (bad layout: {exc})") from None
        self.label, self.source = header.get("label"), header.get("source")
        self.meta = header.get("meta") or {}
        with self._guard():
            shape, self._dtype, fh = self._member("matrix.npy")
            fh.close()
        if len(shape) != 2 or shape[1] != self.layout.width or self._dtype.kind not in "biu":
            raise InputError(self.path, f"its matrix has shape {shape} ({self._dtype}); the layout needs "
                                        f"(packets, {self.layout.width}) integers")
        self.rows = int(shape[0])
        if max_rows is not None and self.rows > max_rows:
            raise InputError(self.path, f"{self.rows:,} packet rows, more than the {max_rows:,} this command takes "
                                        "per trace (cut it into shorter traces)")
        self.ts_ns = self._timestamps() if "ts_ns.npy" in names else None

    def _timestamps(self) -> np.ndarray:
        with self._guard():
            shape, dtype, fh = self._member("ts_ns.npy")
            if shape != (self.rows,) or dtype.kind not in "iu":
                raise InputError(self.path, f"its timestamps have shape {shape} ({dtype}); the matrix "
                                            f"needs one integer per packet row ({self.rows:,})")
            with fh:
                return _read(fh, dtype, self.rows).astype(np.int64)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn what a damaged or crafted archive raises into an :class:`InputError` naming the file."""
        try:
            yield
        except InputError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, UnicodeDecodeError) as exc:
            raise InputError(self.path, f"not a netdiff array file ({exc or type(exc).__name__})") from None

    def _member(self, name: str) -> tuple[tuple[int, ...], np.dtype, IO[bytes]]:
        """Shape, dtype and an open stream positioned at the data of one ``.npy`` member; the declared data
        size must agree with the zip directory's (nothing is inflated beyond the header)."""
        info = self._zip.getinfo(name)
        fh = self._zip.open(info)
        version = npformat.read_magic(fh)
        reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
        if (fortran and len(shape) > 1) or dtype.hasobject:
            raise ValueError(f"{name}: a Fortran-order or object array")
        data = math.prod(shape) * dtype.itemsize
        if info.file_size != fh.tell() + data:
            raise ValueError(f"{name} declares {data:,} data bytes but the archive holds "
                             f"{info.file_size - fh.tell():,}")
        return shape, dtype, fh

    def chunks(self, size: int = CHUNK_ROWS, limit: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, int8 rows)`` of the matrix, ``size`` rows at a time (the first ``limit`` rows only)."""
        total = self.rows if limit is None else min(limit, self.rows)
        with self._guard():
            _, dtype, fh = self._member("matrix.npy")
            with fh:
                for start in range(0, total, size):
                    n = min(size, total - start)
                    yield start, _read(fh, dtype, n * self.layout.width).reshape(n, -1).astype(np.int8)

    def read(self, limit: int | None = None) -> Trace:
        """The whole trace (its first ``limit`` rows when given)."""
        n = self.rows if limit is None else min(limit, self.rows)
        matrix = np.empty((n, self.layout.width), np.int8)
        for start, part in self.chunks(limit=n):
            matrix[start:start + len(part)] = part
        ts = None if self.ts_ns is None else self.ts_ns[:n]
        return Trace(matrix, self.layout, ts, self.label, self.source, None, self.meta)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> ArrayFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(fh: IO[bytes], dtype: np.dtype, count: int) -> np.ndarray:
    data = fh.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise EOFError("the archive ends early")
    return np.frombuffer(data, dtype)


def load_trace(path: str | Path, max_rows: int | None = None, limit: int | None = None) -> Trace:
    """Read a compact array file written by :func:`save_trace` (its first ``limit`` rows when given); one of
    more than ``max_rows`` rows is refused before it is read (see :class:`ArrayFile`)."""
    with ArrayFile(path, max_rows) as f:
        return f.read(limit)
