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


@lru_cache(maxsize=8)
def _byte_lut(fill: int) -> np.ndarray:
    """257 int64 words, each holding the 8 int8 bit values of a byte (MSB first); entry 256 is all ``fill``."""
    table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.int8)
    table = np.vstack([table, np.full((1, 8), fill, np.int8)])
    return np.ascontiguousarray(table).view(np.int64).ravel()


def _windows(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``data[s : s + width]`` for every start (absent starts give zeros, masked later)."""
    if len(data) < width + 1:
        data = np.concatenate([data, np.zeros(width + 1 - len(data), np.uint8)])
    view = np.lib.stride_tricks.sliding_window_view(data, width)
    return view[np.clip(starts, 0, len(view) - 1)]


def _block_bytes(
    batch: PacketBatch, loc: Located, keep: np.ndarray, block: str, payload: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, valid) of one block for the kept packets: both shaped (k, block bytes)."""
    d = batch.data
    if block == "payload":
        width, start = payload, loc.pay[keep]
        valid_len = np.minimum(loc.pay_len[keep], width)
    elif block == "eth":
        width, start = 14, loc.eth[keep]
        win = np.concatenate([_windows(d, start, 12), _windows(d, loc.ethertype_at[keep], 2)], axis=1)
        valid = np.broadcast_to((start >= 0)[:, None], win.shape)
        return win, valid
    else:
        width = BLOCKS[block].nbytes
        if block in ("ipv4", "ipv6"):
            present = loc.version[keep] == (4 if block == "ipv4" else 6)
            start, valid_len = loc.l3[keep], np.where(present, loc.ip_len[keep], 0)
        else:
            proto = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP}[block]
            present = loc.proto[keep] == proto
            start, valid_len = loc.l4[keep], np.where(present, loc.l4_len[keep], 0)
    win = _windows(d, start, width)
    j = np.arange(width)
    valid = j[None, :] < valid_len[:, None]
    end = loc.end[keep]
    if ((start + valid_len > end) & (valid_len > 0)).any():
        beyond = (start[:, None] + j[None, :]) >= end[:, None]
        if mode == "netdiff":
            valid = valid & ~beyond  # not captured: not on the wire as far as we know
        else:
            win = np.where(beyond, 0, win)  # nPrint reads uninitialised memory here; we read zeros
    return win, valid


def encode_batch(batch: PacketBatch, layout: Layout, mode: str = "netdiff", fill: int = -1) -> EncodedBatch:
    """Encode every parseable packet of a batch into rows of ``layout``."""
    loc = locate(batch.data, batch.offsets, batch.caplen, batch.linktype, mode)
    keep = np.flatnonzero(loc.reason == KEPT)
    parts, valids = [], []
    blocks = list(layout.blocks) + (["payload"] if layout.payload_bytes else [])
    for block in blocks:
        win, valid = _block_bytes(batch, loc, keep, block, layout.payload_bytes, mode)
        if block != "payload" and layout.drop:
            kb = _kept_bytes(block, layout.drop)
            win, valid = win[:, kb], valid[:, kb]
        parts.append(win)
        valids.append(valid)
    if not parts:
        return EncodedBatch(np.zeros((len(keep), 0), np.int8), keep, loc, batch)
    raw = np.concatenate(parts, axis=1).astype(np.uint16, order="C")
    valid = np.concatenate(valids, axis=1)
    if not valid.all():
        raw[~valid] = 256
    bits = np.take(_byte_lut(fill), raw).view(np.int8).reshape(len(keep), 8 * raw.shape[1])
    return EncodedBatch(bits, keep, loc, batch)


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
            enc = EncodedBatch(enc.matrix[:n], enc.keep[:n], enc.loc, enc.batch)
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
