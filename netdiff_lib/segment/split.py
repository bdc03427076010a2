"""One capture cut into traces by several workers: each takes a byte range and emits the traces that start in it.

:func:`part_range` cuts a classic pcap file into ``parts`` byte ranges of about equal size at record boundaries,
found by scanning the bytes after each cut for record headers that chain (:func:`record_boundary`); every worker
computes the same cuts from the file alone. Worker ``part`` (:func:`segment_part`) owns the traces whose first
packet lies in its range:

* it first reads a look-back margin before its range: the idle timeout for flows and hosts, back to the start of
  the window holding its first packet for windows (aligned to the capture's first packet, which every worker
  reads). Traces open there (started before the range) are followed but not emitted: their later packets in the
  range belong to them, and to the worker before;
* it reads its range, starting its own traces;
* it reads past its end until its own traces have ended (idle timeout, a later window) or filled up
  (``max_packets``), or the capture ends.

The workers' traces add up to those of one pass over the whole capture, and so do their counts: packets read,
left out (non-IP, late, no local address, unlabelled) by the worker whose range holds them, traces and packets in
traces by the trace's owner; packets beyond ``max_packets`` by the owner too, but only up to where it stops
reading, so their total can be lower than one pass's. That holds for captures whose timestamps do not go
backwards (what capture tools write); where they do, traces near a cut may differ from one pass's.
pcapng files and ``--traces file`` are not split: part 0 does the whole capture, the others nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from netdiff_lib.labels.base import LabelIndex
from netdiff_lib.nprint.encode import encode_batch, skip_counts
from netdiff_lib.pcap import PcapFile
from netdiff_lib.pcap.records import MAX_CAPLEN
from netdiff_lib.schema import Layout
from netdiff_lib.segment.builder import packs_directly
from netdiff_lib.segment.capture import make_builder, segment_capture
from netdiff_lib.segment.spec import SegmentStats, TraceSpec
from netdiff_lib.store.codec import PackedTrace, PackedTraces
from netdiff_lib.trace import Trace

WINDOW = 1 << 16  # bytes searched at a time for a record boundary
CHAIN = 16  # records that must follow one another for a boundary
SPREAD_S = 86400  # seconds their times may lie apart
MAX_WIRE = 1 << 20  # bytes a packet may have on the wire


def splittable(pcap: PcapFile, spec: TraceSpec) -> bool:
    return pcap.format == "pcap" and pcap.size is not None and spec.mode != "file"


def _header(pcap: PcapFile) -> tuple[struct.Struct, int, int]:
    return struct.Struct(pcap.byteorder + "IIII"), 10**9 if pcap.nanosecond else 10**6, \
        pcap.snaplen if 0 < (pcap.snaplen or 0) <= MAX_CAPLEN else MAX_CAPLEN


def record_boundary(pcap: PcapFile, offset: int) -> tuple[int, int | None]:
    """``(position, time in ns)`` of the first record that starts at or after byte ``offset``: a header (fraction
    below one second, captured length within the snap length and not above the length on the wire) followed by
    :data:`CHAIN` more such headers with times close to its own, or by the end of the file; ``(size, None)`` when
    there is none."""
    offset = max(offset, 24)
    words, second, snap = _header(pcap)
    want = WINDOW + CHAIN * (16 + snap)
    with open(pcap.path, "rb") as fh:
        while offset < pcap.size:
            fh.seek(offset)
            buf = fh.read(want)
            a = np.frombuffer(buf, np.uint8)
            n = max(min(len(a) - 15, WINDOW), 0)
            if not n:
                break
            head = np.lib.stride_tricks.sliding_window_view(a, 16)[:n].copy().view(pcap.byteorder + "u4")
            cap, wire = head[:, 2], head[:, 3]
            ok = (head[:, 1] < second) & (cap <= snap) & (cap <= wire) & (wire <= MAX_WIRE) & (wire > 0)
            for p in np.flatnonzero(ok).tolist():
                if _chains(buf, p, words, second, snap, len(buf) < want):
                    sec, frac = words.unpack_from(buf, p)[:2]
                    return offset + p, sec * 1_000_000_000 + frac * (1_000_000_000 // second)
            offset += n
    return pcap.size, None


def _chains(buf: bytes, p: int, words: struct.Struct, second: int, snap: int, eof: bool) -> bool:
    """Whether :data:`CHAIN` good record headers follow one another from ``p`` (fewer if the file ends), their
    times within :data:`SPREAD_S` of the first's."""
    first = words.unpack_from(buf, p)[0]
    for i in range(CHAIN):
        if p + 16 > len(buf):
            return eof and (p == len(buf) or i > 0)  # the end of the file (a last record may be cut short)
        sec, frac, cap, wire = words.unpack_from(buf, p)
        if frac >= second or cap > snap or cap > wire or not 0 < wire <= MAX_WIRE or abs(sec - first) > SPREAD_S:
            return False
        p += 16 + cap
    return p <= len(buf) or (eof and i > 0)


def part_range(pcap: PcapFile, part: int, parts: int) -> tuple[int, int]:
    """The byte range ``[start, end)`` of worker ``part`` of ``parts``, at record boundaries."""
    size = pcap.size

    def cut(k: int) -> int:
        return 24 if k == 0 else size if k == parts else record_boundary(pcap, 24 + (size - 24) * k // parts)[0]

    return cut(part), cut(part + 1)


def _look_back(pcap: PcapFile, start: int, since_ns: int) -> int:
    """The first record boundary at or before ``start`` from which on every record's time is >= ``since_ns``
    (a binary search over byte offsets, times taken as not going backwards)."""
    lo, hi = 24, start
    while lo < hi:
        mid = (lo + hi) // 2
        pos, ts = record_boundary(pcap, mid)
        if pos >= start or (ts is not None and ts >= since_ns):
            hi = mid
        else:
            lo = pos + 1 if pos >= mid else mid + 1
    return min(record_boundary(pcap, lo)[0], start)


def _first_kept_ns(pcap: PcapFile, layout: Layout, mode: str) -> int | None:
    """The time of the capture's first encoded packet (windows count from it)."""
    for batch in pcap.batches(batch_size=4096):
        enc = encode_batch(batch, layout, mode)
        if len(enc.keep):
            return int(batch.ts_ns[enc.keep[0]])
    return None


def segment_part(path: str | Path, spec: TraceSpec, layout: Layout, *, part: int, parts: int,
                 max_packets: int | None, label: str | None = None, labels: LabelIndex | None = None,
                 unlabelled: str = "drop", mode: str = "netdiff", source: str | None = None,
                 stats: SegmentStats | None = None, index: int | None = None,
                 batch_size: int = 16384, packed: bool = False,
                 batched: bool = False) -> Iterator[Trace | PackedTrace | PackedTraces]:
    """The traces of :func:`~netdiff_lib.segment.capture.segment_capture` that worker ``part`` of ``parts`` owns
    (see the module doc); with ``parts`` 1, all of them.  ``packed``, ``batched``: as for ``segment_capture``."""
    packed = packed and packs_directly(layout, mode)
    kw = {"max_packets": max_packets, "label": label, "labels": labels, "unlabelled": unlabelled, "mode": mode,
          "source": source, "stats": stats, "index": index, "batch_size": batch_size, "packed": packed,
          "batched": batched}
    pcap = PcapFile(path)
    if parts <= 1 or not splittable(pcap, spec):
        if part == 0:
            yield from segment_capture(path, spec, layout, **kw)
        return
    start, end = part_range(pcap, part, parts)
    if start >= end:
        return
    b = make_builder((spec, layout, max_packets, source or str(path), labels, label, unlabelled, index), packed,
                     batched)
    if stats is not None:
        b.stats = stats
    t_start = record_boundary(pcap, start)[1]
    if t_start is None:
        return
    if b.windowed:
        b.t0 = _first_kept_ns(pcap, layout, mode)
        since = b.t0 + (t_start - b.t0) // spec.window_ns * spec.window_ns if b.t0 is not None else t_start
    else:
        since = t_start - spec.timeout_ns
    for first, last, own in ((_look_back(pcap, start, since), start, False), (start, end, True), (end, None, None)):
        b.owning = b.counting = bool(own)
        for batch in pcap.batches(batch_size=batch_size, start=first, stop=last) if own is not None or \
                b.owned_open() else ():
            enc = encode_batch(batch, layout, mode, bits=not packed)
            if own:
                b.stats.packets += len(batch)
                b.stats.dropped.update(skip_counts(enc))
            b.add_batch(enc, batch.ts_ns[enc.keep])
            yield from b.done
            b.done = []
            if own is None and not b.owned_open():
                break
    b.finish()  # what is still open is not this worker's, or its own traces at the end of the capture
    yield from b.done
