"""Long captures for the trace and label tests, made at test time from the project's recorded samples.

:func:`merge` lays recorded captures one after another on a new time line (each shifted to start at a given
time, optionally with its IPv4 addresses rewritten) and writes them, in time order, as one classic pcap with the
project's :class:`~netdiff_lib.pcap.PcapWriter`. It returns every packet with its flow fields, parsed here by a
small independent parser (not netdiff's), so tests can compute the expected traces and write label files.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netdiff_lib.pcap import LINKTYPE_ETHERNET, PcapFile, PcapWriter

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "captures"
NS = 1_000_000_000


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
    import ipaddress

    return str(ipaddress.ip_address(raw))


def parse(data: bytes) -> tuple[int, str, str, int, int]:
    """``(proto, src, dst, sport, dport)`` of an Ethernet frame carrying IPv4 or IPv6 (no extension headers)."""
    ethertype = struct.unpack_from("!H", data, 12)[0]
    if ethertype == 0x0800:
        ihl = (data[14] & 0x0F) * 4
        proto, src, dst, l4 = data[23], _ip_text(data[26:30]), _ip_text(data[30:34]), 14 + ihl
    elif ethertype == 0x86DD:
        proto, src, dst, l4 = data[20], _ip_text(data[22:38]), _ip_text(data[38:54]), 54
        proto = 1 if proto == 58 else proto
    else:
        raise ValueError(f"ethertype {ethertype:#x}")
    sport, dport = struct.unpack_from("!HH", data, l4) if proto in (6, 17) else (0, 0)
    return proto, src, dst, sport, dport


def rewrite_v4(data: bytes, src: str, dst: str) -> bytes:
    """The frame with its IPv4 source and destination replaced (IPv6 frames unchanged)."""
    import ipaddress

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

    ``sample`` is a path under samples/captures (``"dns/dns_01.pcap"``); each part's first packet is put at
    ``start_ns`` and the others keep their offsets from it."""
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
