"""DHCP / BOOTP (RFC 2131, 2132): requests from the client (port 68), offers and acks from the server (67).

Learned per class: message types per role, the option codes (in order) of each message type, the parameter
request list.  Values are synthetic: the client's MAC (hardware address, client identifier) is derived from
its host key, addresses come from the documentation ranges, host names from :mod:`.names`.  The transaction
id is one per flow, so an offer answers its discover.  Messages shorter than the fixed part, magic cookie,
message type and end option (244 bytes) are lengthened to it; longer ones are padded with pad options.
"""

from __future__ import annotations

import struct

from netdiff_lib.payloads import names
from netdiff_lib.payloads.base import Packet, Service, at_least, count

COOKIE = bytes([99, 130, 83, 99])
FIXED = 236
MIN_LEN = FIXED + 4 + 3 + 1
CLIENT_TYPES, SERVER_TYPES = {1: 1, 3: 1}, {2: 1, 5: 1}
DEFAULT_OPTIONS = {1: [53, 61, 57, 55, 12], 3: [53, 61, 50, 54, 57, 55, 12], 2: [53, 54, 51, 58, 59, 1, 3, 6],
                   5: [53, 54, 51, 58, 59, 1, 3, 6]}
DEFAULT_PRL = [1, 3, 6, 12, 15, 28, 42, 51, 58, 59]


def _option_value(code: int, p: Packet, mtype: int) -> bytes | None:
    """The synthetic value of an option the builder knows (None: left out)."""
    ip = {50: names.doc_ip(p.client), 54: names.doc_ip(p.server), 1: bytes([255, 255, 255, 0]),
          3: names.doc_ip(p.server), 6: names.doc_ip(p.server + 1), 28: names.doc_ip(p.server)[:3] + b"\xff"}
    if code in ip:
        return ip[code]
    values = {53: bytes([mtype]), 61: b"\x01" + names.mac(p.client), 57: struct.pack(">H", 1500),
              26: struct.pack(">H", 1500), 51: struct.pack(">I", 86400), 58: struct.pack(">I", 43200),
              59: struct.pack(">I", 75600), 12: names.word(p.client).encode(), 15: names.DOMAIN.encode(),
              60: b"netdiff", 55: bytes(int(c) for c in p.stats.get("prl", DEFAULT_PRL))}
    return values.get(code)


def _message_type(p: Packet) -> int:
    learned = p.stats.get(f"types_{p.side}", {})
    if learned:
        return int(names.pick(p.rng, learned, 1))
    return (1 if p.first else 3) if p.side == 0 else (2 if p.first else 5)


def build(p: Packet) -> bytes:
    mtype = _message_type(p)
    xid = p.state.setdefault("xid", int(p.rng.integers(1, 1 << 32)))
    client_ip = names.doc_ip(p.client) if p.side == 1 else bytes(4)
    head = struct.pack(">BBBBIHH4s4s4s4s", 1 + p.side, 1, 6, 0, xid, 0, 0, bytes(4), client_ip, bytes(4), bytes(4))
    head += names.mac(p.client) + bytes(10) + bytes(64 + 128) + COOKIE
    codes = p.stats.get("options", {}).get(str(mtype)) or DEFAULT_OPTIONS.get(mtype, [53])
    opts = b""
    for code in [53, *(c for c in codes if c != 53)]:
        value = _option_value(int(code), p, mtype)
        if value is not None and len(head) + len(opts) + 2 + len(value) + 1 <= p.length:
            opts += bytes([int(code), len(value)]) + value
    return (head + opts + b"\xff").ljust(p.length, b"\0")


def detect(payload: bytes) -> bool:
    return len(payload) >= FIXED + 4 and payload[FIXED:FIXED + 4] == COOKIE and payload[0] in (1, 2)


def _options(payload: bytes) -> list[tuple[int, bytes]]:
    out, i = [], FIXED + 4
    while i < len(payload) and payload[i] != 255:
        if payload[i] == 0:
            i += 1
            continue
        if i + 1 >= len(payload):
            break
        out.append((payload[i], payload[i + 2:i + 2 + payload[i + 1]]))
        i += 2 + payload[i + 1]
    return out


def learn(stats: dict, payload: bytes, side: int) -> None:
    opts = _options(payload)
    mtype = next((v[0] for c, v in opts if c == 53 and v), 0)
    if 1 <= mtype <= 18:
        count(stats, f"types_{side}", mtype)
    stats.setdefault("options", {}).setdefault(str(mtype), [c for c, _ in opts])
    prl = next((list(v) for c, v in opts if c == 55), None)
    if prl and "prl" not in stats:
        stats["prl"] = prl


SERVICE = Service("dhcp", "udp", at_least(MIN_LEN), build, detect, learn)
