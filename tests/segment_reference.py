"""Today's per-packet trace builder, kept as the oracle of the differential tests (tests/test_segment_fast.py):
the vectorised builder of :mod:`netdiff_lib.segment.builder` must give the very same traces, in the same order,
with the same counts. This is the code of netdiff_lib/segment/builder.py and keys.packet_keys before issue 21,
with one fix: it cached a batch's -O values under ``id(batch)``, which Python reuses once a batch is freed, so a
later batch could get an earlier one's values (tests/test_segment_fast.py::test_index_values_follow_their_packets).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdiff_lib.labels.base import UNLABELLED, LabelIndex, addr_text, flow_key
from netdiff_lib.nprint.encode import EncodedBatch, encode_batch, skip_counts
from netdiff_lib.nprint.locate import PROTO_TCP, PROTO_UDP
from netdiff_lib.pcap import PcapFile
from netdiff_lib.schema import Layout
from netdiff_lib.segment.keys import LocalNets, _addresses
from netdiff_lib.segment.spec import BEYOND, LATE, NO_LOCAL, UNLABELLED_DROPPED, SegmentStats, TraceSpec
from netdiff_lib.trace import Trace


@dataclass
class PacketKeys:
    """Flow fields of the kept packets of a batch (one entry per matrix row)."""

    proto: list[int]
    src: list[int]
    dst: list[int]
    sport: list[int]
    dport: list[int]
    src_local: np.ndarray  # bool
    dst_local: np.ndarray  # bool



def packet_keys(enc: EncodedBatch, local: LocalNets) -> PacketKeys:
    """The flow fields of every kept packet of ``enc``; ports are 0 except for TCP and UDP."""
    loc, keep, data = enc.loc, enc.keep, enc.batch.data
    l3, version, l4 = loc.l3[keep], loc.version[keep], loc.l4[keep]
    l4proto = loc.proto[keep]
    ipproto = np.take(data, np.where(version == 4, l3 + 9, l3 + 6), mode="clip").astype(np.int64)
    proto = np.where(l4proto > 0, l4proto, ipproto)
    has_ports = np.isin(l4proto, (PROTO_TCP, PROTO_UDP))
    at = np.where(has_ports, l4, 0)[:, None] + np.arange(4)
    p = np.take(data, at, mode="clip").astype(np.int64)
    sport = np.where(has_ports, (p[:, 0] << 8) | p[:, 1], 0)
    dport = np.where(has_ports, (p[:, 2] << 8) | p[:, 3], 0)
    hi, lo = _addresses(data, l3, version)
    is_local = local(hi, lo)
    full = [(h << 64) | w for h, w in zip(hi.ravel().tolist(), lo.ravel().tolist(), strict=True)]
    return PacketKeys(proto.tolist(), full[0::2], full[1::2], sport.tolist(), dport.tolist(), is_local[:, 0],
                      is_local[:, 1])


_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}


@dataclass
class _Open:
    """One trace being built."""

    seg: object  # the flow key, host address, window index, (host, window) or None (file)
    label: str
    first_ns: int
    last_ns: int
    rows: list[np.ndarray] = field(default_factory=list)
    ts: list[np.ndarray] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # rows of the current batch
    index: list[str] = field(default_factory=list)  # nPrint -O values of the rows, when asked for
    n: int = 0
    full: bool = False


class _Builder:
    def __init__(self, spec: TraceSpec, layout: Layout, max_packets: int | None, source: str,
                 labels: LabelIndex | None, label: str | None, unlabelled: str, index: int | None = None) -> None:
        self.spec, self.layout, self.max, self.source, self.index = spec, layout, max_packets, source, index
        self._index_of: tuple[EncodedBatch, list[str]] | None = None  # (the batch, its -O values)
        self.labels, self.label, self.unlabelled = labels, label, unlabelled
        self.local = LocalNets(spec.local_nets)
        self.open: dict[tuple, _Open] = {}
        self.stats = SegmentStats()
        self.t0: int | None = None
        self.closed_window = -1  # windows up to this index have ended
        self.done: list[Trace] = []
        self.idle = spec.mode in ("flow", "host")
        self.windowed = "window" in spec.mode

    # -- per packet -------------------------------------------------------------------------------------------
    def _label(self, keys: PacketKeys, i: int, fkey: tuple, ts: int, host: int | None = None) -> str | None:
        if self.labels is None:
            return self.label
        found = self.labels.label(fkey, keys.src[i], keys.dst[i], ts, host)
        if found is None and self.unlabelled == "keep":
            return UNLABELLED
        return found

    def _segments(self, keys: PacketKeys | None, i: int, ts: int, fkey: tuple | None) -> list[object] | str:
        """The segment keys of packet ``i``, or the reason it is in no trace."""
        mode = self.spec.mode
        if mode == "file":
            return [None]
        window = None
        if self.windowed:
            window = (ts - self.t0) // self.spec.window_ns
            if window <= self.closed_window:
                return LATE
            if mode == "window":
                return [window]
        if mode == "flow":
            return [fkey]
        hosts = [h for h, local in ((keys.src[i], keys.src_local[i]), (keys.dst[i], keys.dst_local[i])) if local]
        if not hosts:
            return NO_LOCAL
        hosts = hosts[:1] if len(hosts) == 2 and hosts[0] == hosts[1] else hosts
        return hosts if window is None else [(h, window) for h in hosts]

    def add_batch(self, enc: EncodedBatch, ts: np.ndarray) -> None:
        keys = packet_keys(enc, self.local) if self.spec.mode in ("flow", "host", "host+window") or self.labels \
            else None
        if self.t0 is None and len(ts):
            self.t0 = int(ts[0])
        touched: dict[int, _Open] = {}
        times = ts.tolist()
        for i, t in enumerate(times):
            fkey = flow_key(keys.proto[i], keys.src[i], keys.sport[i], keys.dst[i], keys.dport[i]) if keys else None
            segs = self._segments(keys, i, t, fkey)
            if isinstance(segs, str):
                self.stats.dropped[segs] += 1
                continue
            if self.windowed:
                self._close_windows(segs[0][1] if isinstance(segs[0], tuple) else segs[0], enc, touched)
            placed = False
            for seg in segs:
                host = seg if self.spec.mode == "host" else seg[0] if self.spec.mode == "host+window" else None
                label = self._label(keys, i, fkey, t, host) if keys else self.label
                if label is None:
                    continue
                placed |= self._place(seg, label, i, t, enc, touched)
            if not placed:
                self.stats.dropped[UNLABELLED_DROPPED if label is None else BEYOND] += 1
            else:
                self.stats.in_traces += 1
        for st in touched.values():
            self._take(st, enc, ts)
        if self.idle and times:
            self._expire(times[-1])

    def _place(self, seg: object, label: str, i: int, t: int, enc: EncodedBatch,
               touched: dict[int, _Open]) -> bool:
        key = (seg, label)
        st = self.open.get(key)
        if st is not None and self.idle and t - st.last_ns > self.spec.timeout_ns:
            self._end(key, enc, touched)
            st = None
        if st is None:
            st = self.open[key] = _Open(seg, label, t, t)
        st.last_ns = max(st.last_ns, t)
        if st.full:
            return False
        st.pending.append(i)
        touched[id(st)] = st
        st.n += 1
        if self.max is not None and st.n >= self.max:
            self._take(st, enc, enc.batch.ts_ns[enc.keep])
            touched.pop(id(st), None)
            self._emit(st)
            st.full, st.rows, st.ts, st.index = True, [], [], []
        return True

    # -- trace ends -------------------------------------------------------------------------------------------
    def _take(self, st: _Open, enc: EncodedBatch, ts: np.ndarray) -> None:
        if st.pending:
            idx = np.asarray(st.pending, np.intp)
            st.rows.append(enc.matrix[idx])
            st.ts.append(np.asarray(ts)[idx])
            if self.index is not None:
                values = self._index_values(enc)
                st.index += [values[i] for i in st.pending]
            st.pending = []

    def _index_values(self, enc: EncodedBatch) -> list[str]:
        if self._index_of is None or self._index_of[0] is not enc:
            from netdiff_lib.nprint.index import index_values

            self._index_of = (enc, index_values(enc, self.index))
        return self._index_of[1]

    def _end(self, key: tuple, enc: EncodedBatch | None, touched: dict[int, _Open]) -> None:
        st = self.open.pop(key)
        if enc is not None:
            self._take(st, enc, enc.batch.ts_ns[enc.keep])
        touched.pop(id(st), None)
        if not st.full:
            self._emit(st)

    def _close_windows(self, window: int, enc: EncodedBatch, touched: dict[int, _Open]) -> None:
        if window - 1 <= self.closed_window:
            return
        for key in [k for k, st in self.open.items() if _window_of(st.seg) < window]:
            self._end(key, enc, touched)
        self.closed_window = window - 1

    def _expire(self, now: int) -> None:
        for key in [k for k, st in self.open.items() if now - st.last_ns > self.spec.timeout_ns]:
            self._end(key, None, {})

    def finish(self) -> None:
        for key in sorted(self.open, key=lambda k: self.open[k].first_ns):
            self._end(key, None, {})

    def _emit(self, st: _Open) -> None:
        matrix = np.concatenate(st.rows) if st.rows else np.zeros((0, self.layout.width), np.int8)
        ts = np.concatenate(st.ts) if st.ts else np.zeros(0, np.int64)
        meta = {"traces": self.spec.text, "trace": self._describe(st.seg)}
        if self.max is not None:
            meta["max_packets"] = self.max
        index = st.index if self.index is not None else None
        self.done.append(Trace(matrix, self.layout, ts, st.label, self.source, index, meta))
        self.stats.traces[st.label] += 1

    def _describe(self, seg: object) -> str:
        mode = self.spec.mode
        if mode == "file":
            return "capture"
        if mode == "flow":
            proto, a, pa, b, pb = seg
            name = _PROTO_NAMES.get(proto, f"proto {proto}")
            return f"{name} {_endpoint(a, pa, proto)} <-> {_endpoint(b, pb, proto)}"
        if mode == "window":
            return f"window {seg} ({seg * self.spec.window_s:g} s from the first packet)"
        if mode == "host":
            return f"host {addr_text(seg)}"
        return f"host {addr_text(seg[0])}, window {seg[1]}"


def _window_of(seg: object) -> int:
    return seg[1] if isinstance(seg, tuple) else seg


def _endpoint(addr: int, port: int, proto: int) -> str:
    text = addr_text(addr)
    text = f"[{text}]" if ":" in text else text
    return f"{text}:{port}" if proto in (6, 17) else text


def reference_segment_capture(path: str | Path, spec: TraceSpec, layout: Layout, *, max_packets: int | None,
                    label: str | None = None, labels: LabelIndex | None = None, unlabelled: str = "drop",
                    mode: str = "netdiff", source: str | None = None, stats: SegmentStats | None = None,
                    index: int | None = None, batch_size: int = 16384) -> Iterator[Trace]:
    """Cut a capture into traces (see :mod:`netdiff_lib.segment`), yielding each when it ends.

    Packets get ``label`` (the capture's), or with ``labels`` the label of their flow or host at their time;
    packets without one are left out (``unlabelled="drop"``) or labelled ``unlabelled`` (``"keep"``). The counts
    go to ``stats`` when given. ``index`` (an nPrint ``-O`` value, e.g. 0 for source addresses) also fills each
    trace's ``index``.
    """
    pcap = PcapFile(path)
    b = _Builder(spec, layout, max_packets, source or str(path), labels, label, unlabelled, index)
    if stats is not None:
        b.stats = stats
    for batch in pcap.batches(batch_size=batch_size):
        b.stats.packets += len(batch)
        if spec.mode == "file" and labels is None and b.open and next(iter(b.open.values())).full:
            b.stats.dropped[BEYOND] += len(batch)  # the one trace is full: count the rest, encode nothing
            continue
        enc = encode_batch(batch, layout, mode)
        b.stats.dropped.update(skip_counts(enc))
        b.add_batch(enc, batch.ts_ns[enc.keep])
        yield from b.done
        b.done = []
    b.finish()
    yield from b.done
