"""Recorded captures replayed on a new time line: parsing, address and port rewriting with checksums fixed.

Two users: the tests' long captures (:func:`merge`: recorded samples laid one after another, optionally with
IPv4 addresses rewritten) and the long-capture builder (:mod:`benchmarks.long_capture`: the same captures
replayed many times, each replay a :class:`Recording` given new addresses and ports by :meth:`Recording.replay`).

A :class:`Recording` parses each packet once (Ethernet; IPv4, IPv6 with extension headers, ARP) and keeps, per
packet, where its addresses, ports and checksums are and the ones'-complement sum of everything the checksums
cover except the addresses and ports (RFC 1071; :mod:`netdiff_lib.checksum`). A replay then writes new
addresses and ports and finishes each checksum from that sum plus the new words, so every IPv4 header, TCP, UDP
and ICMPv6 checksum of the output is right, also where the recording held offloaded (unfinished) ones; a
truncated or fragmented packet gets its checksum updated incrementally (RFC 1624) instead.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdiff_lib.checksum import sum16
from netdiff_lib.pcap import LINKTYPE_ETHERNET, PcapFile, PcapWriter

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "captures"
NS = 1_000_000_000
EXT_HEADERS = (0, 43, 60)  # IPv6 hop-by-hop, routing, destination options
FLOW_PROTOS = (1, 6, 17, 58)  # what netdiff's encoder keeps (58 counts as ICMP)
PORT_LO, PORT_SPAN = 32768, 28232  # Linux's ephemeral range, 32768..60999: shifted ports stay in it


@dataclass(frozen=True)
class Packet:
    data: bytes
    ts: int
    part: int  # which merged capture it came from
    proto: int
    src: str
    dst: str
    sport: int
    dport: int

    @property
    def flow(self) -> tuple:
        """Bidirectional 5-tuple (ports only for TCP/UDP)."""
        ports = (self.sport, self.dport) if self.proto in (6, 17) else (0, 0)
        a, b = (self.src, ports[0]), (self.dst, ports[1])
        return (self.proto, *min(a, b), *max(a, b))


def _ip_text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def parse(data: bytes) -> tuple[int, str, str, int, int]:
    """``(proto, src, dst, sport, dport)`` of an Ethernet frame carrying IPv4 or IPv6 (ICMPv6 as 1)."""
    ethertype = struct.unpack_from("!H", data, 12)[0]
    if ethertype == 0x0800:
        ihl = (data[14] & 0x0F) * 4
        proto, src, dst, l4 = data[23], _ip_text(data[26:30]), _ip_text(data[30:34]), 14 + ihl
    elif ethertype == 0x86DD:
        (proto, l4), src, dst = _v6_upper(data), _ip_text(data[22:38]), _ip_text(data[38:54])
        proto = 1 if proto == 58 else proto
    else:
        raise ValueError(f"ethertype {ethertype:#x}")
    sport, dport = struct.unpack_from("!HH", data, l4) if proto in (6, 17) else (0, 0)
    return proto, src, dst, sport, dport


def rewrite_v4(data: bytes, src: str, dst: str) -> bytes:
    """The frame with its IPv4 source and destination replaced (IPv6 frames unchanged)."""
    if struct.unpack_from("!H", data, 12)[0] != 0x0800:
        return data
    out = bytearray(data)
    out[26:30], out[30:34] = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    return bytes(out)


Rewrite = Callable[[bytes], bytes]


def read(path: Path) -> list[tuple[bytes, int]]:
    pcap = PcapFile(path)
    assert pcap.linktype == LINKTYPE_ETHERNET
    return [(b.packet(i), int(b.ts_ns[i])) for b in pcap.batches() for i in range(len(b))]


def merge(out: Path, parts: list[tuple[str, int] | tuple[str, int, Rewrite]]) -> list[Packet]:
    """Write ``(sample, start_ns[, rewrite])`` parts as one capture ``out``; return its packets in file order.

    ``sample`` is a path under samples/captures (``"dns/dns_01.pcap"``) or an absolute path; each part's first
    packet is put at ``start_ns`` and the others keep their offsets from it."""
    packets = []
    for n, part in enumerate(parts):
        name, start = part[0], part[1]
        change = part[2] if len(part) > 2 else None
        frames = read(SAMPLES / name)
        first = frames[0][1]
        for data, ts in frames:
            data = change(data) if change else data
            packets.append(Packet(data, start + ts - first, n, *parse(data)))
    packets.sort(key=lambda p: p.ts)
    with PcapWriter(out, nanosecond=True) as w:
        for p in packets:
            w.write(p.data, p.ts)
    return packets


def flows(packets: list[Packet]) -> dict[tuple, list[Packet]]:
    """Packets by bidirectional 5-tuple, in time order."""
    out: dict[tuple, list[Packet]] = defaultdict(list)
    for p in packets:
        out[p.flow].append(p)
    return dict(out)


# -- replays with new addresses and ports ---------------------------------------------------------------------

_LOCAL_V4 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
                                                  "169.254.0.0/16", "100.64.0.0/10")]
_LOCAL_V6 = [ipaddress.ip_network(n) for n in ("fe80::/10", "fc00::/7", "::1/128")]


def words(raw: bytes) -> int:
    """Sum of the big-endian 16-bit words of an address (or any even-length bytes)."""
    return sum(struct.unpack(f"!{len(raw) // 2}H", raw))


def fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _neg(value: int) -> int:
    return 0xFFFF - value


def rewritable(raw: bytes) -> bool:
    """A local unicast address (private, loopback, link-local, unique local) that a replay gives a new value."""
    ip = ipaddress.ip_address(raw)
    return any(ip in net for net in (_LOCAL_V4 if ip.version == 4 else _LOCAL_V6))


@dataclass
class Info:
    """Where a packet's addresses, ports and checksums are, and the sums that finish its checksums."""

    kind: int  # 4, 6 (IP version) or 0 (ARP)
    at: tuple[int, int]  # offsets of the source and destination address
    addr: tuple[int, int]  # their indices in the recording's address table
    ip_sum: int | None = None  # IPv4 header sum without checksum and addresses
    ports_at: int = -1  # offset of the source port (TCP/UDP), -1 for none
    ports: tuple[int, int] = (0, 0)
    csum_at: int = -1  # offset of the TCP/UDP/ICMPv6 checksum, -1 when it is left alone
    l4_sum: int = 0  # what the checksum covers but the addresses and ports (or RFC 1624's ~old + -old words)
    udp: bool = False


@dataclass
class Flow:
    """A bidirectional flow of a recording: originator first; offsets in ns from the recording's start."""

    proto: int
    a: tuple[int, int]  # (address index, port) of the originator
    b: tuple[int, int]
    first: int
    last: int
    packets: list[int] = field(default_factory=lambda: [0, 0])  # forward, backward
    octets: list[int] = field(default_factory=lambda: [0, 0])


class Recording:
    """One recorded capture, parsed once, replayed many times (:meth:`replay`)."""

    def __init__(self, path: Path, label: str) -> None:
        pcap = PcapFile(path)
        if pcap.linktype != LINKTYPE_ETHERNET:
            raise ValueError(f"{path}: link type {pcap.linktype}, only Ethernet captures are replayed")
        self.path, self.label = path, label
        self.data: list[bytes] = []
        wire, ts = [], []
        for b in pcap.batches():
            self.data += [b.packet(i) for i in range(len(b))]
            wire.append(b.wirelen)
            ts.append(b.ts_ns)
        if not self.data:
            raise ValueError(f"{path}: no packets")
        stamps = np.concatenate(ts).astype(np.int64)
        order = np.argsort(stamps, kind="stable")
        self.data = [self.data[i] for i in order]
        self.wirelen = np.concatenate(wire)[order]
        self.offsets = stamps[order] - stamps[order[0]]
        self.addrs: list[bytes] = []
        self._index: dict[bytes, int] = {}
        self.info = [self._parse(d) for d in self.data]
        self.local = [rewritable(a) for a in self.addrs]
        self.flows = self._flows()

    @property
    def duration_ns(self) -> int:
        return int(self.offsets[-1])

    def _addr(self, raw: bytes) -> int:
        if raw not in self._index:
            self._index[raw] = len(self.addrs)
            self.addrs.append(raw)
        return self._index[raw]

    def _parse(self, d: bytes) -> Info | None:
        if len(d) < 14:
            return None
        ethertype = struct.unpack_from("!H", d, 12)[0]
        if ethertype == 0x0806 and len(d) >= 42 and d[14:20] == b"\x00\x01\x08\x00\x06\x04":  # Ethernet/IPv4 ARP
            return Info(0, (28, 38), (self._addr(d[28:32]), self._addr(d[38:42])))
        if ethertype == 0x0800 and len(d) >= 34 and d[14] >> 4 == 4:
            return self._v4(d)
        if ethertype == 0x86DD and len(d) >= 54 and d[14] >> 4 == 6:
            return self._v6(d)
        return None

    def _v4(self, d: bytes) -> Info:
        ihl = (d[14] & 0x0F) * 4
        head = bytearray(d[14:14 + ihl])
        head[10:12], head[12:20] = b"\x00\x00", b"\x00" * 8
        info = Info(4, (26, 30), (self._addr(d[26:30]), self._addr(d[30:34])),
                    ip_sum=int(sum16(np.frombuffer(bytes(head), np.uint8)[None])[0]))
        total, frag, proto = struct.unpack_from("!H", d, 16)[0], struct.unpack_from("!H", d, 20)[0], d[23]
        if proto in (6, 17) and frag & 0x1FFF == 0:  # a first fragment has the header, not the whole segment
            whole = frag & 0x2000 == 0 and len(d) >= 14 + total
            self._l4(info, d, 14 + ihl, proto, 14 + total, whole, v6=False)
        return info

    def _v6(self, d: bytes) -> Info:
        info = Info(6, (22, 38), (self._addr(d[22:38]), self._addr(d[38:54])))
        nh, l4 = _v6_upper(d)
        end = 54 + struct.unpack_from("!H", d, 18)[0]
        if nh in (6, 17, 58):
            self._l4(info, d, l4, nh, end, len(d) >= end, v6=True)
        return info

    def _l4(self, info: Info, d: bytes, l4: int, proto: int, end: int, whole: bool, v6: bool) -> None:
        """Fill the L4 part of ``info``: ports, checksum offset and the sum that finishes the checksum."""
        at = l4 + {6: 16, 17: 6, 58: 2}[proto]
        if len(d) < at + 2:
            return
        info.udp = proto == 17
        if proto in (6, 17):
            info.ports_at, info.ports = l4, struct.unpack_from("!HH", d, l4)
        old = struct.unpack_from("!H", d, at)[0]
        if info.udp and not v6 and old == 0:
            return  # IPv4 UDP without a checksum stays without one
        info.csum_at = at
        if whole:
            seg = bytearray(d[l4:end])
            seg[at - l4:at - l4 + 2] = b"\x00\x00"
            if proto in (6, 17):
                seg[0:4] = b"\x00" * 4
            length = end - l4
            info.l4_sum = int(sum16(np.frombuffer(bytes(seg), np.uint8)[None])[0]) + proto + (
                length >> 16) + (length & 0xFFFF)
        else:  # RFC 1624: ~old plus the one's complement of every word that changes
            info.l4_sum = _neg(old) + sum(_neg(w) for w in (*info.ports, *self._words_of(d, info)))

    @staticmethod
    def _words_of(d: bytes, info: Info) -> tuple[int, ...]:
        n = 4 if info.kind == 4 else 16
        raw = d[info.at[0]:info.at[0] + n] + d[info.at[1]:info.at[1] + n]
        return struct.unpack(f"!{len(raw) // 2}H", raw)

    def _flows(self) -> list[Flow]:
        out: dict[tuple, Flow] = {}
        for d, info, off in zip(self.data, self.info, self.offsets.tolist(), strict=True):
            if info is None or info.kind == 0:
                continue
            proto = d[23] if info.kind == 4 else _v6_upper(d)[0]
            if proto not in FLOW_PROTOS:
                continue
            proto = 1 if proto == 58 else proto
            ports = info.ports if proto in (6, 17) else (0, 0)
            a, b = (info.addr[0], ports[0]), (info.addr[1], ports[1])
            key = (proto, *min(a, b), *max(a, b))
            flow = out.get(key)
            if flow is None:
                flow = out[key] = Flow(proto, a, b, off, off)
            back = int(a != flow.a)
            flow.last = off
            flow.packets[back] += 1
            flow.octets[back] += len(d)
        return list(out.values())

    def replay(self, new_addrs: list[bytes], port: Callable[[int], int]) -> list[bytes]:
        """The packets with address ``i`` of the table replaced by ``new_addrs[i]`` and ports mapped by ``port``
        (both bijections, so flows stay flows), every checksum finished for the new values."""
        sums = [words(a) for a in new_addrs]
        out = []
        for d, info in zip(self.data, self.info, strict=True):
            if info is None:
                out.append(d)
                continue
            buf = bytearray(d)
            (sa, da), (si, di) = info.at, info.addr
            n = len(new_addrs[si])
            buf[sa:sa + n], buf[da:da + n] = new_addrs[si], new_addrs[di]
            if info.ip_sum is not None:
                struct.pack_into("!H", buf, 24, _neg(fold(info.ip_sum + sums[si] + sums[di])))
            ports = info.ports
            if info.ports_at >= 0:
                ports = (port(ports[0]), port(ports[1]))
                struct.pack_into("!HH", buf, info.ports_at, *ports)
            if info.csum_at >= 0:
                value = _neg(fold(info.l4_sum + sums[si] + sums[di] + ports[0] + ports[1]))
                struct.pack_into("!H", buf, info.csum_at, 0xFFFF if info.udp and value == 0 else value)
            out.append(bytes(buf))
        return out


def _v6_upper(d: bytes) -> tuple[int, int]:
    """The upper-layer protocol of an IPv6 packet and its offset, after hop-by-hop, routing and destination
    options headers."""
    nh, l4 = d[20], 54
    while nh in EXT_HEADERS and len(d) >= l4 + 8:
        nh, l4 = d[l4], l4 + (d[l4 + 1] + 1) * 8
    return nh, l4


def shift_port(shift: int) -> Callable[[int], int]:
    """A bijection of ports that moves the ephemeral range 32768..60999 round by ``shift`` and keeps the rest."""
    def port(p: int) -> int:
        return PORT_LO + (p - PORT_LO + shift) % PORT_SPAN if PORT_LO <= p < PORT_LO + PORT_SPAN else p
    return port


def concat(out: Path, paths: list[Path], start_ns: int, gap_ns: int = NS) -> dict[str, int]:
    """Lay captures one after another as one capture ``out`` (as :func:`merge` does, streaming, any frames):
    each capture's first packet ``gap_ns`` after the previous one's last (the first at ``start_ns``), the others
    at their offsets from it; packets of a capture in time order."""
    t, n = start_ns, 0
    with PcapWriter(out, nanosecond=True) as w:
        for path in paths:
            batches = list(PcapFile(path).batches())
            if not batches or not sum(len(b) for b in batches):
                continue
            ts = np.concatenate([b.ts_ns for b in batches]).astype(np.int64)
            data = [b.packet(i) for b in batches for i in range(len(b))]
            wire = np.concatenate([b.wirelen for b in batches])
            order = np.argsort(ts, kind="stable")
            new = t + ts[order] - ts[order[0]]
            w.write_many([data[i] for i in order], new, wire[order])
            t, n = int(new[-1]) + gap_ns, n + len(data)
    return {"captures": len(paths), "packets": n, "seconds": round((t - gap_ns - start_ns) / NS, 1)}
