"""pcap -> nPrint matrix, vectorised over batches of packets.

For each header block the encoder gathers a fixed-size byte window per packet (``sliding_window_view`` +
fancy indexing), drops byte-aligned columns that the layout leaves out (the NetDiffusion address fields)
before expanding bits, then expands all blocks with one ``np.unpackbits`` and writes the fill value where a
byte is not on the wire (absent header, options beyond IHL/data offset, payload beyond its end).  No Python
loop runs per packet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from netdiff_lib.nprint.locate import KEPT, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SKIP_REASONS, Located, locate
from netdiff_lib.pcap import PacketBatch, PcapFile
from netdiff_lib.schema import BLOCKS, NETDIFFUSION, Layout
from netdiff_lib.trace import Trace

TRUNCATED_TAIL = "record cut at end of file"


@dataclass
class EncodedBatch:
    """The kept packets of one batch: their matrix rows, and what was found out about them."""

    matrix: np.ndarray
    keep: np.ndarray  # indices (into the batch) of the packets that got a row
    loc: Located
    batch: PacketBatch
    raw: np.ndarray | None = None  # (rows, bytes) the header bytes behind ``matrix``
    raw_fill: np.ndarray | None = None  # (rows, bytes) True where a byte is not on the wire (fill)


@dataclass
class EncodeResult:
    """A whole capture encoded: the trace and how many packets were skipped, by reason."""

    trace: Trace
    packets_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


@lru_cache(maxsize=64)
def _kept_bytes(block: str, drop: frozenset[str]) -> np.ndarray:
    """Byte indices of a block that survive the layout's dropped fields (dropped fields are byte-aligned)."""
    keep = np.ones(BLOCKS[block].nbytes, bool)
    for f in BLOCKS[block].fields:
        if f.name in drop:
            if f.offset % 8 or f.bits % 8:
                raise ValueError(f"only byte-aligned fields can be dropped, not {f.name}")
            keep[f.offset // 8 : (f.offset + f.bits) // 8] = False
    return np.flatnonzero(keep)


def _windows(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``data[s : s + width]`` for every start (absent starts give zeros, masked later)."""
    if len(data) < width + 1:
        data = np.concatenate([data, np.zeros(width + 1 - len(data), np.uint8)])
    view = np.lib.stride_tricks.sliding_window_view(data, width)
    return view[np.clip(starts, 0, len(view) - 1)]


@dataclass
class _Segment:
    """One block's bytes for the kept packets, and which of them are on the wire."""

    win: np.ndarray  # (k, width) uint8
    nvalid: np.ndarray  # (k,) leading bytes on the wire; the rest is fill


def _segment(batch: PacketBatch, loc: Located, keep: np.ndarray, block: str, payload: int, mode: str) -> _Segment:
    d = batch.data
    if block == "payload":
        width, start = payload, loc.pay[keep]
        nvalid = np.minimum(loc.pay_len[keep], width)
    elif block == "eth":
        start = loc.eth[keep]
        win = np.concatenate([_windows(d, start, 12), _windows(d, loc.ethertype_at[keep], 2)], axis=1)
        return _Segment(win, np.where(start >= 0, 14, 0))
    else:
        width = BLOCKS[block].nbytes
        if block in ("ipv4", "ipv6"):
            present = loc.version[keep] == (4 if block == "ipv4" else 6)
            start, nvalid = loc.l3[keep], np.where(present, loc.ip_len[keep], 0)
        else:
            proto = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP}[block]
            present = loc.proto[keep] == proto
            start, nvalid = loc.l4[keep], np.where(present, loc.l4_len[keep], 0)
    win = _windows(d, start, width)
    end = loc.end[keep]
    cut = (start + nvalid > end) & (nvalid > 0)
    if not cut.any():
        return _Segment(win, nvalid)
    if mode == "netdiff":  # bytes not captured are not known to be on the wire: fill
        return _Segment(win, np.where(cut, np.maximum(end - start, 0), nvalid))
    beyond = (start[:, None] + np.arange(width)[None, :]) >= end[:, None]
    return _Segment(np.where(beyond, 0, win), nvalid)  # nPrint reads uninitialised memory; we read zeros


def _fill_tails(bits: np.ndarray, col: int, width: int, nvalid: np.ndarray, fill: int) -> None:
    """Write ``fill`` over bytes ``nvalid..width`` of a block, one column slice per distinct length."""
    short = nvalid < width
    if not short.any():
        return
    values = np.unique(nvalid[short])
    if len(values) > 32:  # e.g. payload lengths: one mask over the block instead
        mask = np.arange(width)[None, :] >= nvalid[:, None]
        block = bits[:, col : col + 8 * width]
        np.putmask(block, np.repeat(mask, 8, axis=1), np.int8(fill))
        return
    for v in values.tolist():
        bits[nvalid == v, col + 8 * v : col + 8 * width] = fill


def encode_batch(batch: PacketBatch, layout: Layout, mode: str = "netdiff", fill: int = -1) -> EncodedBatch:
    """Encode every parseable packet of a batch into rows of ``layout``.

    All blocks' bytes are gathered side by side and expanded with one ``np.unpackbits`` (the result is the
    output matrix); then the fill value is written over each block's bytes that are not on the wire.
    """
    loc = locate(batch.data, batch.offsets, batch.caplen, batch.linktype, mode)
    keep = np.flatnonzero(loc.reason == KEPT)
    segs: list[_Segment] = []
    for block in list(layout.blocks) + (["payload"] if layout.payload_bytes else []):
        seg = _segment(batch, loc, keep, block, layout.payload_bytes, mode)
        if block != "payload" and layout.drop:
            kb = _kept_bytes(block, layout.drop)  # on-the-wire bytes stay a prefix of the kept ones
            seg = _Segment(np.take(seg.win, kb, axis=1), np.searchsorted(kb, seg.nvalid))
        segs.append(seg)
    if not segs:
        return EncodedBatch(np.zeros((len(keep), 0), np.int8), keep, loc, batch)
    raw = np.concatenate([s.win for s in segs], axis=1, dtype=np.uint8)
    raw = np.ascontiguousarray(raw)  # fancy-indexed windows can come out column-major
    bits = np.unpackbits(raw, axis=1).view(np.int8)
    col = 0
    for seg in segs:
        width = seg.win.shape[1]
        _fill_tails(bits, col, width, seg.nvalid, fill)
        col += 8 * width
    raw_fill = np.concatenate([np.arange(s.win.shape[1])[None, :] >= s.nvalid[:, None] for s in segs], axis=1)
    return EncodedBatch(bits, keep, loc, batch, raw, raw_fill)


def iter_encoded(
    path: str | Path | PcapFile, layout: Layout, mode: str = "netdiff", fill: int = -1, batch_size: int = 16384,
    max_packets: int | None = None, count_read: bool = False,
) -> Iterator[EncodedBatch]:
    """Encode a capture batch by batch.

    ``max_packets`` limits the rows written (``count_read=False``, netdiff's meaning) or, as nPrint's ``-c``
    does, the packets read from the capture including skipped ones (``count_read=True``).
    """
    pcap = path if isinstance(path, PcapFile) else PcapFile(path)
    rows = 0
    read_limit = max_packets if count_read else None
    for batch in pcap.batches(batch_size=batch_size, max_packets=read_limit):
        enc = encode_batch(batch, layout, mode, fill)
        if max_packets is not None and not count_read and rows + len(enc.keep) > max_packets:
            n = max_packets - rows
            enc = EncodedBatch(enc.matrix[:n], enc.keep[:n], enc.loc, enc.batch, enc.raw[:n], enc.raw_fill[:n])
        rows += len(enc.keep)
        yield enc
        if max_packets is not None and not count_read and rows >= max_packets:
            break


def skip_counts(enc: EncodedBatch, upto: int | None = None) -> Counter:
    """Skipped packets of a batch by reason name (only among the first ``upto`` packets when given)."""
    reasons = enc.loc.reason if upto is None else enc.loc.reason[:upto]
    values, counts = np.unique(reasons[reasons != KEPT], return_counts=True)
    return Counter({SKIP_REASONS[int(v)]: int(c) for v, c in zip(values, counts, strict=True)})


def encode_pcap(
    path: str | Path, layout: Layout = NETDIFFUSION, *, max_packets: int | None = None, mode: str = "netdiff",
    fill: int = -1, label: str | None = None, batch_size: int = 16384, index: int | None = None,
) -> EncodeResult:
    """Encode a whole capture into a :class:`Trace` (first ``max_packets`` rows when given).

    ``index`` (an nPrint ``-O`` value) also fills ``trace.index``, e.g. 0 for source addresses.
    Skipped packets are counted by reason; a capture that ends mid-record counts one "record cut at end
    of file" (the complete records before it are encoded).
    """
    pcap = PcapFile(path)
    mats, ts, skipped, read, idx = [], [], Counter(), 0, []
    for enc in iter_encoded(pcap, layout, mode, fill, batch_size, max_packets):
        if index is not None:
            from netdiff_lib.nprint.index import index_values

            idx += index_values(enc, index)[: len(enc.matrix)]
        mats.append(enc.matrix)
        ts.append(enc.batch.ts_ns[enc.keep])
        last = int(enc.keep[-1]) + 1 if len(enc.keep) and max_packets is not None else None
        skipped += skip_counts(enc, last)
        read += last if last is not None else len(enc.batch)
    if pcap.stats.truncated_tail:
        skipped[TRUNCATED_TAIL] += 1
    matrix = np.concatenate(mats) if mats else np.zeros((0, layout.width), np.int8)
    ts_ns = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    trace = Trace(matrix, layout, ts_ns, label, str(path), idx if index is not None else None)
    return EncodeResult(trace, read, skipped)
