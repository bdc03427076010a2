"""The placements of a batch grouped by trace key (segment, label) and cut into *runs*, on arrays.

A run is the placements of one trace within the batch: a group's first run may continue the trace already open
for its key, and an idle gap (a packet more than the timeout after the latest earlier packet of its group, the
open trace's last one included) starts a new run. Positions within a trace give what ``max_packets`` keeps and
the placement at which the trace fills up.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from netdiff_lib.segment.place import Placements


class Runs:
    def __init__(self, pl: Placements, codes: np.ndarray, n_names: int, ts: np.ndarray, max_packets: int | None,
                 timeout_ns: int | None) -> None:
        has = np.flatnonzero(codes >= 0)
        uniq, ginv = np.unique(pl.seg[has].astype(np.int64) * n_names + codes[has], return_inverse=True)
        order = np.argsort(ginv.ravel(), kind="stable")
        self.sel = sel = has[order]  # the placement (index into ``pl``) of each
        self.g = ginv.ravel()[order]  # the group of each placement, placements sorted by group then packet
        self.pk, self.s = pl.pk[sel], pl.s[sel]
        self.t = ts[self.pk]
        self.g_seg, self.g_code = (uniq // n_names).tolist(), (uniq % n_names).tolist()
        self.max, self.timeout = max_packets, timeout_ns
        self.kept = np.zeros(len(sel), bool)
        self.rid = np.zeros(len(sel), np.int64)  # the run of each placement
        self.cols: tuple[np.ndarray, ...] = tuple(np.zeros(0, np.int64) for _ in range(10))

    def _splits(self, first: np.ndarray, has_st: np.ndarray, st_last: np.ndarray) -> np.ndarray:
        """Where an idle gap starts a new trace: the time since the latest earlier packet of the group (the open
        trace's last included) is over the timeout."""
        g, t = self.g, self.t
        if self.timeout is None or not len(t):
            return np.zeros(len(t), bool)
        uq, rank = np.unique(t, return_inverse=True)
        top = len(uq)
        latest = uq[np.maximum.accumulate(g * top + rank.ravel()) - g * top]  # running max within each group
        before = np.concatenate(([0], latest[:-1]))
        stl = st_last[g]
        before = np.where(first, stl, np.maximum(before, np.where(has_st[g], stl, before)))
        has_prev = ~first | has_st[g]
        return has_prev & (t - np.where(has_prev, before, t) > self.timeout)

    def split_and_cut(self, has_state: list[bool], st_last: np.ndarray, st_n: np.ndarray) -> None:
        """Cut the groups into runs given each group's open trace (whether there is one, its last packet time and
        its packets so far)."""
        g, m = self.g, len(self.g)
        if not m:
            return
        has_st = np.array(has_state, bool)
        first = np.ones(m, bool)
        first[1:] = g[1:] != g[:-1]
        split = self._splits(first, has_st, st_last)
        boundary = first | split
        start = np.flatnonzero(boundary)
        self.rid = rid = np.cumsum(boundary) - 1
        rg = g[start]
        cont = first[start] & ~split[start] & has_st[rg]
        base = np.where(cont, st_n[rg], 0)
        length = np.diff(np.append(start, m))
        pos = np.arange(m) - start[rid] + base[rid]
        emit_at = np.full(len(start), -1, np.int64)
        if self.max is not None:
            self.kept = pos < self.max
            filled = np.flatnonzero(pos == self.max - 1)
            emit_at[rid[filled]] = filled
        else:
            self.kept = np.ones(m, bool)
        kend = np.cumsum(np.add.reduceat(self.kept.astype(np.int64), start))
        kstart = np.concatenate(([0], kend[:-1]))
        end_at = np.full(len(start), -1, np.int64)
        same = rg[1:] == rg[:-1]
        end_at[:-1][same] = start[1:][same]
        last = np.maximum.reduceat(self.t, start)
        self.cols = (rg, start, cont, first[start], kstart, kend, emit_at, end_at, base + length, last)

    def table(self) -> Iterator[tuple]:
        """Per run: group, first placement, whether it continues the open trace, whether it is the group's first
        run, its kept rows (a range of the batch's kept rows, in this order), the placement at which the trace
        fills up (-1: none), the placement that starts the group's next run (-1: none), the trace's packets at the
        run's end (kept or not), its latest time (:attr:`cols`: the same as arrays)."""
        return zip(*(c.tolist() for c in self.cols), strict=True)
