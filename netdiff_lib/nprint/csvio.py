"""nPrint CSV: byte-identical writing (as nPrint 1.2.1 prints it) and reading back.

Writing is vectorised: each matrix cell becomes a fixed-width slot from a lookup table (``"0,"``,
``"1,"``, ``"-1,"`` padded with NUL bytes), the NUL padding is squeezed out with one boolean mask, and each
row's last comma becomes the newline.  Only the index/timestamp prefix of a row is formatted in Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from netdiff_lib.errors import InputError
from netdiff_lib.schema import BLOCK_ORDER, PAYLOAD_PREFIX, Layout

if TYPE_CHECKING:
    from netdiff_lib.trace import Trace

#: nPrint's ``-O`` index columns: option value -> header name.
INDEX_NAMES = {0: "src_ip", 1: "dst_ip", 2: "src_prt", 3: "dst_prt", 4: "flow", 5: "tx_mac"}
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class CsvOptions:
    """What goes into each row besides the bits: the index column, and ``-R`` / ``-A`` timestamps."""

    index: int = 0
    relative: bool = False
    absolute: bool = False

    def header_prefix(self) -> list[str]:
        cols = [INDEX_NAMES[self.index]]
        if self.relative:
            cols.append("rts")
        if self.absolute:
            cols += ["tv_sec", "tv_usec"]
        return cols


def header_line(layout: Layout, opts: CsvOptions) -> bytes:
    return (",".join(opts.header_prefix() + layout.columns) + "\n").encode()


@lru_cache(maxsize=16)
def _cell_lut() -> tuple[np.ndarray, np.ndarray]:
    """(256, width) uint8 slots holding ``"<value>,"`` NUL-padded, and their lengths, indexed by uint8 value."""
    texts = [f"{(v if v < 128 else v - 256)},".encode() for v in range(256)]
    width = max(len(t) for t in texts)
    lut = np.zeros((256, width), np.uint8)
    lens = np.zeros(256, np.int64)
    for v, t in enumerate(texts):
        lut[v, : len(t)] = np.frombuffer(t, np.uint8)
        lens[v] = len(t)
    return lut, lens


@lru_cache(maxsize=16)
def _byte_slots(fill: int) -> tuple[np.ndarray, int]:
    """Text of a whole byte as 8 cells, in uint64 words: entries 0-255 a byte's bits, 256 eight fill values.

    A byte's text is 16 characters (``b,`` x 8); the fill text is ``8 * len("<fill>,")``: both are whole
    words, so NUL padding is whole words too and is squeezed out at word level.
    """
    fill_text = f"{fill}," * 8
    width = max(16, len(fill_text))
    table = np.zeros((257, width), np.uint8)
    table[:256, 0:16:2] = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1) + ord("0")  # MSB first
    table[:256, 1:16:2] = ord(",")
    table[256, : len(fill_text)] = np.frombuffer(fill_text.encode(), np.uint8)
    return table.view(np.uint64), len(fill_text)


def format_bytes(raw: np.ndarray, is_fill: np.ndarray, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of cells from whole bytes: ``raw`` (rows, bytes) uint8, ``is_fill`` marks bytes not on the wire."""
    words, fill_len = _byte_slots(fill)
    cells = np.take(words, np.where(is_fill, 256, raw.astype(np.intp)), axis=0)  # (rows, bytes, words per slot)
    flat = cells.reshape(-1)
    body = flat[flat != 0].view(np.uint8)
    ends = np.cumsum(16 * raw.shape[1] + (fill_len - 16) * is_fill.sum(axis=1))
    return body, ends


def format_bits(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of cells from any int8 matrix, one cell at a time (the general, slower path)."""
    lut, lens = _cell_lut()
    u = matrix.view(np.uint8)
    width = int(lens[[u.min(), u.max()]].max()) if u.size else 1
    cells = np.ascontiguousarray(lut[:, :width])[u]  # (rows, cols, width)
    flat = cells.reshape(-1)
    return flat[flat != 0], np.cumsum(lens[u].sum(axis=1))


def format_matrix(
    matrix: np.ndarray, fill: int = -1, raw: np.ndarray | None = None, raw_fill: np.ndarray | None = None
) -> tuple[bytes, np.ndarray]:
    """Rows of cells, each row ending in a newline; returns the text and each row's end offset.

    When every byte (8 cells) is either all bits or all ``fill`` (always so for encoded captures, which
    pass their bytes as ``raw``/``raw_fill``) the rows are built a byte at a time; otherwise cell by cell.
    """
    rows, cols = matrix.shape
    grouped = matrix.reshape(rows, cols // 8, 8) if cols % 8 == 0 and raw is None else None
    body = ends = None
    if raw is not None:
        body, ends = format_bytes(raw, raw_fill, fill)
    elif grouped is not None:
        bits_ok = ((grouped == 0) | (grouped == 1)).all(axis=2)
        is_fill = (grouped == fill).all(axis=2)
        if (bits_ok | is_fill).all():
            body, ends = format_bytes(np.packbits(grouped == 1, axis=2)[..., 0], is_fill & ~bits_ok, fill)
    if body is None:
        body, ends = format_bits(matrix)
    if len(ends):
        body[ends - 1] = ord("\n")
    return body.tobytes(), ends


def write_rows(
    out: IO[bytes], prefixes: list[str], matrix: np.ndarray, fill: int = -1,
    raw: np.ndarray | None = None, raw_fill: np.ndarray | None = None,
) -> None:
    """Write ``prefix,bits...`` rows (``prefixes`` already hold the index and timestamp values)."""
    if matrix.shape[1] == 0:
        out.write("".join(p + "\n" for p in prefixes).encode())
        return
    for s in range(0, len(matrix), CHUNK_ROWS):
        chunk = slice(s, s + CHUNK_ROWS)
        body, ends = format_matrix(
            matrix[chunk], fill, None if raw is None else raw[chunk], None if raw_fill is None else raw_fill[chunk]
        )
        starts = np.concatenate([[0], ends[:-1]])
        view = memoryview(body)
        parts: list[bytes | memoryview] = []
        for p, a, b in zip(prefixes[s : s + CHUNK_ROWS], starts.tolist(), ends.tolist(), strict=True):
            parts.append(p.encode() + b",")
            parts.append(view[a:b])
        out.write(b"".join(parts))


def timestamp_prefix(ts_ns: np.ndarray, opts: CsvOptions, prev_us: int = 0, nprint: bool = False) -> list[str]:
    """The ``rts`` and ``tv_sec,tv_usec`` values, with nPrint's quirks (µs precision; ``prev.tv_sec == 0``).

    ``prev_us`` is the timestamp of the previous written row (0 before the first), for streaming.  With
    ``nprint`` an ``rts`` of exactly -1 (time one microsecond backwards) is left out of the row, as nPrint
    1.2.1 does: it uses -1 as "no relative timestamp" and tests the value, not the option.
    """
    if not (opts.relative or opts.absolute):
        return [""] * len(ts_ns)
    us = ts_ns // 1000
    sec, usec = us // 1_000_000, us % 1_000_000
    prev = np.concatenate([[prev_us], us[:-1]])
    rts = np.where(prev // 1_000_000 == 0, 0, us - prev)
    cols = []
    if opts.relative:
        cols.append(rts.astype(str))
    if opts.absolute:
        cols += [sec.astype(str), usec.astype(str)]
    rows = [",".join(t) for t in zip(*cols, strict=True)]
    if nprint and opts.relative:
        for i in np.flatnonzero(rts == -1).tolist():
            rows[i] = rows[i].partition(",")[2]
    return rows


def join_prefix(index: list[str], ts: list[str]) -> list[str]:
    return [i + "," + t if t else i for i, t in zip(index, ts, strict=True)]


@lru_cache(maxsize=65536)
def ip_text(raw: bytes) -> str:
    """Dotted IPv4 or compressed IPv6 text, as ``inet_ntoa``/``inet_ntop`` print them."""
    if len(raw) == 4:
        return "%d.%d.%d.%d" % tuple(raw)  # noqa: UP031 - inet_ntoa's text, without importing socket (3 ms)
    import socket

    return socket.inet_ntop(socket.AF_INET6, raw)


def _first_field(columns: list[str]) -> int:
    for i, c in enumerate(columns):
        if c.startswith(PAYLOAD_PREFIX + "_") or any(c.startswith(b + "_") for b in BLOCK_ORDER):
            return i
    return len(columns)


def read_nprint_csv(path: str | Path, label: str | None = None) -> Trace:
    """Read an nPrint CSV (nPrint's own, netdiff's, or NetDiffusion's with or without a pandas index)."""
    from netdiff_lib.trace import Trace

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = fh.readline().decode().rstrip("\r\n").split(",")
            lines = [ln.rstrip(b"\r") for ln in fh.read().split(b"\n") if ln.strip()]
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(path, "the header line is not text: not an nPrint CSV") from None
    if header == [""]:
        raise InputError(path, "an empty file, not an nPrint CSV (no header line)" if not lines
                         else "the first line is empty: no nPrint header line")
    first = _first_field(header)
    if first == len(header):
        raise InputError(path, "no nPrint bit columns in the header line")
    try:
        layout = Layout.from_columns(header[first:])
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    prefix_names = header[:first]
    matrix = np.empty((len(lines), layout.width), np.int8)
    prefixes: list[list[str]] = []
    rts_at = prefix_names.index("rts") if "rts" in prefix_names else None
    for r, line in enumerate(lines):
        parts = _split_prefix(line, first, rts_at, len(header))
        prefixes.append([p.decode() for p in parts[:first]])
        row = _cells(path, r + 2, parts[-1].split(b",")) if layout.width else np.zeros(0)
        if row.shape != (layout.width,):
            raise InputError(path, f"line {r + 2} has {len(row)} bit values, the header names {layout.width}")
        matrix[r] = row
    try:
        ts_ns = _timestamps(prefix_names, prefixes)
    except (ValueError, IndexError):
        raise InputError(path, "the timestamp columns (rts, tv_sec, tv_usec) do not all hold numbers") from None
    index = [p[0] for p in prefixes] if prefix_names and prefix_names[0] in INDEX_NAMES.values() else None
    return Trace(matrix, layout, ts_ns, label, str(path), index)


def _split_prefix(line: bytes, first: int, rts_at: int | None, columns: int) -> list[bytes]:
    """A row as its ``first`` prefix cells and the rest.  nPrint leaves a row's ``rts`` out when it is -1 (one
    microsecond backwards); such a row, one cell short, gets its -1 back."""
    if not first:
        return [line]
    if rts_at is not None and line.count(b",") == columns - 2:
        parts = line.split(b",", first - 1)
        parts.insert(rts_at, b"-1")
        return parts
    return line.split(b",", first)


def _cells(path: Path, line: int, cells: list[bytes]) -> np.ndarray:
    """One row's bit values.  Besides nPrint's integers this reads what pandas writes: ``0.0``/``1.0``/``-1.0``
    (float columns) and empty cells (missing values, read as -1, absent)."""
    try:
        return np.array(cells, dtype=np.int16)
    except ValueError:
        pass
    try:
        values = np.array([float(c) if c.strip() else -1.0 for c in cells])
    except ValueError:
        bad = next(c for c in cells if c.strip() and not _is_number(c))
        raise InputError(path, f"line {line}: {bad.decode(errors='replace')[:20]!r} is not a bit value") from None
    if not np.isin(values, (-1.0, 0.0, 1.0)).all():
        bad = values[~np.isin(values, (-1.0, 0.0, 1.0))][0]
        raise InputError(path, f"line {line}: {bad:g} is not a bit value (-1, 0 or 1)")
    return values.astype(np.int16)


def _is_number(cell: bytes) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _timestamps(names: list[str], rows: list[list[str]]) -> np.ndarray | None:
    if "tv_sec" in names and "tv_usec" in names:
        s, u = names.index("tv_sec"), names.index("tv_usec")
        return np.array([int(float(r[s])) * 1_000_000_000 + int(float(r[u])) * 1000 for r in rows], dtype=np.int64)
    if "rts" in names:  # gaps to the previous row; one that jumps backwards (out-of-order capture) is kept
        i = names.index("rts")
        us = np.cumsum(np.array([int(float(r[i])) for r in rows], dtype=np.int64))
        return (us - min(0, int(us.min(initial=0)))) * 1000  # times start at 0, or at the earliest packet
    return None


def write_nprint_csv(
    out: IO[bytes], trace: Trace, opts: CsvOptions | None = None, index: Iterable[str] | None = None, fill: int = -1
) -> None:
    """Write a trace as nPrint CSV; the index column comes from ``index``, ``trace.index`` or row numbers."""
    opts = opts or CsvOptions()
    out.write(header_line(trace.layout, opts))
    idx = list(index) if index is not None else (trace.index or [str(i) for i in range(len(trace))])
    ts = trace.ts_ns if trace.ts_ns is not None else np.zeros(len(trace), np.int64)
    write_rows(out, join_prefix(idx, timestamp_prefix(ts, opts)), trace.matrix, fill)
