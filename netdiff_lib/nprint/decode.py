"""nPrint matrix -> packets -> pcap (what ``nprint -N`` does, without its uninitialised payload).

Each header block contributes the bytes whose 8 bits are all on the wire (not the fill value); blocks are
laid out eth, IP, L4, payload; the packet is as long as the IP header says (IPv4 total length, IPv6 payload
length + 40) and payload bytes the matrix does not carry are zero.  Address fields that a layout dropped
(the NetDiffusion image layout) come out as zeros: give real addresses through reconstruction instead.
Assembly is vectorised: the header bytes of all packets are compacted with one mask and scattered into one
flat buffer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from netdiff_lib.errors import InputError
from netdiff_lib.pcap import PcapWriter
from netdiff_lib.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW
from netdiff_lib.schema import Layout, bits_to_uint
from netdiff_lib.trace import Trace

MAX_IP_LEN = 65535


@dataclass
class Packed:
    """Packets in one flat buffer: ``data[offsets[i] : offsets[i] + lengths[i]]``."""

    data: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    linktype: int

    def __len__(self) -> int:
        return len(self.offsets)

    def packets(self) -> list[bytes]:
        buf = self.data.tobytes()
        return [buf[o : o + n] for o, n in zip(self.offsets.tolist(), self.lengths.tolist(), strict=True)]


def _full(matrix: np.ndarray, layout: Layout) -> np.ndarray:
    """The matrix in ``layout.full`` (dropped address fields inserted as zero bits)."""
    if not layout.drop:
        return matrix
    out = np.zeros((len(matrix), layout.full.width), np.int8)
    for src, dst, width in _kept_runs(layout):  # a few slices copy faster than one fancy index
        out[:, dst:dst + width] = matrix[:, src:src + width]
    return out


@lru_cache(maxsize=16)
def _kept_runs(layout: Layout) -> tuple[tuple[int, int, int], ...]:
    """``(column in layout, column in layout.full, width)`` of each run of consecutive kept columns."""
    keep = np.asarray(layout.keep_index)
    breaks = np.flatnonzero(np.diff(keep) != 1) + 1
    starts = np.concatenate([[0], breaks])
    widths = np.diff(np.concatenate([starts, [len(keep)]]))
    return tuple((int(a), int(keep[a]), int(w)) for a, w in zip(starts, widths, strict=True))


_SIGN_BITS, _LOW_BITS = np.uint64(0x8080808080808080), np.uint64(0x0101010101010101)
_GATHER = np.uint64(0x8040201008040201)  # moves bit 8k to bit 63 - k, no two products overlapping


def _block_bytes(full: np.ndarray, layout: Layout, block: str) -> tuple[np.ndarray, np.ndarray]:
    """(bytes (n, nbytes), number of leading on-the-wire bytes (n,)) of one block."""
    span = layout.full.block_span(block) if block != "payload" else layout.full.span("payload")
    words = np.ascontiguousarray(full[:, span.slice]).view(np.uint64)  # 8 cells a word, the first cell lowest
    nbytes = span.bits // 8
    on_wire = (words & _SIGN_BITS) == 0  # a byte is on the wire when none of its 8 cells is < 0
    lead = np.where(on_wire.all(axis=1), nbytes, np.argmin(on_wire, axis=1))
    ones = words & _LOW_BITS & ~(words >> np.uint64(7))  # bit 8k set where cell k is 1 (-1 is 0xFF)
    return ((ones * _GATHER) >> np.uint64(56)).astype(np.uint8), lead  # cell k -> bit 7 - k of the top byte


def _field(full: np.ndarray, layout: Layout, name: str) -> np.ndarray:
    return bits_to_uint(full[:, layout.full.span(name).slice]).astype(np.int64)


def pack_matrix(matrix: np.ndarray, layout: Layout, ethernet: bool | None = None) -> Packed:
    """Pack every row into a packet (see the module docstring); Ethernet framing when the layout has eth bits."""
    full = _full(np.asarray(matrix, np.int8), layout)
    n = len(full)
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    eth = "eth" in layout.blocks if ethernet is None else ethernet
    if eth:
        pieces.append(_block_bytes(full, layout, "eth"))
    ip_total = np.zeros(n, np.int64)
    ip_hdr = np.zeros(n, np.int64)
    for block in ("ipv4", "ipv6"):
        if block in layout.blocks:
            b, lead = _block_bytes(full, layout, block)
            lead = np.where(lead >= 20 if block == "ipv4" else lead == 40, lead, 0)
            lead = np.where(ip_hdr > 0, 0, lead)  # one IP header per packet
            pieces.append((b, lead))
            total = _field(full, layout, "ipv4_tl") if block == "ipv4" else _field(full, layout, "ipv6_len") + 40
            ip_total = np.where(lead > 0, total, ip_total)
            ip_hdr = ip_hdr + lead
    l4_hdr = np.zeros(n, np.int64)
    for block in ("tcp", "udp", "icmp"):
        if block in layout.blocks:
            b, lead = _block_bytes(full, layout, block)
            lead = np.where(l4_hdr > 0, 0, lead)
            pieces.append((b, lead))
            l4_hdr = l4_hdr + lead
    if layout.payload_bytes:
        pieces.append(_block_bytes(full, layout, "payload"))
    head = np.concatenate([b for b, _ in pieces], axis=1) if pieces else np.zeros((n, 0), np.uint8)
    widths = [b.shape[1] for b, _ in pieces]
    mask = np.concatenate(
        [np.arange(w)[None, :] < lead[:, None] for w, (_, lead) in zip(widths, pieces, strict=True)], axis=1
    ) if pieces else np.zeros((n, 0), bool)
    head_len = mask.sum(axis=1)
    l2 = pieces[0][1] if eth else np.zeros(n, np.int64)
    wire = np.clip(ip_total, ip_hdr + l4_hdr, MAX_IP_LEN)
    length = np.maximum(head_len, l2 + np.where(ip_hdr > 0, wire, 0))
    offsets = (np.cumsum(length) - length).astype(np.int64)
    data = np.zeros(int(length.sum()), np.uint8)
    within = np.cumsum(mask, axis=1) - 1
    dest = (offsets[:, None] + within)[mask]
    data[dest] = head[mask]
    return Packed(data, offsets, length.astype(np.int64), LINKTYPE_ETHERNET if eth else LINKTYPE_RAW)


def ip_versions(packed: Packed) -> np.ndarray:
    """The version nibble of each packet's first IP byte (after the Ethernet header when framed); 0 if none."""
    l2 = 14 if packed.linktype == LINKTYPE_ETHERNET else 0
    has = packed.lengths > l2
    versions = np.zeros(len(packed), np.uint8)
    versions[has] = packed.data[packed.offsets[has] + l2] >> 4
    return versions


def decode_matrix(matrix: np.ndarray, layout: Layout) -> list[bytes]:
    """Rows -> packets (raw IP, or Ethernet frames when the layout has the eth block)."""
    return pack_matrix(matrix, layout).packets()


def _check_times(trace: Trace, name: str | Path) -> None:
    ts = trace.ts_ns
    if ts is not None and len(ts) and (ts.min() < 0 or ts.max() // 1_000_000_000 >= 1 << 32):
        raise InputError(name, f"timestamps from {ts.min() / 1e9:.6f} s to {ts.max() / 1e9:.6f} s "
                               "are outside what a pcap holds (0 .. 2**32 s since the epoch)")


def write_trace_pcap(path: str | Path, trace: Trace, zero_timestamps: bool = False) -> int:
    """Write a trace as a pcap (atomically), every row a packet (as ``nprint -N`` does); timestamps from the
    trace unless absent or ``zero_timestamps``."""
    if not zero_timestamps:
        _check_times(trace, trace.source or path)
    packed = pack_matrix(trace.matrix, trace.layout)
    ts = trace.ts_ns if trace.ts_ns is not None and not zero_timestamps else np.zeros(len(trace), np.int64)
    with PcapWriter(path, linktype=packed.linktype) as w:
        w.write_many(packed.packets(), ts)
    return len(packed)


@dataclass
class Decoded:
    """What :func:`decode_to_pcap` wrote: packets, and rows that became none (padding, no IP header)."""

    packets: int = 0
    padding: int = 0
    no_header: int = 0


def decode_to_pcap(path: str | Path, chunks: Iterable[Trace], name: str | Path,
                   is_packet: Callable[[np.ndarray, Layout], np.ndarray] | None = None) -> Decoded:
    """Decode a trace given in chunks of rows into one pcap, atomically, in memory bounded by a chunk.

    Rows that ``is_packet`` calls padding become no packet, nor do rows without a whole IP header (and no
    Ethernet bits), which would be empty frames.  Errors name the input ``name``; no packet at all is an
    :class:`InputError` ("nothing to write") and leaves no file.
    """
    done = Decoded()
    with contextlib.ExitStack() as stack:
        writer: PcapWriter | None = None
        for chunk in chunks:
            _check_times(chunk, name)
            keep = np.ones(len(chunk), bool) if is_packet is None else is_packet(chunk.matrix, chunk.layout)
            packed = pack_matrix(chunk.matrix[keep], chunk.layout)
            sent = packed.lengths > 0
            done.padding += int((~keep).sum())
            done.no_header += int((~sent).sum())
            if writer is None:
                writer = stack.enter_context(PcapWriter(path, linktype=packed.linktype))
            ts = chunk.ts_ns[keep][sent] if chunk.ts_ns is not None else np.zeros(int(sent.sum()), np.int64)
            writer.write_many([p for p, ok in zip(packed.packets(), sent.tolist(), strict=True) if ok], ts)
            done.packets += int(sent.sum())
        if not done.packets:
            raise InputError(name, nothing_to_write(done.padding + done.no_header, done.padding))
    return done


def nothing_to_write(rows: int, padding: int) -> str:
    """The cause of an input that gives no packet: no rows at all, or rows that are all padding."""
    if not rows:
        return "nothing to write: the file holds no packet rows"
    if padding == rows:
        return f"nothing to write: all {rows:,} rows are padding"
    return f"nothing to write: none of its {rows:,} rows holds a whole IP header ({padding:,} are padding)"
