"""The trace builder for a trace store (``segment_capture(packed=True, batched=True)``) with its open traces in
arrays: per batch, what :class:`~netdiff_lib.segment.builder._Builder` does run by run in Python (continue or start
a trace, close the one an idle gap ends, note where traces fill up or end) is done on the arrays of
:class:`~netdiff_lib.segment.runs.Runs` at once; rows wait in a :class:`~netdiff_lib.segment.pool.RowPool`, and a
batch's finished traces come out as one :class:`~netdiff_lib.store.codec.PackedTraces`. Python runs once per
trace key of a batch (a dictionary look-up) and once per trace emitted (its description), not per run.

The traces, their order and the counts are those of the per-run builder (``tests/test_segment_fast.py``).
"""

from __future__ import annotations

import numpy as np

from netdiff_lib.nprint.encode import EncodedBatch
from netdiff_lib.segment.builder import _Builder
from netdiff_lib.segment.place import Placements
from netdiff_lib.segment.pool import RowPool
from netdiff_lib.segment.runs import Runs
from netdiff_lib.store.codec import PackedTraces, block_counts

_INT_FIELDS = ("last", "first", "win", "seq", "n", "uid")
_BOOL_FIELDS = ("full", "owned", "alive")


class _State:
    """Per open trace (a slot), in arrays: last and first packet time, window, creation order, packets so far, pool
    number, whether it is full, this builder's own, in use; and its key (segment, label)."""

    def __init__(self, size: int = 1024) -> None:
        for name in _INT_FIELDS:
            setattr(self, name, np.zeros(size, np.int64))
        for name in _BOOL_FIELDS:
            setattr(self, name, np.zeros(size, bool))
        self.keys: list[tuple | None] = [None] * size
        self.free = list(range(size - 1, -1, -1))
        self.count = 0  # traces numbered so far

    def take(self, k: int) -> np.ndarray:
        if k > len(self.free):
            size = len(self.alive)
            grow = max(size, k - len(self.free))
            for name in _INT_FIELDS + _BOOL_FIELDS:
                old = getattr(self, name)
                setattr(self, name, np.concatenate((old, np.zeros(grow, old.dtype))))
            self.keys += [None] * grow
            self.free = list(range(size + grow - 1, size - 1, -1)) + self.free
        out = self.free[len(self.free) - k:]
        del self.free[len(self.free) - k:]
        return np.array(out, np.int64)

    def release(self, slots: np.ndarray) -> None:
        self.alive[slots] = False
        self.free += slots.tolist()


class ArrayBuilder(_Builder):
    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, packed=True, **kw)
        self.pool = RowPool(len(self.plan.sizes), self.plan.count_dtype)  # the open traces' rows
        self.uids = 0  # pool numbers given so far
        self.state = _State()
        self.open: dict[tuple, int] = {}  # key (segment, label) -> slot
        self.pending: dict[int, tuple] = {}  # pool number -> key, of this builder's own traces not yet emitted

    def owned_open(self) -> bool:
        st = self.state
        return bool((st.alive & st.owned & ~st.full).any())

    def one_full(self) -> bool:
        return bool(self.open) and bool(self.state.full[next(iter(self.open.values()))])

    def add_batch(self, enc: EncodedBatch, ts: np.ndarray) -> None:
        n = len(ts)
        if not n:
            return
        pl, codes, names, runs = self._prepare(enc, ts)
        st = self.state
        gkeys = [(pl.segs[s], names[c]) for s, c in zip(runs.g_seg, runs.g_code, strict=True)]
        get = self.open.get
        gslot = np.array([get(k, -1) for k in gkeys], np.int64)
        has = gslot >= 0
        gs = np.where(has, gslot, 0)
        runs.split_and_cut(has, np.where(has, st.last[gs], 0), np.where(has, st.n[gs], 0))
        events = self._runs_at_once(runs, pl, gkeys, gslot) if len(gkeys) else []
        if self.windowed:
            alive = np.flatnonzero(st.alive)
            at = np.searchsorted(pl.reach, st.win[alive], "right")
            shut = at < len(pl.reach)
            events.append(self._shut(alive[shut], at[shut]))
            self.closed_window = int(pl.reach[-1]) - 1
        if self.idle:
            alive = np.flatnonzero(st.alive)
            shut = alive[int(ts[-1]) - st.last[alive] > self.spec.timeout_ns]
            events.append(self._shut(shut, np.full(len(shut), n, np.int64)))
        owned, uid = getattr(runs, "owned", np.zeros(0, bool)), getattr(runs, "uid", np.zeros(0, np.int64))
        self._count(pl, codes, runs, n, owned[runs.rid] if len(owned) else np.zeros(0, bool))
        self._pool_batch(enc, runs, np.where(owned, uid, -1))
        self._emit_events(events)

    def _runs_at_once(self, runs: Runs, pl: Placements, gkeys: list[tuple], gslot: np.ndarray) -> list:
        """:meth:`_Builder._runs` on arrays: the events ``(k1, k2, k3, uid, emit)`` of the runs' traces; per run
        its trace's pool number and owner go to ``runs.uid`` / ``runs.owned``."""
        st, mx = self.state, self.max
        rg, start, cont, gfirst, _, _, emit_at, end_at, n_end, last = runs.cols
        pk, s = runs.pk, runs.s.astype(np.int64)
        old = gslot[rg]
        oi = np.where(old >= 0, old, 0)
        was_full = cont & st.full[oi]
        new = ~cont
        k = int(new.sum())
        uid = np.where(cont, st.uid[oi], 0)
        uid[new] = self.uids + np.arange(k)
        self.uids += k
        owned = np.where(cont, st.owned[oi], self.owning)
        last = np.where(cont, np.maximum(last, st.last[oi]), last)
        n_now = n_end if mx is None else np.minimum(n_end, mx)
        full = n_end >= mx if mx is not None else np.zeros(len(rg), bool)
        fresh = np.flatnonzero(new)  # number new traces in the order the packets that started them came
        st_seq = np.zeros(len(rg), np.int64)
        st_seq[fresh[np.argsort(2 * pk[start[fresh]] + s[start[fresh]], kind="stable")]] = st.count + np.arange(k)
        st.count += k
        if self.owning:
            mine = fresh[owned[fresh]]
            self.pending.update(zip(uid[mine].tolist(), [gkeys[g] for g in rg[mine].tolist()], strict=True))
        # events: the open trace timed out at a group's first packet; a trace filled up; a later run ended it
        gone = np.flatnonzero((old >= 0) & new & gfirst)
        a = start[gone]
        events = [(pk[a], 2 * s[a], np.zeros(len(a), np.int64), st.uid[old[gone]],
                   ~st.full[old[gone]] & st.owned[old[gone]])]
        e = np.flatnonzero(emit_at >= 0)
        events.append((pk[emit_at[e]], 2 * s[emit_at[e]] + 1, np.zeros(len(e), np.int64), uid[e], owned[e]))
        e = np.flatnonzero((end_at >= 0) & (emit_at < 0) & ~was_full)
        events.append((pk[end_at[e]], 2 * s[end_at[e]], np.zeros(len(e), np.int64), uid[e], owned[e]))
        # what stays open: each group's last run's trace; an old trace that did not continue through it ends
        is_last = np.ones(len(rg), bool)
        is_last[:-1] = rg[1:] != rg[:-1]
        st.release(np.unique(old[is_last & new & (old >= 0)]))
        keep = np.flatnonzero(is_last & cont)
        slot = old[keep]
        st.last[slot], st.n[slot], st.full[slot] = last[keep], n_now[keep], full[keep]
        made = np.flatnonzero(is_last & new)
        slot = st.take(len(made))
        win = pl.window[np.array(runs.g_seg, np.int64)[rg[made]]] if pl.window is not None else 0
        st.last[slot], st.first[slot], st.win[slot], st.seq[slot] = last[made], runs.t[start[made]], win, st_seq[made]
        st.n[slot], st.full[slot], st.uid[slot], st.owned[slot] = n_now[made], full[made], uid[made], owned[made]
        st.alive[slot] = True
        keys = [gkeys[g] for g in rg[made].tolist()]
        for i, key in zip(slot.tolist(), keys, strict=True):
            st.keys[i] = key
        self.open.update(zip(keys, slot.tolist(), strict=True))
        runs.uid, runs.owned = uid, owned
        return events

    def _pool_batch(self, enc: EncodedBatch, runs: Runs, run_uid: np.ndarray) -> None:
        """Put the batch's kept rows into the pool, each under its trace's number (-1: not this builder's own)."""
        sel = runs.kept
        kept = runs.pk[sel]
        fill = enc.raw_fill[kept]
        counts = block_counts(fill, self.plan, enc.raw_counts[kept] if enc.raw_counts is not None else None)
        uid = run_uid[runs.rid[sel]] if len(run_uid) else np.zeros(0, np.int64)
        self.pool.add(uid, enc.raw[kept], fill, counts, runs.t[sel])

    def _shut(self, slots: np.ndarray, at: np.ndarray) -> tuple:
        """Close the traces of ``slots`` (at packet ``at``): their events, emitted unless full."""
        st = self.state
        for i in slots.tolist():
            del self.open[st.keys[i]]
        st.release(slots)
        return at, np.zeros(len(at), np.int64), st.seq[slots], st.uid[slots], ~st.full[slots] & st.owned[slots]

    def _emit_events(self, events: list) -> None:
        k1, k2, k3, uid, emit = (np.concatenate(c) for c in zip(*events, strict=True)) if events else \
            (np.zeros(0, np.int64),) * 5
        order = np.lexsort((k3, k2, k1))
        self._emit_uids(uid[order][emit[order].astype(bool)].tolist())

    def _emit_uids(self, uids: list[int]) -> None:
        if not uids:
            return
        keys = [self.pending.pop(u) for u in uids]
        got = self.pool.take(uids)
        labels = [k[1] for k in keys]
        self.stats.traces.update(labels)
        self.done.append(PackedTraces(got.counts, got.data, got.ts, got.lengths, labels, self.source,
                                      self._metas([k[0] for k in keys]), self.layout))

    def finish(self) -> None:
        st = self.state
        alive = np.flatnonzero(st.alive)
        alive = alive[np.lexsort((st.seq[alive], st.first[alive]))]
        at = np.zeros(len(alive), np.int64)
        _, _, _, uid, emit = self._shut(alive, at)
        self._emit_uids(uid[emit].tolist())
