"""NTP (RFC 5905): client requests (mode 3) and server replies (mode 4), always 48 bytes.

A reply's origin timestamp is its flow's last request transmit timestamp.  Learned per class: the version and
the server's stratum.  Other lengths become 48 (the packets with extension fields or MACs that real clients
rarely send are not synthesised).
"""

from __future__ import annotations

import struct

from netdiff_lib.payloads import names
from netdiff_lib.payloads.base import Packet, Service, count, fixed

SIZE = 48
ERA_2024 = 3_913_056_000  # 2024-01-01 in NTP seconds


def build(p: Packet) -> bytes:
    version = int(names.pick(p.rng, p.stats.get("version", {}), 4))
    now = (ERA_2024 + int(p.rng.integers(0, 86400))) << 32 | int(p.rng.integers(0, 1 << 32))
    if p.side == 0:
        p.state["sent"] = now
        return struct.pack(">BBbbII4sQQQQ", version << 3 | 3, 0, 6, -20, 0, 0, bytes(4), 0, 0, 0, now)
    stratum = int(names.pick(p.rng, p.stats.get("stratum", {}), 2))
    origin = p.state.get("sent", now)
    recv = origin + (1 << 22)
    return struct.pack(">BBbbII4sQQQQ", version << 3 | 4, stratum, 6, -20, 1 << 10, 1 << 10,
                       names.doc_ip(p.server + 7), recv - (1 << 40), origin, recv, recv + (1 << 16))


def detect(payload: bytes) -> bool:
    return len(payload) >= SIZE and (payload[0] >> 3) & 7 in (3, 4) and payload[0] & 7 in (1, 2, 3, 4, 5)


def learn(stats: dict, payload: bytes, side: int) -> None:
    count(stats, "version", (payload[0] >> 3) & 7)
    if payload[0] & 7 == 4 and 1 <= payload[1] <= 15:
        count(stats, "stratum", payload[1])


SERVICE = Service("ntp", "udp", fixed(SIZE), build, detect, learn)
