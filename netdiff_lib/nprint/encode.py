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

from netdiff_lib.errors import InputError
from netdiff_lib.nprint.index import index_values
from netdiff_lib.nprint.locate import (
    KEPT,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    SKIP_REASONS,
    Located,
    byte_windows,
    locate,
)
from netdiff_lib.pcap import PacketBatch, PcapFile
from netdiff_lib.schema import BLOCKS, NETDIFFUSION, Layout
from netdiff_lib.trace import Trace

TRUNCATED_TAIL = "record cut at end of file"
#: How stages read captures: (parsing mode of :func:`locate`, whether the packet limit counts frames read).
#: ``netdiffusion`` is what NetDiffusion's ``nprint -c 1024`` gives: nPrint's parsing (ICMPv6, extension headers
#: and non-IP frames dropped) and the first 1,024 *frames read*, so images equal NetDiffusion's pixel for pixel.
CAPTURE_MODES: dict[str, tuple[str, bool]] = {
    "netdiff": ("netdiff", False), "nprint": ("nprint", False), "netdiffusion": ("nprint", True),
}


@dataclass
class EncodedBatch:
    """The kept packets of one batch: their matrix rows, and what was found out about them."""

    matrix: np.ndarray
    keep: np.ndarray  # indices (into the batch) of the packets that got a row
    loc: Located
    batch: PacketBatch
    raw: np.ndarray | None = None  # (rows, bytes) the header bytes behind ``matrix``
    raw_fill: np.ndarray | None = None  # (rows, bytes) True where a byte is not on the wire (fill)
    raw_counts: np.ndarray | None = None  # (rows, blocks) bytes on the wire per block (with ``bits=False``)


@dataclass
class EncodeResult:
    """A whole capture encoded: the trace and how many packets were skipped, by reason."""

    trace: Trace
    packets_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def require_packets(self, path: str | Path) -> Trace:
        """The trace; a capture that gave no row is an :class:`InputError` saying why (what was skipped)."""
        if not len(self.trace):
            reasons = ", ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "the capture holds no packets"
            raise InputError(path, f"no packet to encode ({self.packets_read} read; {reasons})")
        return self.trace


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


class _Kept:
    """The ``Located`` fields of the kept packets (each taken once; no copy when every packet is kept)."""

    def __init__(self, loc: Located, keep: np.ndarray, l4_width: int) -> None:
        self.loc, self.keep, self.l4_width, self.cache = loc, keep, l4_width, {}
        self.all = len(keep) == len(loc.reason)

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.cache:
            a = getattr(self.loc, name)
            self.cache[name] = a if self.all else a[self.keep]
        return self.cache[name]

    def l4_window(self, data: np.ndarray) -> np.ndarray:
        if "l4_win" not in self.cache:
            self.cache["l4_win"] = byte_windows(data, self("l4"), self.l4_width)
        return self.cache["l4_win"]


@dataclass
class _Segment:
    """One block's bytes for the kept packets, and which of them are on the wire."""

    win: np.ndarray  # (k, width) uint8
    nvalid: np.ndarray  # (k,) leading bytes on the wire; the rest is fill


_L4_BLOCKS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP}
_WIRELESS = ("radiotap", "wlan")


def _segment(batch: PacketBatch, kept: _Kept, block: str, payload: int, mode: str) -> _Segment:
    d = batch.data
    if block == "payload":
        width, start = payload, kept("pay")
        nvalid = np.minimum(kept("pay_len"), width)
        win = byte_windows(d, start, width)
    elif block in _WIRELESS:
        # nPrint writes the radiotap bytes for -w as well (its bug; the row is cut to the header's width)
        width = BLOCKS["radiotap" if mode == "nprint" else block].nbytes
        start = kept("radiotap")
        win, nvalid = byte_windows(d, start, width), np.where(start >= 0, width, 0)
    elif block == "eth":
        start = kept("eth")
        win = np.concatenate([byte_windows(d, start, 12), byte_windows(d, kept("ethertype_at"), 2)], axis=1)
        return _Segment(win, np.where(start >= 0, 14, 0))
    else:
        width = BLOCKS[block].nbytes
        if block in ("ipv4", "ipv6"):
            present = kept("version") == (4 if block == "ipv4" else 6)
            start, nvalid = kept("l3"), np.where(present, kept("ip_len"), 0)
            win = byte_windows(d, start, width)
        else:
            present = kept("proto") == _L4_BLOCKS[block]
            start, nvalid = kept("l4"), np.where(present, kept("l4_len"), 0)
            win = kept.l4_window(d)[:, :width]  # one gather serves every L4 block
    end = kept("end")
    cut = (start + nvalid > end) & (nvalid > 0)
    if not cut.any():
        return _Segment(win, nvalid)
    if mode == "netdiff":  # bytes not captured are not known to be on the wire: fill
        return _Segment(win, np.where(cut, np.maximum(end - start, 0), nvalid))
    beyond = (start[:, None] + np.arange(width)[None, :]) >= end[:, None]
    return _Segment(np.where(beyond, 0, win), nvalid)  # nPrint reads uninitialised memory; we read zeros


@lru_cache(maxsize=64)
def _fill_table(width: int) -> np.ndarray:
    """``(width + 1, width)`` bool: row ``v`` is True at the bytes ``v..width`` (not on the wire)."""
    return np.arange(width)[None, :] >= np.arange(width + 1)[:, None]


@lru_cache(maxsize=16)
def _bit_table(fill: int) -> np.ndarray:
    """512 uint64 words, each the 8 int8 bits of a byte: entry ``b`` for byte ``b``, ``256 + b`` all ``fill``."""
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).view(np.int8)
    table = np.concatenate([bits, np.full((256, 8), fill, np.int8)])
    return np.ascontiguousarray(table).view(np.uint64).ravel()


def encode_batch(
    batch: PacketBatch, layout: Layout, mode: str = "netdiff", fill: int = -1, out: np.ndarray | None = None,
    bits: bool = True,
) -> EncodedBatch:
    """Encode every parseable packet of a batch into rows of ``layout``.

    All blocks' bytes are gathered side by side with, per byte, whether it is on the wire; one table lookup
    (byte -> its 8 bits, or 8 fill values) then writes the matrix.  ``out`` (C-contiguous int8 with at least
    as many rows as the batch has packets and ``layout.width`` columns) receives the rows when given.
    ``bits=False`` leaves the matrix out (no columns): the header bytes (``raw``, ``raw_fill``) are all a trace
    store needs (:func:`netdiff_lib.store.codec.pack_header_bytes`).
    """
    loc = locate(batch.data, batch.offsets, batch.caplen, batch.linktype, mode)
    keep = np.flatnonzero(loc.reason == KEPT)
    k = len(keep)
    segs: list[_Segment] = []
    kept = _Kept(loc, keep, max([BLOCKS[b].nbytes for b in layout.blocks if b in _L4_BLOCKS], default=0))
    for block in list(layout.blocks) + (["payload"] if layout.payload_bytes else []):
        seg = _segment(batch, kept, block, layout.payload_bytes, mode)
        if block != "payload" and layout.drop:
            kb = _kept_bytes(block, layout.drop)  # on-the-wire bytes stay a prefix of the kept ones
            seg = _Segment(np.take(seg.win, kb, axis=1), np.searchsorted(kb, seg.nvalid))
        segs.append(seg)
    nbytes = sum(s.win.shape[1] for s in segs)
    raw = np.empty((k, nbytes), np.uint8)
    raw_fill = np.empty((k, nbytes), bool)
    col = 0
    for seg in segs:
        width = seg.win.shape[1]
        raw[:, col : col + width] = seg.win
        raw_fill[:, col : col + width] = np.take(_fill_table(width), seg.nvalid, axis=0, mode="clip")
        col += width
    if nbytes > layout.width // 8:  # nPrint's -w: only as many values as the header names
        nbytes = layout.width // 8
        raw, raw_fill = np.ascontiguousarray(raw[:, :nbytes]), np.ascontiguousarray(raw_fill[:, :nbytes])
    if not bits:
        counts = np.stack([np.clip(s.nvalid, 0, s.win.shape[1]) for s in segs], axis=1) if segs else None
        return EncodedBatch(np.empty((k, 0), np.int8), keep, loc, batch, raw, raw_fill, counts)
    if out is None:
        out = np.empty((k, 8 * nbytes), np.int8)
    matrix = out[:k]
    if k and nbytes:
        idx = raw_fill.view(np.uint8).astype(np.uint16)  # byte + 256 where fill: the table's index
        idx <<= 8
        idx |= raw
        np.take(_bit_table(fill), idx, out=matrix.view(np.uint64), mode="wrap")
    return EncodedBatch(matrix, keep, loc, batch, raw, raw_fill)


class _RowBuffer:
    """Matrix rows written in place batch after batch, so that no per-batch matrix is copied at the end.

    The buffer is sized from the file size and the first batch's bytes per packet (pages never written are
    never touched); should the estimate fall short, a further buffer is started and the parts are joined.
    A stream's size is not known: each further buffer holds as many rows as were seen so far.
    """

    MAX_BYTES = 2 << 30  # a larger estimate is split into parts

    def __init__(self, width: int, file_bytes: int | None, limit: int | None) -> None:
        self.width, self.limit, self.parts, self.n, self.buf = width, limit, [], 0, np.empty((0, width), np.int8)
        self.file_bytes, self.seen_bytes, self.seen_rows = file_bytes, 0, 0

    def region(self, batch: PacketBatch) -> np.ndarray:
        k = len(batch)
        self.seen_bytes += int(batch.caplen.sum()) + 16 * k
        self.seen_rows += k
        if self.n + k > len(self.buf):
            if self.file_bytes is None:
                left = self.seen_rows
            else:
                left = max(self.file_bytes - self.seen_bytes, 0) * self.seen_rows // max(self.seen_bytes, 1)
            cap = k + left + left // 16 + 1024
            if self.limit is not None:
                cap = min(cap, max(self.limit - self.rows, k))
            cap = max(min(cap, self.MAX_BYTES // max(self.width, 1)), k)
            if self.n:
                self.parts.append(self.buf[: self.n])
            self.buf, self.n = np.empty((cap, self.width), np.int8), 0
        return self.buf[self.n :]

    def commit(self, k: int) -> None:
        self.n += k

    @property
    def rows(self) -> int:
        return sum(len(p) for p in self.parts) + self.n

    def matrix(self) -> np.ndarray:
        if not self.parts:
            return self.buf[: self.n]
        return np.concatenate([*self.parts, self.buf[: self.n]])


def iter_encoded(
    path: str | Path | PcapFile, layout: Layout, mode: str = "netdiff", fill: int = -1, batch_size: int = 16384,
    max_packets: int | None = None, count_read: bool = False, rows_out: _RowBuffer | None = None,
) -> Iterator[EncodedBatch]:
    """Encode a capture batch by batch.

    ``max_packets`` limits the rows written (``count_read=False``, netdiff's meaning) or, as nPrint's ``-c``
    does, the packets read from the capture including skipped ones (``count_read=True``).  With ``rows_out``
    the matrices are written into (and stay views of) its buffer; each batch's rows are kept there.
    """
    pcap = path if isinstance(path, PcapFile) else PcapFile(path)
    rows = 0
    read_limit = max_packets if count_read else None
    for batch in pcap.batches(batch_size=batch_size, max_packets=read_limit):
        enc = encode_batch(batch, layout, mode, fill, None if rows_out is None else rows_out.region(batch))
        if max_packets is not None and not count_read and rows + len(enc.keep) > max_packets:
            n = max_packets - rows
            enc = EncodedBatch(enc.matrix[:n], enc.keep[:n], enc.loc, enc.batch, enc.raw[:n], enc.raw_fill[:n])
        rows += len(enc.keep)
        if rows_out is not None:
            rows_out.commit(len(enc.keep))
        yield enc
        if max_packets is not None and not count_read and rows >= max_packets:
            break


def skip_counts(enc: EncodedBatch, upto: int | None = None) -> Counter:
    """Skipped packets of a batch by reason name (only among the first ``upto`` packets when given)."""
    reasons = enc.loc.reason if upto is None else enc.loc.reason[:upto]
    values, counts = np.unique(reasons[reasons != KEPT], return_counts=True)
    return Counter({SKIP_REASONS[int(v)]: int(c) for v, c in zip(values, counts, strict=True)})


def encode_pcap(
    path: str | Path | PcapFile, layout: Layout = NETDIFFUSION, *, max_packets: int | None = None,
    mode: str = "netdiff", fill: int = -1, label: str | None = None, batch_size: int = 16384, index: int | None = None,
    count_read: bool = False,
) -> EncodeResult:
    """Encode a whole capture into a :class:`Trace` (first ``max_packets`` rows when given).

    ``index`` (an nPrint ``-O`` value) also fills ``trace.index``, e.g. 0 for source addresses.
    ``count_read`` makes ``max_packets`` count frames read, as nPrint's ``-c`` does (see ``CAPTURE_MODES``).
    Skipped packets are counted by reason; a capture that ends mid-record counts one "record cut at end
    of file" (the complete records before it are encoded).
    """
    pcap = path if isinstance(path, PcapFile) else PcapFile(path)
    ts, skipped, read, idx = [], Counter(), 0, []
    rows_out = _RowBuffer(layout.width, pcap.size, max_packets)
    for enc in iter_encoded(pcap, layout, mode, fill, batch_size, max_packets, count_read, rows_out=rows_out):
        if index is not None:
            idx += index_values(enc, index)[: len(enc.matrix)]
        ts.append(enc.batch.ts_ns[enc.keep])
        last = int(enc.keep[-1]) + 1 if len(enc.keep) and max_packets is not None and not count_read else None
        skipped += skip_counts(enc, last)
        read += last if last is not None else len(enc.batch)
    if pcap.stats.truncated_tail:
        skipped[TRUNCATED_TAIL] += 1
    matrix = rows_out.matrix()
    ts_ns = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    trace = Trace(matrix, layout, ts_ns, label, str(pcap.path), idx if index is not None else None)
    return EncodeResult(trace, read, skipped)
