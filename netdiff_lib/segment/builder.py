"""The streaming pass of :mod:`netdiff_lib.segment`: batches of encoded packets in, finished traces out.

Each batch is handled on arrays (no Python step per packet): the packets' segments and labels
(:mod:`netdiff_lib.segment.place`) are grouped by trace key with one sort; within a group, an idle gap (a packet more
than the timeout after the latest earlier one) starts a new trace; positions within a trace cut it at
``max_packets``; a window ends at the first packet of a later window. Python runs once per trace piece of the batch.

Per open trace the state holds its rows so far (copied out of each batch, so no batch stays in memory; for a trace
store, ``packed=True``, the rows' header bytes and block byte counts instead of int8 rows), its times,
and in arrays indexed by slot its last packet's time, first time, window and creation order. A flow or host trace
ends when a packet comes more than the idle timeout after its previous one, or after a batch whose last packet is
more than the timeout after it; a full trace stays as a marker without rows, so that its later packets are counted,
until it ends. At the end of the capture every open trace ends. Traces come out in the order the per-packet builder
gave them (tests/segment_reference.py), which the differential tests check. For a trace store, a batch at a time,
:mod:`netdiff_lib.segment.columnar` follows the runs on arrays instead (:mod:`netdiff_lib.segment.capture` picks).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from netdiff_lib.labels.base import LabelIndex, addr_text
from netdiff_lib.nprint.encode import EncodedBatch
from netdiff_lib.schema import Layout
from netdiff_lib.segment.keys import LocalNets, batch_keys
from netdiff_lib.segment.place import Placements, label_codes, place
from netdiff_lib.segment.runs import Runs
from netdiff_lib.segment.spec import BEYOND, LATE, NO_LOCAL, UNLABELLED_DROPPED, SegmentStats, TraceSpec
from netdiff_lib.store.codec import PackedTrace, byte_offsets, pack_header_bytes, row_plan
from netdiff_lib.trace import Trace

_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}


class _Open:
    """One trace being built (a plain class with slots: one is made per trace)."""

    __slots__ = ("cur", "data", "first_ns", "full", "index", "key", "n", "owned", "rows", "slot", "ts")

    def __init__(self, key: tuple, slot: int, first_ns: int) -> None:
        self.key, self.slot, self.first_ns = key, slot, first_ns  # key: (segment, label)
        self.rows: list[np.ndarray] = []  # matrix rows, or a trace store's packed counts
        self.data: list[np.ndarray] = []  # the packed rows' header bytes (packed only)
        self.ts: list[np.ndarray] = []
        self.index: list[str] = []  # nPrint -O values of the rows, when asked for
        self.n, self.full = 0, False
        self.owned = True  # emitted when it ends (a trace that starts before a pod's byte range is not its own)
        self.cur: tuple[int, int] | None = None  # its rows of the current batch: a range of the batch's kept rows


class _Slots:
    """Per open trace, in arrays: last packet time, first time, window, creation order."""

    def __init__(self) -> None:
        self.last, self.first, self.win, self.seq = (np.zeros(64, np.int64) for _ in range(4))
        self.alive = np.zeros(64, bool)
        self.states: list[_Open | None] = [None] * 64
        self.free = list(range(63, -1, -1))
        self.count = 0

    def take(self, st_first: int, win: int, key: tuple) -> _Open:
        if not self.free:
            size = len(self.alive)
            for name in ("last", "first", "win", "seq", "alive"):
                setattr(self, name, np.concatenate((getattr(self, name), np.zeros_like(getattr(self, name)))))
            self.states += [None] * size
            self.free = list(range(2 * size - 1, size - 1, -1))
        slot = self.free.pop()
        st = _Open(key, slot, st_first)
        self.states[slot], self.alive[slot] = st, True
        self.first[slot], self.win[slot], self.last[slot] = st_first, win, st_first
        return st

    def number(self, created: list[tuple[int, _Open]]) -> None:
        """Number new traces in the order the packets that started them came (``(order, trace)`` pairs)."""
        for _, st in sorted(created, key=lambda c: c[0]):
            self.seq[st.slot] = self.count
            self.count += 1

    def drop(self, st: _Open) -> None:
        self.alive[st.slot], self.states[st.slot] = False, None
        self.free.append(st.slot)

    def alive_slots(self) -> np.ndarray:
        return np.flatnonzero(self.alive)


class _Builder:
    def __init__(self, spec: TraceSpec, layout: Layout, max_packets: int | None, source: str,
                 labels: LabelIndex | None, label: str | None, unlabelled: str, index: int | None = None,
                 packed: bool = False) -> None:
        self.spec, self.layout, self.max, self.source, self.index = spec, layout, max_packets, source, index
        self._empty = (0, layout.width)
        self.plan = row_plan(layout) if packed else None  # packed: traces as a store's rows, not matrices
        self.labels, self.label, self.unlabelled = labels, label, unlabelled
        self.local = LocalNets(spec.local_nets)
        self.open: dict[tuple, _Open] = {}
        self.slots = _Slots()
        self.stats = SegmentStats()
        self.t0: int | None = None
        self.closed_window = -1  # windows up to this index have ended
        self.done: list[Trace] = []
        self.idle = spec.mode in ("flow", "host")
        self.windowed = "window" in spec.mode
        self.owning = True  # traces started now are this builder's own (see netdiff_lib.segment.split)
        self.counting = True  # packets handled now are counted in the stats

    def owned_open(self) -> bool:
        """Whether a trace of its own is still open and not yet full (emitted)."""
        return any(st.owned and not st.full for st in self.open.values())

    def one_full(self) -> bool:
        """Whether the first open trace is full (``--traces file``: the one trace)."""
        return bool(self.open) and next(iter(self.open.values())).full

    def _prepare(self, enc: EncodedBatch, ts: np.ndarray) -> tuple[Placements, np.ndarray, list[str], Runs]:
        """A batch's placements, their labels (codes into the names) and their runs (not yet split or cut)."""
        if self.t0 is None:
            self.t0 = int(ts[0])
        need_keys = self.spec.mode not in ("file", "window") or self.labels is not None
        keys = batch_keys(enc, self.local) if need_keys else None
        pl = place(self.spec.mode, keys, ts, self.t0, self.spec.window_ns, self.closed_window)
        codes, names = label_codes(pl, keys, ts, self.labels, self.label, self.unlabelled)
        self._drop(LATE, pl.late)
        self._drop(NO_LOCAL, pl.no_local)
        return pl, codes, names, Runs(pl, codes, len(names), ts, self.max, self.spec.timeout_ns if self.idle else None)

    def add_batch(self, enc: EncodedBatch, ts: np.ndarray) -> None:
        n = len(ts)
        if not n:
            return
        pl, codes, names, runs = self._prepare(enc, ts)
        states = [self.open.get((pl.segs[s], names[c])) for s, c in zip(runs.g_seg, runs.g_code, strict=True)]
        st_last = np.array([self.slots.last[st.slot] if st else 0 for st in states], np.int64)
        st_n = np.array([st.n if st else 0 for st in states], np.int64)
        runs.split_and_cut([st is not None for st in states], st_last, st_n)
        events, touched, owned = self._runs(runs, pl, names, states)
        if self.windowed:
            events += self._close_windows(pl.reach)
            self.closed_window = int(pl.reach[-1]) - 1
        if self.idle:
            now, slots = int(ts[-1]), self.slots.alive_slots()
            for i in slots[now - self.slots.last[slots] > self.spec.timeout_ns].tolist():
                st = self.slots.states[i]
                self._close(st)
                if not st.full:
                    events.append(((n, 0, int(self.slots.seq[i])), st))
        self._count(pl, codes, runs, n, np.array(owned, bool)[runs.rid] if owned else np.zeros(0, bool))
        self._emit_events(events, touched, enc, runs)

    def _runs(self, runs: Runs, pl: Placements, names: list[str],
              states: list[_Open | None]) -> tuple[list, list[_Open], list[bool]]:
        """Follow every run of the batch: continue or start its trace, note where traces end or fill up."""
        events, touched, created, owned = [], [], [], []
        pk, s = runs.pk.tolist(), runs.s.tolist()
        for g, start, cont, group_first, kept0, kept1, emit_at, end_at, n_end, last in runs.table():
            old = states[g]
            if old is not None and not cont and group_first:  # the open trace timed out at this packet
                self._close(old)
                if not old.full:
                    events.append(((pk[start], 2 * s[start], 0), old))
            was_full = cont and old.full
            if cont:
                st = old
                last = max(last, int(self.slots.last[st.slot]))
            else:
                key = (pl.segs[runs.g_seg[g]], names[runs.g_code[g]])
                win = pl.window[runs.g_seg[g]] if pl.window is not None else 0
                st = self.open[key] = self.slots.take(int(runs.t[start]), int(win), key)
                st.owned = self.owning
                created.append((2 * pk[start] + s[start], st))
            owned.append(st.owned)
            self.slots.last[st.slot] = last
            if kept1 > kept0 and st.owned:
                st.cur = (kept0, kept1)
                touched.append(st)
            st.n = n_end if self.max is None else min(n_end, self.max)
            st.full = self.max is not None and n_end >= self.max
            if emit_at >= 0:
                events.append(((pk[emit_at], 2 * s[emit_at] + 1, 0), st))
            if end_at >= 0:  # a later packet of the group timed it out
                self._close(st)
                if not (emit_at >= 0 or was_full):
                    events.append(((pk[end_at], 2 * s[end_at], 0), st))
        self.slots.number(created)
        return events, touched, owned

    def _close(self, st: _Open) -> None:
        if self.open.get(st.key) is st:
            del self.open[st.key]
        self.slots.drop(st)

    def _close_windows(self, reach: np.ndarray) -> list:
        slots = self.slots.alive_slots()
        at = np.searchsorted(reach, self.slots.win[slots], "right")
        events = []
        for i, p in zip(slots[at < len(reach)].tolist(), at[at < len(reach)].tolist(), strict=True):
            st = self.slots.states[i]
            self._close(st)
            if not st.full:
                events.append(((p, 0, int(self.slots.seq[i])), st))
        return events

    def _count(self, pl: Placements, codes: np.ndarray, runs: Runs, n: int, owned: np.ndarray) -> None:
        """Count the batch's packets in traces, beyond ``max_packets`` or unlabelled. Packets in a trace or beyond
        one count for the trace's owner (that of the packet's first kept placement, else of its last placement),
        so workers of one capture (:mod:`netdiff_lib.segment.split`) count each once; unlabelled ones for the
        worker whose range holds them."""
        placed, first_own = np.zeros(n, bool), np.zeros(n, bool)
        kept = np.flatnonzero(runs.kept)
        if len(kept):
            kept = kept[np.lexsort((runs.s[kept], runs.pk[kept]))]
            firsts = kept[np.r_[True, runs.pk[kept][1:] != runs.pk[kept][:-1]]]
            placed[runs.pk[firsts]], first_own[runs.pk[firsts]] = True, owned[firsts]
        with_seg, last_code, last_own = np.zeros(n, bool), np.full(n, -1, np.int64), np.zeros(n, bool)
        if len(pl.pk):
            with_seg[pl.pk] = True
            own_of = np.zeros(len(pl.pk), bool)
            own_of[runs.sel] = owned
            ends = np.flatnonzero(np.r_[pl.pk[1:] != pl.pk[:-1], True])
            last_code[pl.pk[ends]], last_own[pl.pk[ends]] = codes[ends], own_of[ends]
        missed = with_seg & ~placed
        self.stats.in_traces += int((placed & first_own).sum())
        self._drop(UNLABELLED_DROPPED, int((missed & (last_code < 0)).sum()))
        beyond = int((missed & (last_code >= 0) & last_own).sum())
        if beyond:
            self.stats.dropped[BEYOND] += beyond

    def _drop(self, reason: str, count: int) -> None:
        if count and self.counting:
            self.stats.dropped[reason] += count

    def _emit_events(self, events: list, touched: list[_Open], enc: EncodedBatch, runs: Runs) -> None:
        """Emit the traces that ended or filled up, in the order the per-packet builder did; keep copies of the
        batch's rows for the others."""
        kept = runs.pk[runs.kept]
        rows, times = self._rows(enc, kept), runs.t[runs.kept]
        values = None
        if self.index is not None:
            from netdiff_lib.nprint.index import index_values

            every = index_values(enc, self.index)
            values = [every[i] for i in kept.tolist()]
        for _, st in sorted(events, key=lambda e: e[0]):
            self._take(st, rows, times, values, copy=False)
            self._emit(st)
            st.rows, st.data, st.ts, st.index = [], [], [], []
        for st in touched:
            self._take(st, rows, times, values, copy=True)

    def _rows(self, enc: EncodedBatch, kept: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows of the kept placements: matrix rows, or packed (counts, header bytes, each row's byte offset)."""
        if self.plan is None:
            return enc.matrix[kept]
        counts = enc.raw_counts[kept] if enc.raw_counts is not None else None
        counts, data = pack_header_bytes(enc.raw[kept], enc.raw_fill[kept], self.plan, counts)
        return counts, data, byte_offsets(counts).tolist()

    @staticmethod
    def _take(st: _Open, rows: np.ndarray | tuple, times: np.ndarray, values: list[str] | None, copy: bool) -> None:
        if st.cur is not None:
            a, b = st.cur
            if type(rows) is tuple:
                counts, data, off = rows
                counts, data = counts[a:b], data[off[a] : off[b]]
                st.rows.append(counts.copy() if copy else counts)
                st.data.append(data.copy() if copy else data)
            else:
                st.rows.append(rows[a:b].copy() if copy else rows[a:b])
            st.ts.append(times[a:b].copy() if copy else times[a:b])
            if values is not None:
                st.index += values[a:b]
            st.cur = None

    def finish(self) -> None:
        slots = self.slots.alive_slots()
        for i in slots[np.lexsort((self.slots.seq[slots], self.slots.first[slots]))].tolist():
            st = self.slots.states[i]
            self._close(st)
            if not st.full:
                self._emit(st)

    def _metas(self, segs: list) -> list[dict]:
        """:meth:`_meta` of each segment (flows' descriptions written in one comprehension)."""
        if self.spec.mode != "flow":
            return [self._meta(seg) for seg in segs]
        ht, name = _host_text, _PROTO_NAMES.get
        texts = [f"{name(p) or f'proto {p}'} {ht(a)}:{pa} <-> {ht(b)}:{pb}" if p in (6, 17) else
                 f"{name(p) or f'proto {p}'} {ht(a)} <-> {ht(b)}" for p, a, pa, b, pb in segs]
        mode = self.spec.text
        if self.max is None:
            return [{"traces": mode, "trace": t} for t in texts]
        return [{"traces": mode, "trace": t, "max_packets": self.max} for t in texts]

    def _meta(self, seg: object) -> dict:
        meta = {"traces": self.spec.text, "trace": self._describe(seg)}
        if self.max is not None:
            meta["max_packets"] = self.max
        return meta

    def _emit(self, st: _Open) -> None:
        if not st.owned:
            return
        packed = self.plan is not None  # a packed batch is small (~60 bytes a row): a view of it may stay
        ts = _joined(st.ts, (0,), np.int64, own=not packed)
        seg, label = st.key
        meta = self._meta(seg)
        index = st.index if self.index is not None else None
        if packed:
            counts = _joined(st.rows, (0, len(self.plan.sizes)), self.plan.count_dtype, own=False)
            data = _joined(st.data, (0,), np.uint8, own=False)
            self.done.append(PackedTrace(counts, data, self.layout, ts, label, self.source, index, meta))
        else:
            matrix = _joined(st.rows, self._empty, np.int8)
            self.done.append(Trace(matrix, self.layout, ts, label, self.source, index, meta))
        self.stats.traces[label] += 1

    def _describe(self, seg: object) -> str:
        mode = self.spec.mode
        if mode == "file":
            return "capture"
        if mode == "flow":
            proto, a, pa, b, pb = seg
            name = _PROTO_NAMES.get(proto, f"proto {proto}")
            if proto in (6, 17):
                return f"{name} {_host_text(a)}:{pa} <-> {_host_text(b)}:{pb}"
            return f"{name} {_host_text(a)} <-> {_host_text(b)}"
        if mode == "window":
            return f"window {seg} ({seg * self.spec.window_s:g} s from the first packet)"
        if mode == "host":
            return f"host {_addr_text(seg)}"
        return f"host {_addr_text(seg[0])}, window {seg[1]}"


def _joined(parts: list[np.ndarray], empty: tuple[int, ...], dtype: type, own: bool = True) -> np.ndarray:
    """The parts as one array, that owns its data with ``own`` (no view keeps a batch alive)."""
    if len(parts) == 1:
        return parts[0] if not own or parts[0].base is None else parts[0].copy()
    return np.concatenate(parts) if parts else np.zeros(empty, dtype)


@lru_cache(maxsize=1 << 16)
def _addr_text(addr: int) -> str:
    return addr_text(addr)


@lru_cache(maxsize=1 << 16)
def _host_text(addr: int) -> str:
    """An address as a flow description writes it (IPv6 in brackets)."""
    text = _addr_text(addr)
    return f"[{text}]" if ":" in text else text


def packs_directly(layout: Layout, mode: str) -> bool:
    """Whether the encoder's header bytes are a store's packed rows as they are: every block whole bytes, and not
    nPrint's wireless quirk (radiotap bytes cut to the 802.11 header's width)."""
    return row_plan(layout).prefix and not (mode == "nprint" and any(b in ("radiotap", "wlan") for b in layout.blocks))
