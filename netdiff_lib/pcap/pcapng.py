"""pcapng block walker: sections, interfaces (link type, snaplen, ``if_tsresol``, ``if_tsoffset``) and packet
blocks (EPB, SPB and the obsolete PB), parsed a chunk at a time into :class:`PacketBatch` pieces."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from netdiff_lib.errors import InputError
from netdiff_lib.pcap.records import (
    _BOM_BYTES,
    _IDB,
    _PACKET_BLOCKS,
    _PB,
    _SHB,
    _SPB,
    MAX_BLOCK,
    MAX_CAPLEN,
    PacketBatch,
    PcapStats,
    _make_piece,
    _records,
    _section_length,
)


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
