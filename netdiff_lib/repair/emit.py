"""Checksums, frames and the pcap file image of a reconstructed trace, all in bulk.

Every packet is laid out from four parts: Ethernet header (14 bytes, unless raw IP), IP header, transport
header and payload (generated payload bytes where the layout carries them, zeros after).  The parts of all
packets sit in one padded ``(packets, 14 + 60 + 60 + payload)`` matrix with per-part lengths; per part, a
boolean mask and one fancy-index assignment scatter the bytes, behind 16-byte record headers, into a buffer
that already holds the pcap file header and zeros: the whole file is one array and one ``write``
(:class:`netdiff_lib.pcap.PcapWriter` takes per-packet ``bytes`` objects, which this path avoids).

Checksums are computed over the padded header matrices (:mod:`netdiff_lib.checksum`): the IPv4 header, and
TCP / UDP / ICMPv6 with their pseudo-headers, ICMPv4 without.  A zero payload adds nothing, so only its
length enters (through the pseudo-header length); carried payload bytes are summed as well.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from netdiff_lib import checksum
from netdiff_lib.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW

ETH_HDR = 14
ETHERTYPE = {4: 0x0800, 6: 0x86DD}
NEXT_HEADER = {0: 6, 1: 17, 2: 1}
PROTO_ICMPV6 = 58
_PCAP_HEADER = struct.Struct("<IHHiIII")
_NS = 1_000_000_000


def l4_protocol(family: np.ndarray, l4: np.ndarray) -> np.ndarray:
    """IP protocol / next header per packet: 6, 17, 1 (ICMP) or 58 (ICMP under IPv6)."""
    proto = np.array([NEXT_HEADER[i] for i in range(3)])[l4]
    return np.where((family == 6) & (l4 == 2), PROTO_ICMPV6, proto)


def fill_checksums(out: dict[str, np.ndarray], family: np.ndarray, l4: np.ndarray, l4_len: np.ndarray,
                   src: np.ndarray, dst: np.ndarray, payload: np.ndarray | None) -> None:
    """Write the IPv4 header checksum and the transport checksum of every packet into ``out``."""
    v4 = np.flatnonzero(family == 4)
    if len(v4):
        out["ipv4"][v4, 10:12] = 0
        ck = checksum.internet_checksum(out["ipv4"][v4])
        out["ipv4"][v4, 10], out["ipv4"][v4, 11] = ck >> 8, ck & 0xFF
    proto = l4_protocol(family, l4)
    a4 = src[:, :4].astype(np.uint64) @ (np.uint64(1) << np.array([24, 16, 8, 0], np.uint64))
    b4 = dst[:, :4].astype(np.uint64) @ (np.uint64(1) << np.array([24, 16, 8, 0], np.uint64))
    pseudo = np.where(family == 4, checksum.pseudo_v4(a4, b4, proto, l4_len),
                      checksum.pseudo_v6(src, dst, proto, l4_len))
    pseudo = np.where(proto == 1, 0, pseudo).astype(np.uint64)
    if payload is not None and payload.shape[1]:
        pseudo = pseudo + checksum.sum16(payload)
    for i, (block, at) in enumerate((("tcp", 16), ("udp", 6), ("icmp", 2))):
        rows = np.flatnonzero(l4 == i)
        if not len(rows):
            continue
        out[block][rows, at:at + 2] = 0
        ck = checksum.internet_checksum(out[block][rows], pseudo[rows])
        if block == "udp":
            ck = np.where(ck == 0, 0xFFFF, ck).astype(np.uint16)
        out[block][rows, at], out[block][rows, at + 1] = ck >> 8, ck & 0xFF


@dataclass
class Frames:
    """Packets as padded parts: ``parts`` (n, width) uint8 and ``part_len`` (n, k) over ``widths`` (k,)."""

    parts: np.ndarray
    part_len: np.ndarray
    widths: tuple[int, ...]
    linktype: int

    @property
    def length(self) -> np.ndarray:
        return self.part_len.sum(axis=1)

    def __len__(self) -> int:
        return len(self.parts)

    def slice(self, start: int, stop: int) -> Frames:
        """Packets ``start:stop`` (views)."""
        return Frames(self.parts[start:stop], self.part_len[start:stop], self.widths, self.linktype)

    def scatter(self, starts: np.ndarray, size: int, buf: np.ndarray | None = None) -> np.ndarray:
        """Lay every packet's bytes at ``starts[i]`` in a zero buffer of ``size`` bytes (or into ``buf``)."""
        buf = np.zeros(size, np.uint8) if buf is None else buf
        at, col = np.asarray(starts, np.int64).copy(), 0
        for k, width in enumerate(self.widths):
            if width:
                take = np.arange(width)[None, :] < self.part_len[:, k, None]
                dest = at[:, None] + np.arange(width)[None, :]
                buf[dest[take]] = self.parts[:, col:col + width][take]
            at += self.part_len[:, k]
            col += width
        return buf

    def packets(self) -> list[bytes]:
        lengths = self.length
        starts = (np.cumsum(lengths) - lengths).astype(np.int64)
        raw = self.scatter(starts, int(lengths.sum())).tobytes()
        return [raw[s:s + n] for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)]

    def pcap_image(self, ts_ns: np.ndarray, snaplen: int = 65535) -> np.ndarray:
        """The whole classic pcap file (microsecond timestamps, little-endian) as one uint8 array."""
        lengths = self.length.astype(np.int64)
        rec = 16 + lengths
        starts = 24 + np.cumsum(rec) - rec
        buf = np.zeros(24 + int(rec.sum()), np.uint8)
        buf[:24] = np.frombuffer(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, self.linktype), np.uint8)
        ts = np.asarray(ts_ns, np.int64)
        if len(ts) != len(lengths):
            raise ValueError(f"{len(lengths)} packets but {len(ts)} timestamps")
        if len(ts) and (ts.min() < 0 or ts.max() // _NS >= 1 << 32):
            raise ValueError("timestamps must lie in 0 .. 2**32 s (the classic pcap range)")
        head = np.empty((len(lengths), 4), "<u4")
        head[:, 0], head[:, 1] = ts // _NS, (ts % _NS) // 1000
        head[:, 2], head[:, 3] = lengths, lengths
        buf[(starts[:, None] + np.arange(16)[None, :]).reshape(-1)] = head.view(np.uint8).reshape(-1)
        return self.scatter(starts + 16, len(buf), buf)


def ethernet_header(src_mac: np.ndarray, dst_mac: np.ndarray, family: np.ndarray) -> np.ndarray:
    """(n, 14) Ethernet II headers."""
    eth = np.zeros((len(family), ETH_HDR), np.uint8)
    eth[:, 0:6], eth[:, 6:12] = dst_mac, src_mac
    etype = np.where(family == 6, ETHERTYPE[6], ETHERTYPE[4])
    eth[:, 12], eth[:, 13] = etype >> 8, etype & 0xFF
    return eth


def build_frames(out: dict[str, np.ndarray], family: np.ndarray, l4: np.ndarray, ip_hdr: np.ndarray,
                 l4_hdr: np.ndarray, payload: np.ndarray, carried: np.ndarray | None, ethernet: bool,
                 v6_ext: np.ndarray | None = None) -> Frames:
    """Frames from repaired blocks: ``out["eth"]`` in front when ``ethernet``, raw IP otherwise; ``v6_ext``
    (n, 8) follows the IPv6 header where ``ip_hdr`` counts it (a Hop-by-Hop header)."""
    n = len(family)
    v6 = (family == 6)[:, None]
    ext = np.zeros((n, 8), np.uint8) if v6_ext is None else v6_ext.astype(np.uint8)
    ip = np.where(v6, np.concatenate([out["ipv6"], ext, np.zeros((n, 12), np.uint8)], axis=1), out["ipv4"])
    l4b = np.where((l4 == 0)[:, None], out["tcp"], np.pad(np.where((l4 == 1)[:, None], out["udp"], out["icmp"]),
                                                          ((0, 0), (0, 52))))
    pay = carried if carried is not None else np.zeros((n, 0), np.uint8)
    parts = [ip, l4b, pay]
    lens = [ip_hdr, l4_hdr, np.minimum(payload, pay.shape[1]), payload - np.minimum(payload, pay.shape[1])]
    widths = [ip.shape[1], l4b.shape[1], pay.shape[1], 0]
    if ethernet:
        parts.insert(0, out["eth"])
        lens.insert(0, np.full(n, ETH_HDR))
        widths.insert(0, ETH_HDR)
    part_len = np.stack(lens, axis=1).astype(np.int64)
    linktype = LINKTYPE_ETHERNET if ethernet else LINKTYPE_RAW
    return Frames(np.concatenate(parts, axis=1), part_len, tuple(widths), linktype)
