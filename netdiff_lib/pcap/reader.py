"""Streaming pcap and pcapng reader that returns packets as numpy batches.

Design. The file is read in chunks of :data:`CHUNK_SIZE` bytes (never whole, never mmap); a record cut by a
chunk boundary is carried over into the next chunk. Parsing a chunk has two steps:

1. A tight pure-Python walk collects the byte position of each packet record: one precompiled
   ``struct.Struct.unpack_from`` per record, because each record's length gives the next record's position.
2. Everything else is done with numpy on all the records at once: the record headers are gathered into an
   ``(n, k)`` word matrix (classic: 16 bytes; pcapng: the first 32 bytes of each packet block), lengths are
   checked (the first bad record in file order is reported), timestamps are converted to nanoseconds, and the
   packet bytes are copied tightly into one array with a boolean mask built by ``np.repeat`` over alternating
   gap/packet runs (or, for large packets, one slice copy per packet, which is then cheaper).

pcapng state (byte order, the interfaces of the current section with their link type, snaplen, ``if_tsresol``
and ``if_tsoffset``) only changes at section header and interface description blocks. The walk stops in front
of those blocks when it already holds packets, so every chunk piece is parsed under constant state. A piece
holds at most the packets still missing from the current batch; pieces are joined into :class:`PacketBatch`
objects, so memory is bounded by the batch size plus one chunk, not by the file.

A file that ends inside a record (real captures do) ends the stream cleanly after the last complete record
with ``stats.truncated_tail`` set. Structurally impossible records raise :class:`InputError` with the byte
offset. Simple Packet Blocks carry no timestamp: their ``ts_ns`` is 0. The classic header's ``thiszone`` is
ignored, as libpcap does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from netdiff_lib.errors import InputError

CHUNK_SIZE = 8 << 20
#: Larger captured lengths are corrupt (libpcap's MAXIMUM_SNAPLEN).
MAX_CAPLEN = 262144
#: pcapng blocks longer than this are treated as corrupt rather than read into memory.
MAX_BLOCK = 16 << 20
#: Zero bytes after the last packet of a batch.
PAD = 64

_CLASSIC_MAGIC = {0xA1B2C3D4: ("<", False), 0xD4C3B2A1: (">", False), 0xA1B23C4D: ("<", True),
                  0x4D3CB2A1: (">", True)}
_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_BOM_BYTES = (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d")  # little-, big-endian sections
_PACKET_BLOCKS = frozenset({_EPB, _SPB, _PB})
_NO_INDEX = np.empty(0, np.int64)


@dataclass(eq=False)
class PacketBatch:
    """Packets of one batch: ``data[offsets[i]:offsets[i] + caplen[i]]`` is packet ``i`` (record ``index[i]``)."""

    data: np.ndarray
    offsets: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def packet(self, i: int) -> bytes:
        """The captured bytes of packet ``i`` of the batch."""
        start = int(self.offsets[i])
        return self.data[start:start + int(self.caplen[i])].tobytes()


@dataclass
class PcapStats:
    """Counters filled while :meth:`PcapFile.batches` runs (reset by each call)."""

    records: int = 0  # packet records returned
    bytes: int = 0  # their captured bytes
    truncated_tail: bool = False  # the file ends inside a record
    snaplen_truncated: int = 0  # records with caplen < wirelen
    sections: int = 0  # pcapng section header blocks
    interfaces: int = 0  # pcapng interface description blocks
    skipped_blocks: int = 0  # other pcapng blocks (name resolution, statistics, custom, ...)


def _gather(a: np.ndarray, starts: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A view of the chunk span holding the packets ``a[starts[i]:starts[i] + caps[i]]`` (copied by _join).

    Record headers between packets stay in the span (they belong to no packet), which makes the copy a single
    memcpy instead of a per-packet gather: consumers index packets through ``offsets`` and ``caplen`` only.
    """
    first, last = int(starts[0]), int(starts[-1] + caps[-1])
    return a[first:last], (starts - first).astype(np.int64)


def _make_piece(a: np.ndarray, starts: np.ndarray, caps: np.ndarray, wire: np.ndarray, ts: np.ndarray,
                linktype: np.ndarray, stats: PcapStats) -> PacketBatch:
    """A batch of the packets of one chunk, its data a view of the chunk (pieces are copied when joined)."""
    data, offsets = _gather(a, starts, caps)
    stats.records += len(starts)
    stats.bytes += int(caps.sum())
    stats.snaplen_truncated += int(np.count_nonzero(caps < wire))
    return PacketBatch(data, offsets, caps.astype(np.int32), wire.astype(np.int32), ts, linktype, _NO_INDEX)


def _records(buf: memoryview, size: int) -> np.ndarray:
    """A zero-copy view of ``buf`` as overlapping ``size``-byte items, one at every byte position."""
    return np.ndarray(shape=(len(buf) - size + 1,), dtype=f"V{size}", buffer=buf, strides=(1,))


def _section_length(buf: memoryview, pos: int) -> int:
    """Length of the section header block at ``pos``, read in its own byte order; 0 if the magic is bad."""
    bom = buf[pos + 8:pos + 12]
    if bom not in _BOM_BYTES:
        return 0
    return struct.unpack_from("<I" if bom[0] == 0x4D else ">I", buf, pos + 4)[0]


class _Classic:
    """Record walker for classic pcap (16-byte record headers)."""

    def __init__(self, path: Path, order: str, nano: bool, linktype: int, stats: PcapStats) -> None:
        self.path, self.stats, self.start = path, stats, 24
        self._u32 = struct.Struct(order + "I").unpack_from
        self._words = np.dtype(order + "u4")
        self._frac_ns = 1 if nano else 1000
        self._linktype = linktype

    def scan(self, buf: memoryview, pos: int, limit: int, base: int) -> tuple[PacketBatch | None, int, int]:
        """Parse up to ``limit`` records at ``buf[pos:]``; return (piece, next position, bytes needed there)."""
        n, unpack, walk = len(buf), self._u32, [pos]
        append, after_len = walk.append, memoryview(buf)[8:]  # caplen of the record at p: after_len[p:p+4]
        try:
            for _ in range(limit):
                if (pos := pos + 16 + unpack(after_len, pos)[0]) > n:
                    break
                append(pos)
        except struct.error:  # fewer than 12 bytes left
            pos = walk[-1] + 16
        need = pos - walk[-1] if len(walk) <= limit else 0
        piece = self._piece(buf, np.array(walk, np.int64)[:-1], base) if len(walk) > 1 else None
        if need > 16 + MAX_CAPLEN:
            raise InputError(self.path, f"corrupt record at byte {base + walk[-1]}: caplen {need - 16}")
        return piece, walk[-1], need

    def _piece(self, buf: memoryview, pos: np.ndarray, base: int) -> PacketBatch:
        a = np.frombuffer(buf, np.uint8)
        words = _records(buf, 16)[pos].view(self._words).reshape(-1, 4)
        caps = words[:, 2]
        if (caps > MAX_CAPLEN).any():
            i = int(np.argmax(caps > MAX_CAPLEN))
            raise InputError(self.path, f"corrupt record at byte {base + pos[i]}: caplen {caps[i]} > {MAX_CAPLEN}")
        ts = words[:, 0].astype(np.int64) * 1_000_000_000 + words[:, 1].astype(np.int64) * self._frac_ns
        linktype = np.full(len(pos), self._linktype, np.int32)
        return _make_piece(a, pos + 16, caps, words[:, 3], ts, linktype, self.stats)


def _ticks_to_ns(ticks: np.ndarray, tsresol: int) -> np.ndarray:
    """pcapng timestamp units (``if_tsresol`` byte: 10**-v or, with the top bit, 2**-v s) -> int64 ns."""
    v = tsresol & 0x7F
    if tsresol & 0x80:
        sec, frac = ticks >> np.uint64(v), ticks & np.uint64((1 << v) - 1)
        if v > 32:
            frac, v = frac >> np.uint64(v - 32), 32
        frac_ns = (frac * np.uint64(10**9)) >> np.uint64(v)
    elif v <= 9:
        return (ticks * np.uint64(10 ** (9 - v))).astype(np.int64)
    else:
        sec, frac = ticks // np.uint64(10**v), ticks % np.uint64(10**v)
        frac_ns = frac // np.uint64(10 ** (v - 9))
    return sec.astype(np.int64) * 1_000_000_000 + frac_ns.astype(np.int64)


class _PcapNg:
    """Block walker for pcapng; keeps the byte order and interfaces of the current section."""

    def __init__(self, path: Path, stats: PcapStats) -> None:
        self.path, self.stats, self.start = path, stats, 0
        self._set_order("<")
        self.section_base = 0
        # Per interface over the whole file: link type, snaplen, if_tsresol byte, if_tsoffset seconds.
        self.ifaces: list[tuple[int, int, int, int]] = []

    def _set_order(self, order: str) -> None:
        self.order = order
        self._hdr = struct.Struct(order + "II").unpack_from
        self._words = np.dtype(order + "u4")

    def _fail(self, at: int, cause: str) -> InputError:
        return InputError(self.path, f"corrupt pcapng block at byte {at}: {cause}")

    def scan(self, buf: memoryview, pos: int, limit: int, base: int) -> tuple[PacketBatch | None, int, int]:
        """Parse blocks at ``buf[pos:]`` until ``limit`` packets; return (piece, next position, bytes needed)."""
        n, recs, need = len(buf), [], 0
        append, hdr, packet_blocks = recs.append, self._hdr, _PACKET_BLOCKS
        for _ in range(limit):
            if pos + 12 > n:
                need = 12
                break
            btype, blen = hdr(buf, pos)
            if btype in packet_blocks:
                if pos + blen > n:
                    need = blen
                    break
                append(pos)
                pos += blen
                continue
            if btype == _SHB:
                blen = _section_length(buf, pos)
            problem = self._problem(buf, pos, btype, blen)
            if recs and (problem or btype in (_SHB, _IDB)):
                break  # first parse the packets collected so far: under the current state, errors in file order
            if problem:
                raise self._fail(base + pos, problem)
            if pos + blen > n:
                need = blen
                break
            self._meta_block(buf, pos, btype, blen, base)
            hdr = self._hdr
            pos += blen
        piece = self._piece(buf, np.array(recs, np.int64), base) if recs else None
        if need % 4 or need > MAX_BLOCK:
            raise self._fail(base + pos, f"bad block length {need}")
        return piece, pos, need

    def _problem(self, buf: memoryview, pos: int, btype: int, blen: int) -> str | None:
        """Why the non-packet block at ``pos`` is corrupt, or None."""
        if btype == _SHB and blen == 0:
            return f"bad section byte-order magic {buf[pos + 8:pos + 12].hex()}"
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            return f"bad block length {blen}"
        if pos + blen <= len(buf):
            order = ("<" if buf[pos + 8] == 0x4D else ">") if btype == _SHB else self.order
            trailer = struct.unpack_from(order + "I", buf, pos + blen - 4)[0]
            if trailer != blen:
                return f"bad block length {blen} (trailer {trailer})"
        return None

    def _meta_block(self, buf: memoryview, pos: int, btype: int, blen: int, base: int) -> None:
        if btype == _SHB:
            self._set_order("<" if buf[pos + 8:pos + 12] == _BOM_BYTES[0] else ">")
            major = struct.unpack_from(self.order + "H", buf, pos + 12)[0]
            if blen < 28 or major != 1:
                raise self._fail(base + pos, f"section header length {blen}, version {major} (want >= 28, 1)")
            self.section_base = len(self.ifaces)
            self.stats.sections += 1
        if btype == _IDB:
            if blen < 20:
                raise self._fail(base + pos, f"interface description length {blen} < 20")
            linktype, snaplen = struct.unpack_from(self.order + "HxxI", buf, pos + 8)
            tsresol, tsoffset = self._if_options(buf, pos + 16, pos + blen - 4)
            if (tsresol & 0x7F) > (63 if tsresol & 0x80 else 19) or abs(tsoffset) >= 1 << 33:
                raise self._fail(base + pos, f"unsupported if_tsresol {tsresol} or if_tsoffset {tsoffset}")
            self.ifaces.append((linktype, snaplen, tsresol, tsoffset))
            self.stats.interfaces += 1
        elif btype != _SHB:
            self.stats.skipped_blocks += 1

    def _if_options(self, buf: memoryview, pos: int, end: int) -> tuple[int, int]:
        """``if_tsresol`` (default 6: microseconds) and ``if_tsoffset`` (seconds) from IDB options."""
        tsresol, tsoffset = 6, 0
        while pos + 4 <= end:
            code, length = struct.unpack_from(self.order + "HH", buf, pos)
            if code == 0 or pos + 4 + length > end:
                break
            if code == 9 and length == 1:
                tsresol = buf[pos + 4]
            elif code == 14 and length == 8:
                tsoffset = struct.unpack_from(self.order + "q", buf, pos + 4)[0]
            pos += 4 + length + (-length % 4)
        return tsresol, tsoffset

    def _piece(self, buf: memoryview, pos: np.ndarray, base: int) -> PacketBatch:
        a = np.frombuffer(buf, np.uint8)
        # A Simple Packet Block may be shorter than 32 bytes: pad the chunk only when one ends near its end.
        padded = buf if pos[-1] + 32 <= len(buf) else np.concatenate([a, np.zeros(32, np.uint8)])
        head = _records(padded, 32)[pos].view(np.uint8).reshape(-1, 32)
        words = head.view(self._words)
        btype, blen = words[:, 0], words[:, 1].astype(np.int64)
        spb, pb = btype == _SPB, btype == _PB
        trailer = _records(buf, 4)[pos + blen - 4].view(self._words)
        ifid = np.where(spb, 0, np.where(pb, head[:, 8:10].view(self.order + "u2")[:, 0], words[:, 2]))
        nif = len(self.ifaces) - self.section_base
        gid = self.section_base + np.minimum(ifid, max(nif - 1, 0)).astype(np.int64)
        info = np.array([*self.ifaces, (0, 0, 6, 0)], np.int64)  # the last row keeps ``gid`` in range
        room = blen - np.where(spb, 16, 32)
        wire = np.where(spb, words[:, 2], words[:, 6])
        snap = np.where(info[gid, 1] > 0, info[gid, 1], MAX_CAPLEN)
        caps = np.where(spb, np.minimum(np.minimum(wire, snap), room), words[:, 5])
        problems = [  # (records, cause of record i); the first bad record in file order is reported
            ((room < 0) | (blen % 4 != 0) | (trailer != blen), lambda i: f"bad block length {blen[i]} "
                                                                         f"(trailer {trailer[i]})"),
            (ifid >= nif, lambda i: f"interface {ifid[i]} not described ({nif})"),
            ((caps > room) | (caps > MAX_CAPLEN), lambda i: f"caplen {caps[i]} exceeds the block or {MAX_CAPLEN}"),
        ]
        bad = np.stack([m for m, _ in problems])
        if bad.any():
            i = int(np.argmax(bad.any(axis=0)))
            raise self._fail(base + int(pos[i]), problems[int(np.argmax(bad[:, i]))][1](i))
        ts = self._timestamps(words, gid, spb, info)
        return _make_piece(a, pos + np.where(spb, 12, 28), caps, wire, ts, info[gid, 0].astype(np.int32),
                           self.stats)

    @staticmethod
    def _timestamps(words: np.ndarray, gid: np.ndarray, spb: np.ndarray, info: np.ndarray) -> np.ndarray:
        ticks = (words[:, 3].astype(np.uint64) << np.uint64(32)) | words[:, 4].astype(np.uint64)
        g0 = int(gid[0])
        if not spb.any() and (gid == g0).all():
            return _ticks_to_ns(ticks, int(info[g0, 2])) + int(info[g0, 3]) * 1_000_000_000
        ts = np.zeros(len(gid), np.int64)
        for g in np.unique(gid):
            sel = (gid == g) & ~spb
            ts[sel] = _ticks_to_ns(ticks[sel], int(info[g, 2])) + int(info[g, 3]) * 1_000_000_000
        return ts


class PcapFile:
    """A classic pcap or pcapng file; the header is checked when the object is made.

    Attributes: ``path``, ``format`` ("pcap" | "pcapng"), ``byteorder`` ("<" | ">" of the first section),
    ``nanosecond`` (classic only), ``linktype`` and ``snaplen`` (classic header; None for pcapng),
    ``stats`` (:class:`PcapStats` of the latest :meth:`batches` run).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.stats = PcapStats()
        self.linktype: int | None
        self.snaplen: int | None
        self.linktype, self.snaplen, self.nanosecond = None, None, False
        with self._open() as fh:
            head = fh.read(28)
        if not head:
            raise InputError(self.path, "empty file (no pcap header)")
        if len(head) < 4:
            raise InputError(self.path, f"truncated header ({len(head)} bytes)")
        magic = struct.unpack_from("<I", head)[0]
        if magic in _CLASSIC_MAGIC:
            self._classic_header(head, *_CLASSIC_MAGIC[magic])
        elif magic == _SHB:
            self._pcapng_header(head)
        else:
            raise InputError(self.path, f"not a pcap or pcapng file: magic {head[:4].hex()}{_magic_hint(head)}")

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise InputError(self.path, f"cannot read file: {e.strerror or e}") from e

    def _classic_header(self, head: bytes, order: str, nano: bool) -> None:
        if len(head) < 24:
            raise InputError(self.path, f"truncated pcap global header ({len(head)} of 24 bytes)")
        major, _minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(order + "HHiIII", head, 4)
        if major != 2:
            raise InputError(self.path, f"unsupported pcap version {major}")
        self.format, self.byteorder, self.nanosecond = "pcap", order, nano
        self.snaplen, self.linktype = snaplen, network & 0x03FFFFFF  # upper bits: FCS length and flag

    def _pcapng_header(self, head: bytes) -> None:
        if len(head) < 28:
            raise InputError(self.path, f"truncated pcapng section header ({len(head)} of 28 bytes)")
        bom = head[8:12]
        if bom not in _BOM_BYTES:
            raise InputError(self.path, f"pcapng section header has a bad byte-order magic {bom.hex()}")
        self.format, self.byteorder = "pcapng", "<" if bom[0] == 0x4D else ">"

    def batches(self, batch_size: int = 65536, max_packets: int | None = None) -> Iterator[PacketBatch]:
        """Stream the packets as :class:`PacketBatch` objects of ``batch_size`` packets (the last may be shorter)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.stats = stats = PcapStats()
        if self.format == "pcap":
            parser: _Classic | _PcapNg = _Classic(self.path, self.byteorder, self.nanosecond, self.linktype or 0,
                                                   stats)
        else:
            parser = _PcapNg(self.path, stats)
        left = max_packets if max_packets is not None else 1 << 62
        pieces: list[PacketBatch] = []
        held = index = 0
        # Chunk buffers are reused once no unjoined piece refers to them (fresh memory costs page faults).
        spare: list[np.ndarray] = []
        pinned: list[np.ndarray] = []  # earlier chunks that pieces of the current batch still refer to
        cur_pinned = False  # whether a piece of the current batch refers to the current chunk
        with self._open() as fh:
            fh.seek(parser.start)
            buf, pos, base = _refill(fh, memoryview(b""), 0, CHUNK_SIZE, spare) or memoryview(b""), 0, parser.start
            while left > 0:
                piece, pos, need = parser.scan(buf, pos, min(batch_size - held, left), base)
                if piece is not None:
                    pieces.append(piece)
                    cur_pinned = True
                    held += len(piece.offsets)
                    left -= len(piece.offsets)
                    if held == batch_size:
                        batch = _join(pieces, index)
                        index += held
                        pieces, held, piece, cur_pinned = [], 0, None, False
                        spare += pinned
                        pinned = []
                        yield batch
                if need:
                    more = _refill(fh, buf, pos, need, spare)
                    if more is None:
                        stats.truncated_tail = pos < len(buf)
                        break
                    if isinstance(buf.obj, np.ndarray) and buf.obj.base is not None:
                        (pinned if cur_pinned else spare).append(buf.obj.base)
                    cur_pinned = False
                    buf, base, pos = more, base + pos, 0
        if pieces:
            yield _join(pieces, index)


def _refill(fh: BinaryIO, buf: memoryview, pos: int, need: int, spare: list[np.ndarray]) -> memoryview | None:
    """``buf[pos:]`` followed by the next chunk (at least ``need`` bytes in all if the file has them), or None
    at the end of the file. The file is read straight into the new buffer (a spare one when one is large
    enough, else a new uninitialised one): one copy per byte. The result is a view of a whole buffer."""
    rest = len(buf) - pos
    size = rest + max(CHUNK_SIZE, need)
    new = next((b for b in spare if len(b) >= size), None)
    if new is None:
        new = np.empty(max(size, CHUNK_SIZE + (1 << 19)), np.uint8)
    else:
        spare.remove(new)
    new[:rest] = buf[pos:]
    got = fh.readinto(memoryview(new)[rest:size])
    if not got:
        spare.append(new)
        return None
    return memoryview(new[:rest + got])


def _join(pieces: list[PacketBatch], index: int) -> PacketBatch:
    """One batch of the pieces: their chunk spans copied side by side, then ``PAD`` zero bytes."""
    sizes = [len(p.data) for p in pieces]
    total = sum(sizes)
    data = np.empty(total + PAD, np.uint8)
    data[total:] = 0
    s = 0
    for p, size in zip(pieces, sizes, strict=True):
        data[s:s + size] = p.data
        s += size
    if len(pieces) == 1:
        offsets = pieces[0].offsets
    else:
        starts = np.cumsum([0, *sizes[:-1]])
        offsets = np.concatenate([p.offsets + s for p, s in zip(pieces, starts, strict=True)])
    cat = {k: np.concatenate([getattr(p, k) for p in pieces]) for k in ("caplen", "wirelen", "ts_ns", "linktype")}
    return PacketBatch(data, offsets, index=np.arange(index, index + len(offsets), dtype=np.int64), **cat)


def _magic_hint(head: bytes) -> str:
    if head[:4] in (b"\xa1\xb2\xcd\x34", b"\x34\xcd\xb2\xa1"):
        return " (modified/Kuznetzov pcap, not supported)"
    if head[:2] == b"\x1f\x8b":
        return " (gzip-compressed: decompress it first)"
    if all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return f" (text file starting {head[:16].decode('ascii')!r})"
    return ""
