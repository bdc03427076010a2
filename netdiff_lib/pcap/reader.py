"""Streaming pcap and pcapng reader that returns packets as numpy batches.

Design. The file is read in chunks of :data:`CHUNK_SIZE` bytes (never whole, never mmap); a record cut by a
chunk boundary is carried over into the next chunk. Parsing a chunk has two steps:

1. A tight pure-Python walk collects the byte position of each packet record: one precompiled
   ``struct.Struct.unpack_from`` per record, because each record's length gives the next record's position.
2. Everything else is done with numpy on all the records at once: the record headers are gathered into an
   ``(n, k)`` word matrix (classic: 16 bytes; pcapng: the first 32 bytes of each packet block), lengths are
   checked (the first bad record in file order is reported) and timestamps are converted to nanoseconds.
   Pieces are views into the chunk; joining them into a batch is the one copy of the packet bytes (record
   headers between packets included, followed by zero padding), and spent chunk buffers are reused.

The pcapng block walker is in :mod:`netdiff_lib.pcap.pcapng`, the batch type and shared record helpers in
:mod:`netdiff_lib.pcap.records`.

pcapng state (byte order, the interfaces of the current section with their link type, snaplen, ``if_tsresol``
and ``if_tsoffset``) only changes at section header and interface description blocks. The walk stops in front
of those blocks when it already holds packets, so every chunk piece is parsed under constant state. A piece
holds at most the packets still missing from the current batch; pieces are joined into :class:`PacketBatch`
objects, so memory is bounded by the batch size plus one chunk, not by the file.

A file that ends inside a record (real captures do) ends the stream cleanly after the last complete record
with ``stats.truncated_tail`` set. Structurally impossible records raise :class:`InputError` with the byte
offset. Simple Packet Blocks carry no timestamp: their ``ts_ns`` is 0. The classic header's ``thiszone`` is
ignored and a record longer than its snap length is cut to it, as libpcap does.

The input is opened once and read in one pass (header included), so a pipe, FIFO or ``/dev/stdin`` works.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from netdiff_lib.errors import InputError, os_cause
from netdiff_lib.pcap.pcapng import _PcapNg
from netdiff_lib.pcap.records import (
    _BOM_BYTES,
    _SHB,
    MAX_CAPLEN,
    PAD,
    PacketBatch,
    PcapStats,
    _make_piece,
    _records,
)

CHUNK_SIZE = 8 << 20
_CLASSIC_MAGIC = {0xA1B2C3D4: ("<", False), 0xD4C3B2A1: (">", False), 0xA1B23C4D: ("<", True),
                  0x4D3CB2A1: (">", True)}
_HOST_ORDER = "<" if sys.byteorder == "little" else ">"
_HEAD = 28  # bytes read to tell the format: a classic header and the start of a record, or a section header


class _Classic:
    """Record walker for classic pcap (16-byte record headers).

    As libpcap does, a record longer than the header's snap length (0 or more than ``MAX_CAPLEN`` read as
    ``MAX_CAPLEN``) is cut to it: the rest of its bytes are skipped.  Timestamps are read as the pcap format
    says (unsigned fields, full precision) or, with ``libpcap_time``, as libpcap hands them to nPrint: see
    :meth:`PcapFile.__init__`.
    """

    def __init__(self, path: Path, order: str, nano: bool, linktype: int, snaplen: int, stats: PcapStats,
                 libpcap_time: bool = False) -> None:
        self.path, self.stats, self.start = path, stats, 24
        self._u32 = struct.Struct(order + "I").unpack_from
        self._words = np.dtype(order + "u4")
        self._nano = nano
        self._linktype = linktype
        self._snap = snaplen if 0 < snaplen <= MAX_CAPLEN else MAX_CAPLEN
        # libpcap reads the fields as bpf_int32 from a file in the host's byte order, as unsigned when it swaps
        self._libpcap_time = libpcap_time
        self._time_dtype = np.dtype(order + ("i4" if libpcap_time and order == _HOST_ORDER else "u4"))

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
        caps = np.minimum(caps, self._snap)
        linktype = np.full(len(pos), self._linktype, np.int32)
        return _make_piece(a, pos + 16, caps, words[:, 3], self._timestamps(words), linktype, self.stats)

    def _timestamps(self, words: np.ndarray) -> np.ndarray:
        sec, frac = words[:, :2].view(self._time_dtype).astype(np.int64).T
        if not self._nano:
            return sec * 1_000_000_000 + frac * 1000
        if self._libpcap_time:  # libpcap opened for microseconds: nanoseconds / 1000, rounded toward zero (C)
            frac = np.sign(frac) * (np.abs(frac) // 1000) * 1000
        return sec * 1_000_000_000 + frac


class PcapFile:
    """A classic pcap or pcapng file, or a stream of one (pipe, FIFO, ``/dev/stdin``); the header is checked when
    the object is made.

    The input is opened once, here, and read in one pass by :meth:`batches`: a stream is never opened twice or
    sought.  A regular file may be passed over again (it is opened anew); a stream can be read once only.

    ``libpcap_time`` reads classic pcap timestamps as libpcap opened for microseconds hands them to nPrint:
    seconds and fraction as signed 32-bit fields in a file of the host's byte order (unsigned in a swapped
    one), nanoseconds cut to microseconds toward zero.  Without it they are read as the format says: unsigned,
    to the nanosecond.

    Attributes: ``path``, ``format`` ("pcap" | "pcapng"), ``byteorder`` ("<" | ">" of the first section),
    ``nanosecond`` (classic only), ``linktype`` and ``snaplen`` (classic header; None for pcapng), ``size``
    (bytes of a regular file; None for a stream), ``stats`` (:class:`PcapStats` of the latest :meth:`batches`
    run).
    """

    def __init__(self, path: str | Path, *, libpcap_time: bool = False) -> None:
        self.path = Path(path)
        self.stats = PcapStats()
        self.libpcap_time = libpcap_time
        self.linktype: int | None
        self.snaplen: int | None
        self.size: int | None
        self.linktype, self.snaplen, self.nanosecond = None, None, False
        self._fh: BinaryIO | None = None
        fh = self._open()
        try:
            st = os.fstat(fh.fileno())
            self.size = st.st_size if stat.S_ISREG(st.st_mode) else None
            head = self._read_head(fh)
        except BaseException:
            fh.close()
            raise
        self._fh, self._head = fh, head

    def _read_head(self, fh: BinaryIO) -> bytes:
        """The first bytes of the input, checked: a classic or pcapng header."""
        head = _read_upto(fh, _HEAD, self.path)
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
        return head

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "rb", buffering=0)  # unbuffered: a read returns what a pipe holds, no copy
        except OSError as e:
            raise InputError(self.path, os_cause(e, "cannot read file")) from None

    def close(self) -> None:
        """Close the input if :meth:`batches` has not read it (it closes it itself)."""
        fh, self._fh = getattr(self, "_fh", None), None
        if fh is not None:
            fh.close()

    def __del__(self) -> None:
        self.close()

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

    def _take_input(self) -> tuple[BinaryIO, bytes]:
        """The open input and the bytes already read from it: those of ``__init__`` on the first pass, the file
        opened anew on a later one (regular files only)."""
        fh, head = self._fh, self._head
        self._fh = None
        if fh is None:
            if self.size is None:
                raise InputError(self.path, "a pipe or FIFO can be read only once")
            fh = self._open()
            try:
                head = self._read_head(fh)
            except BaseException:
                fh.close()
                raise
        return fh, head

    def batches(self, batch_size: int = 65536, max_packets: int | None = None, *, start: int | None = None,
                stop: int | None = None) -> Iterator[PacketBatch]:
        """Stream the packets as :class:`PacketBatch` objects of ``batch_size`` packets (the last may be shorter).

        ``start``/``stop``: only the records from byte ``start`` up to byte ``stop`` (classic pcap files; both
        must be record boundaries, see :mod:`netdiff_lib.segment.split`)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.stats = stats = PcapStats()
        if self.format == "pcap":
            parser: _Classic | _PcapNg = _Classic(self.path, self.byteorder, self.nanosecond, self.linktype or 0,
                                                   self.snaplen or 0, stats, self.libpcap_time)
        else:
            parser = _PcapNg(self.path, stats)
        left = max_packets if max_packets is not None else 1 << 62
        pieces: list[PacketBatch] = []
        held = index = 0
        # Chunk buffers are reused once no unjoined piece refers to them (fresh memory costs page faults).
        spare: list[np.ndarray] = []
        pinned: list[np.ndarray] = []  # earlier chunks that pieces of the current batch still refer to
        cur_pinned = False  # whether a piece of the current batch refers to the current chunk
        fh, head = self._take_input()
        rest, base = memoryview(head)[parser.start:], parser.start  # the header's bytes are read already
        if start is not None or stop is not None:
            fh, rest, base = self._ranged(fh, parser.start if start is None else start, stop)
        with fh:
            buf, pos = _refill(fh, rest, 0, CHUNK_SIZE, spare, self.path) or rest, 0
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
                    more = _refill(fh, buf, pos, need, spare, self.path)
                    if more is None:
                        stats.truncated_tail = pos < len(buf)
                        break
                    if isinstance(buf.obj, np.ndarray) and buf.obj.base is not None:
                        (pinned if cur_pinned else spare).append(buf.obj.base)
                    cur_pinned = False
                    buf, base, pos = more, base + pos, 0
        if pieces:
            yield _join(pieces, index)


    def _ranged(self, fh: BinaryIO, start: int, stop: int | None) -> tuple[Any, memoryview, int]:
        if self.format != "pcap" or self.size is None:
            fh.close()
            raise ValueError(f"{self.path}: byte ranges need a classic pcap file")
        fh.seek(start)
        return (fh if stop is None else _Bounded(fh, stop - start)), memoryview(b""), start


class _Bounded:
    """An open file read from its position on, ``left`` bytes at most."""

    def __init__(self, fh: BinaryIO, left: int) -> None:
        self.fh, self.left = fh, left

    def readinto(self, view: memoryview) -> int:
        n = self.fh.readinto(view[:max(self.left, 0)]) if self.left > 0 else 0
        self.left -= n or 0
        return n or 0

    def __enter__(self) -> _Bounded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def _read_upto(fh: BinaryIO, n: int, path: Path) -> bytes:
    """``n`` bytes, fewer only at the end of the input (a pipe may hand them over in parts)."""
    out = b""
    try:
        while len(out) < n and (part := fh.read(n - len(out))):
            out += part
    except OSError as e:
        raise InputError(path, os_cause(e, "cannot read file")) from None
    return out


def _refill(fh: BinaryIO, buf: memoryview, pos: int, need: int, spare: list[np.ndarray],
            path: Path) -> memoryview | None:
    """``buf[pos:]`` followed by the next chunk (at least ``need`` bytes in all if the file has them), or None
    at the end of the file. The chunk is filled (a pipe hands it over in parts) unless the input ends first.
    The file is read straight into the new buffer (a spare one when one is large enough, else a new
    uninitialised one): one copy per byte. The result is a view of a whole buffer."""
    rest = len(buf) - pos
    size = rest + max(CHUNK_SIZE, need)
    new = next((b for b in spare if len(b) >= size), None)
    if new is None:
        new = np.empty(max(size, CHUNK_SIZE + (1 << 19)), np.uint8)
    else:
        spare.remove(new)
    new[:rest] = buf[pos:]
    view, got = memoryview(new)[rest:size], 0
    try:
        while got < len(view) and (n := fh.readinto(view[got:])):  # a pipe hands its data over in parts
            got += n
    except OSError as e:
        raise InputError(path, os_cause(e, "cannot read file")) from None
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
