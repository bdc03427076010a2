"""Packet rows <-> their header bytes: the compact encoding of an nPrint matrix (vectorised, no per-row loop).

In an nPrint row each header block of the layout (and the payload) holds, as bits, a *prefix* of its bytes that
are on the wire; the rest of the block is ``-1`` (an absent protocol, IPv4/TCP options beyond IHL/data offset, a
snaplen cut).  Such a row is stored as the present bytes themselves plus one byte count per block: a TCP/IPv4
packet in the NetDiffusion layout takes ~40 bytes instead of 1,088.  A row that does not follow this pattern (a
generated matrix with a ``-1`` inside a header, a byte half present) is stored whole as two bit planes (values and
presence, ``np.packbits``), so every matrix of ``{-1, 0, 1}`` round-trips bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from netdiff_lib.nprint.encode import _bit_table
from netdiff_lib.schema import Layout


@dataclass(frozen=True)
class RowPlan:
    """Where the byte-prefix blocks of a layout sit: ``starts[i]``/``sizes[i]`` in bytes of the row."""

    layout: Layout
    starts: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of a row's bit planes (``ceil(width / 8)``)."""
        return -(-self.layout.width // 8)

    @property
    def prefix(self) -> bool:
        """Whether rows can be stored as byte prefixes at all (every block whole bytes)."""
        return bool(self.sizes)

    @cached_property
    def count_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if max(self.sizes, default=0) < 256 else np.uint16)

    @cached_property
    def block_of_byte(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.sizes)), self.sizes)

    @cached_property
    def pos_in_block(self) -> np.ndarray:
        return np.concatenate([np.arange(s) for s in self.sizes]) if self.sizes else np.zeros(0, np.int64)

    @cached_property
    def inner(self) -> np.ndarray:
        """Byte positions that do not start a block (a present byte there must follow a present byte)."""
        keep = np.ones(self.nbytes, bool)
        keep[list(self.starts)] = False
        return np.flatnonzero(keep[1:]) + 1


@lru_cache(maxsize=32)
def row_plan(layout: Layout) -> RowPlan:
    """The plan of ``layout``: one block per header block and one for the payload (no prefix when a block is not
    whole bytes, which the layouts netdiff makes never are)."""
    names = [*layout.blocks, *(["payload"] if layout.payload_bytes else [])]
    spans = [layout.span("payload") if n == "payload" else layout.block_span(n) for n in names]
    if any(s.start % 8 or s.bits % 8 for s in spans) or layout.width % 8:
        return RowPlan(layout, (), ())
    return RowPlan(layout, tuple(s.start // 8 for s in spans), tuple(s.bits // 8 for s in spans))


@dataclass
class PackedRows:
    """Rows in the compact encoding: per row its block byte ``counts`` (``(rows, blocks)``; zeros for a fallback
    row), the present bytes of all rows back to back (``data``), and the fallback rows (indices, value and
    presence planes, ``(k, nbytes)`` uint8 each)."""

    counts: np.ndarray
    data: np.ndarray
    fb_rows: np.ndarray
    fb_values: np.ndarray
    fb_present: np.ndarray


def check_values(matrix: np.ndarray) -> None:
    """Refuse a matrix with a value other than -1, 0 or 1 (which no bit plane can hold)."""
    if matrix.size and (int(matrix.min()) < -1 or int(matrix.max()) > 1):
        raise ValueError(f"nPrint rows hold -1, 0 or 1, not {int(matrix.min())}..{int(matrix.max())}")


def pack_rows(matrix: np.ndarray, plan: RowPlan, check: bool = True) -> PackedRows:
    """Encode ``matrix`` (``(rows, width)`` int8 in {-1, 0, 1}; ``check=False`` when the caller checked that)."""
    matrix = np.ascontiguousarray(matrix, np.int8)
    if check:
        check_values(matrix)
    n, nblocks = len(matrix), len(plan.sizes)
    values = np.packbits(matrix > 0, axis=1)
    present = np.packbits(matrix >= 0, axis=1)
    if not plan.prefix:
        return PackedRows(np.zeros((n, 0), np.uint8), np.zeros(0, np.uint8), np.arange(n, dtype=np.int64),
                          values, present)
    full = present == 255
    ok = (full | (present == 0)).all(axis=1)
    if len(plan.inner):  # no present byte after an absent one inside a block
        ok &= ~(full[:, plan.inner] & ~full[:, plan.inner - 1]).any(axis=1)
    full &= ok[:, None]
    counts = np.add.reduceat(full, list(plan.starts), axis=1, dtype=np.int64) if nblocks else np.zeros((n, 0))
    fb = np.flatnonzero(~ok)
    return PackedRows(counts.astype(plan.count_dtype), values[full], fb.astype(np.int64), values[fb], present[fb])


def byte_offsets(counts: np.ndarray) -> np.ndarray:
    """``(rows + 1,)`` int64 offsets of each row's bytes in :attr:`PackedRows.data`."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts.sum(axis=1, dtype=np.int64), out=out[1:])
    return out


def unpack_rows(plan: RowPlan, counts: np.ndarray, data: np.ndarray, fb_rows: np.ndarray, fb_values: np.ndarray,
                fb_present: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The int8 matrix of packed rows (``data`` holds exactly these rows' bytes; ``fb_rows`` index these rows)."""
    n, width = len(counts), plan.layout.width
    if out is None:
        out = np.empty((n, width), np.int8)
    if not n:
        return out
    if plan.prefix:
        full = plan.pos_in_block[None, :] < counts[:, plan.block_of_byte]
        idx = np.full((n, plan.nbytes), 256, np.uint16)  # 256 + byte: all fill
        idx[full] = data
        np.take(_bit_table(-1), idx, out=out.view(np.uint64), mode="wrap")
    if len(fb_rows):
        bits = np.unpackbits(fb_values, axis=1, count=width).view(np.int8)
        bits[np.unpackbits(fb_present, axis=1, count=width) == 0] = -1
        out[fb_rows] = bits
    return out


def pack_header_bytes(raw: np.ndarray, fill: np.ndarray, plan: RowPlan,
                      counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's header bytes (``(rows, nbytes)`` uint8, ``fill`` True where a byte is not on the wire, every
    block's bytes on the wire a prefix of it) as :func:`pack_rows` would pack their bit rows: per row its block
    byte counts (``counts`` when the encoder has them), and the bytes on the wire back to back.  No bit is
    expanded."""
    if raw.shape[1] != plan.nbytes or not plan.prefix:
        raise ValueError(f"header bytes of {raw.shape[1]} per row do not fit the layout's {plan.nbytes}")
    return block_counts(fill, plan, counts), raw[~fill]


def block_counts(fill: np.ndarray, plan: RowPlan, counts: np.ndarray | None = None) -> np.ndarray:
    """Per row of header bytes (``fill`` as for :func:`pack_header_bytes`), its bytes on the wire per block
    (``counts`` when the encoder has them), in the plan's count type."""
    if counts is None:
        counts = np.add.reduceat(~fill, list(plan.starts), axis=1, dtype=np.int64) if len(fill) else \
            np.zeros((0, len(plan.sizes)), np.int64)
    return counts.astype(plan.count_dtype)


class PackedTrace:
    """A trace held as packed rows (:func:`pack_header_bytes`' counts and bytes), as the trace builders give it to a
    trace store: the store writes the bytes as they are; :attr:`matrix` (expanded on first use) serves the rest."""

    def __init__(self, counts: np.ndarray, data: np.ndarray, layout: Layout, ts_ns: np.ndarray | None,
                 label: str | None, source: str | None, index: list[str] | None, meta: dict) -> None:
        self.counts, self.data, self.layout, self.ts_ns = counts, data, layout, ts_ns
        self.label, self.source, self.index, self.meta = label, source, index, meta

    def __len__(self) -> int:
        return len(self.counts)

    @cached_property
    def matrix(self) -> np.ndarray:
        none = np.zeros(0, np.int64)
        empty = np.zeros((0, row_plan(self.layout).nbytes), np.uint8)
        return unpack_rows(row_plan(self.layout), self.counts, self.data, none, empty, empty)


class PackedTraces:
    """Several traces in a row held as columns: their rows' block byte counts and bytes on the wire back to back,
    times, each trace's row count, label and meta, one source.  The trace builders hand a trace store a batch's
    finished traces so (:meth:`~netdiff_lib.store.writer.StoreWriter.add`), with no object per trace."""

    def __init__(self, counts: np.ndarray, data: np.ndarray, ts_ns: np.ndarray, lengths: np.ndarray,
                 labels: list[str], source: str | None, metas: list[dict], layout: Layout) -> None:
        self.counts, self.data, self.ts_ns, self.lengths = counts, data, ts_ns, np.asarray(lengths, np.int64)
        self.labels, self.source, self.metas, self.layout = labels, source, metas, layout

    def __len__(self) -> int:
        return len(self.lengths)

    @cached_property
    def row_starts(self) -> np.ndarray:
        """``(traces + 1,)`` each trace's first row."""
        out = np.zeros(len(self.lengths) + 1, np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    @cached_property
    def byte_starts(self) -> np.ndarray:
        """``(traces + 1,)`` where each trace's bytes start in :attr:`data`."""
        return byte_offsets(self.counts)[self.row_starts]

    def part(self, i: int, j: int) -> PackedTraces:
        """Traces ``i`` to ``j - 1`` (views)."""
        a, b, x, y = self.row_starts[i], self.row_starts[j], self.byte_starts[i], self.byte_starts[j]
        return PackedTraces(self.counts[a:b], self.data[x:y], self.ts_ns[a:b], self.lengths[i:j], self.labels[i:j],
                            self.source, self.metas[i:j], self.layout)

    def traces(self) -> list[PackedTrace]:
        """One :class:`PackedTrace` each."""
        r, b = self.row_starts.tolist(), self.byte_starts.tolist()
        return [PackedTrace(self.counts[r[k]:r[k + 1]], self.data[b[k]:b[k + 1]], self.layout,
                            self.ts_ns[r[k]:r[k + 1]], self.labels[k], self.source, None, self.metas[k])
                for k in range(len(self))]
