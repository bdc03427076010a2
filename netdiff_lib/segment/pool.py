"""The rows of a builder's open traces for a trace store, held per batch as they came rather than per trace.

Each batch adds its kept rows (header bytes, fill mask, block byte counts, times) with the number (*uid*) of the
trace each belongs to; emitting traces gathers their rows from every batch still held, trace by trace in the order
asked for, each trace's rows in the order they came, with one stable sort: no Python step per trace or per row.
A batch is let go once all its rows have been emitted, and compacted once three quarters of them have, so a
long-lived trace keeps only its own rows alive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Chunk:
    uid: np.ndarray  # the trace of each row (-1: emitted)
    raw: np.ndarray  # (rows, nbytes) header bytes
    fill: np.ndarray  # (rows, nbytes) True where a byte is not on the wire
    counts: np.ndarray  # (rows, blocks) bytes on the wire per block
    ts: np.ndarray
    live: int

    def keep(self, rows: np.ndarray) -> _Chunk:
        return _Chunk(self.uid[rows], self.raw[rows], self.fill[rows], self.counts[rows], self.ts[rows], len(rows))


@dataclass
class Gathered:
    """Emitted traces' rows, trace after trace: per row its block byte counts, time, and the bytes on the wire of
    all rows back to back; ``lengths`` the rows of each trace."""

    counts: np.ndarray
    data: np.ndarray
    ts: np.ndarray
    lengths: np.ndarray


class RowPool:
    def __init__(self, blocks: int, count_dtype: np.dtype) -> None:
        self.empty = np.zeros((0, blocks), count_dtype)
        self.chunks: list[_Chunk] = []
        self.rank = np.full(1, -1, np.int64)  # per uid, its place among the traces being emitted; [-1] stays -1

    def add(self, uid: np.ndarray, raw: np.ndarray, fill: np.ndarray, counts: np.ndarray, ts: np.ndarray) -> None:
        """Hold a batch's rows; rows with ``uid`` -1 (no trace of this builder's own) are left out."""
        chunk = _Chunk(uid, raw, fill, counts, ts, len(uid))
        mine = np.flatnonzero(uid >= 0)
        if len(mine) < len(uid):
            chunk = chunk.keep(mine)
        if chunk.live:
            self.chunks.append(chunk)
        self._room(int(uid.max()) if len(uid) else -1)

    def _room(self, uid: int) -> None:
        if uid + 2 > len(self.rank):
            self.rank = np.full(max(uid + 2, 2 * len(self.rank)), -1, np.int64)

    def take(self, uids: list[int]) -> Gathered:
        """The rows of traces ``uids`` (each at most once), which leave the pool."""
        self._room(max(uids, default=-1))
        rank = self.rank
        rank[uids] = np.arange(len(uids))
        parts, held = [], []
        for c in self.chunks:
            r = rank[c.uid]
            sel = np.flatnonzero(r >= 0)
            if len(sel):
                parts.append((r[sel], c.raw[sel], c.fill[sel], c.counts[sel], c.ts[sel]))
                c.uid[sel] = -1
                c.live -= len(sel)
            if c.live:
                held.append(c.keep(np.flatnonzero(c.uid >= 0)) if 4 * c.live < len(c.uid) else c)
        rank[uids] = -1
        self.chunks = held
        if not parts:
            return Gathered(self.empty, np.zeros(0, np.uint8), np.zeros(0, np.int64),
                            np.zeros(len(uids), np.int64))
        r, raw, fill, counts, ts = (np.concatenate(c) if len(parts) > 1 else c[0] for c in zip(*parts, strict=True))
        order = np.argsort(r, kind="stable")
        raw, fill = raw[order], fill[order]
        return Gathered(counts[order], raw[~fill], ts[order], np.bincount(r, minlength=len(uids)))
