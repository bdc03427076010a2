"""Grouped (segmented) numpy operations: the per-flow state of reconstruction without per-flow Python loops.

A :class:`Grouping` sorts packets by a group key with a *stable* sort, so packets of a group stay in time
order, and remembers where each group starts.  Every operation takes and returns arrays in the original packet
order: running sums and maxima within a group (TCP sequence offsets, high-water marks), suffix minima, the
first/last value of a group broadcast to its packets, and the most frequent value per group (ISN votes).
Running maxima use the offset trick: ``value + group_index * span`` turns a segmented scan into one
``np.maximum.accumulate``.
"""

from __future__ import annotations

import numpy as np


class Grouping:
    """Packets grouped by ``keys`` (any integer array); time order is the original order within a group."""

    def __init__(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys)
        self.keys = keys
        self._reverse: Grouping | None = None
        self.n = len(keys)
        self.order = np.argsort(keys, kind="stable")
        sk = keys[self.order]
        self.start = np.ones(self.n, bool)
        if self.n:
            self.start[1:] = sk[1:] != sk[:-1]
        self.gid_sorted = np.cumsum(self.start) - 1
        self.groups = int(self.gid_sorted[-1]) + 1 if self.n else 0
        self.gid = np.empty(self.n, np.int64)
        self.gid[self.order] = self.gid_sorted
        self.first_pos = np.flatnonzero(self.start)
        self.size = np.diff(np.append(self.first_pos, self.n))
        self.rank = np.empty(self.n, np.int64)
        self.rank[self.order] = np.arange(self.n) - self.first_pos[self.gid_sorted]

    def _unsort(self, sorted_values: np.ndarray) -> np.ndarray:
        out = np.empty_like(sorted_values)
        out[self.order] = sorted_values
        return out

    @property
    def is_first(self) -> np.ndarray:
        return self.rank == 0

    @property
    def is_last(self) -> np.ndarray:
        return self.rank == self.size[self.gid] - 1

    def cumsum(self, values: np.ndarray, exclusive: bool = True) -> np.ndarray:
        """Running sum within each group (exclusive: the sum of the earlier packets)."""
        s = np.asarray(values, np.int64)[self.order]
        c = np.cumsum(s)
        before = (c - s)[self.first_pos][self.gid_sorted]
        out = c - before - (s if exclusive else 0)
        return self._unsort(out)

    def cummax(self, values: np.ndarray, exclusive: bool = False, initial: int = 0) -> np.ndarray:
        """Running maximum within each group (exclusive: of the earlier packets, ``initial`` for the first)."""
        v = np.asarray(values, np.int64)
        if self.n == 0:
            return v.copy()
        lo = min(int(v.min()), initial)
        span = int(v.max()) - lo + 2
        if span * (self.groups + 1) >= 1 << 62:
            raise OverflowError("values too large for a grouped running maximum")
        s = v[self.order] - lo + 1 + self.gid_sorted * span
        m = np.maximum.accumulate(s)
        if exclusive:
            m = np.concatenate([[0], m[:-1]])
            m = np.where(self.start, initial - lo + 1 + self.gid_sorted * span, m)
        return self._unsort(m - self.gid_sorted * span + lo - 1)

    def suffix_min(self, values: np.ndarray) -> np.ndarray:
        """Minimum of the packet's own value and every later value in its group."""
        if self._reverse is None:
            self._reverse = Grouping(self.keys[::-1])
        return -self._reverse.cummax(-np.asarray(values, np.int64)[::-1])[::-1]

    def previous(self, values: np.ndarray, fill: int = -1) -> np.ndarray:
        """The value of the previous packet in the same group (``fill`` for a group's first packet)."""
        s = np.asarray(values)[self.order]
        prev = np.concatenate([np.full(1, fill, s.dtype), s[:-1]]) if self.n else s.copy()
        prev[self.start] = fill
        return self._unsort(prev)

    def first(self, values: np.ndarray) -> np.ndarray:
        """The value of each group's first packet, broadcast to every packet of the group."""
        v = np.asarray(values)
        return v[self.order[self.first_pos]][self.gid]

    def last(self, values: np.ndarray) -> np.ndarray:
        """The value of each group's last packet, broadcast to every packet of the group."""
        v = np.asarray(values)
        last_pos = self.first_pos + self.size - 1
        return v[self.order[last_pos]][self.gid]

    def any(self, mask: np.ndarray) -> np.ndarray:
        """Per packet: does any packet of its group have ``mask`` set."""
        counts = np.bincount(self.gid, weights=np.asarray(mask, np.float64), minlength=self.groups)
        return counts[self.gid] > 0

    def mode(self, values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Most frequent valid value per group, broadcast; ties go to the value seen first.

        Groups without a valid packet get the value of their first packet.
        """
        v = np.asarray(values, np.int64)
        ok = np.ones(self.n, bool) if valid is None else np.asarray(valid, bool)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return self.first(v)
        g, val, t = self.gid[idx], v[idx], idx
        o = np.lexsort((t, val, g))
        g, val, t = g[o], val[o], t[o]
        run = np.ones(len(o), bool)
        run[1:] = (g[1:] != g[:-1]) | (val[1:] != val[:-1])
        starts = np.flatnonzero(run)
        counts = np.diff(np.append(starts, len(o)))
        rg, rv, rt = g[starts], val[starts], t[starts]
        best = np.lexsort((rt, -counts, rg))  # per group: highest count, then earliest
        keep = np.ones(len(best), bool)
        keep[1:] = rg[best][1:] != rg[best][:-1]
        chosen = best[keep]
        per_group = v[self.order[self.first_pos]].copy()
        per_group[rg[chosen]] = rv[chosen]
        return per_group[self.gid]
