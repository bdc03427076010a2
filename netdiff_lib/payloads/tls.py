"""TLS 1.2 record layer: ClientHello / ServerHello with random fields, then application-data records.

The first client segment of a flow is a ClientHello when it is long enough (a server name under the synthetic
namespace, the class's learned cipher suites, a padding extension, RFC 7685, to hit the length), the first
server segment a ServerHello and ServerHelloDone followed by application data; every other segment is whole
application-data records of random bytes.  Certificates are never sent.  A segment holds at least one record
(6 bytes).
"""

from __future__ import annotations

import struct

from netdiff_lib.payloads import names
from netdiff_lib.payloads.base import Packet, Service, at_least, count

MAX_RECORD = 16384
MIN_LEN = 6
DEFAULT_SUITES = [0xC02F, 0xC030, 0xC02B, 0xC02C, 0x009E, 0x003C, 0x002F, 0x0035]


def record(ctype: int, body: bytes) -> bytes:
    return bytes([ctype, 3, 3]) + struct.pack(">H", len(body)) + body


def app_data(p: Packet, n: int) -> bytes:
    """Whole application-data records of exactly ``n`` >= 6 bytes."""
    out = b""
    while n > 0:
        k = min(n - 5, MAX_RECORD)
        if 0 < n - 5 - k < 6:  # never leave a tail too short for a record
            k -= 6
        out += record(23, names.rand_bytes(p.rng, k))
        n -= 5 + k
    return out


def _ext(etype: int, body: bytes) -> bytes:
    return struct.pack(">HH", etype, len(body)) + body


def _handshake(htype: int, body: bytes) -> bytes:
    return bytes([htype]) + len(body).to_bytes(3, "big") + body


def client_hello(p: Packet, size: int, sid: int = 32) -> bytes:
    """A ClientHello record of exactly ``size`` bytes, or b"" when it cannot be that short."""
    host = names.hostname(p.server).encode()
    suites = [int(s) for s in p.stats.get("suites", DEFAULT_SUITES)][:64]
    exts = (_ext(0, struct.pack(">HBH", len(host) + 3, 0, len(host)) + host) + _ext(10, bytes.fromhex("0004001d0017"))
            + _ext(11, b"\x01\x00") + _ext(13, bytes.fromhex("0006040308040401")))
    body = lambda s, pad: (b"\x03\x03" + names.rand_bytes(p.rng, 32) + bytes([s]) + names.rand_bytes(p.rng, s)  # noqa: E731
                           + struct.pack(">H", 2 * len(suites)) + b"".join(struct.pack(">H", x) for x in suites)
                           + b"\x01\x00" + struct.pack(">H", len(exts) + len(pad)) + exts + pad)
    base = 5 + 4 + len(body(sid, b""))
    rest = size - base
    if rest < 0 or size - 5 > MAX_RECORD:
        return b""
    if 0 < rest < 4:
        sid -= 4 - rest
        rest = 4
    pad = _ext(21, bytes(rest - 4)) if rest else b""
    return record(22, _handshake(1, body(sid, pad)))


def server_hello(p: Packet) -> bytes:
    suite = int(names.pick(p.rng, p.stats.get("chosen", {}), DEFAULT_SUITES[0]))
    exts = _ext(0xFF01, b"\x00") + _ext(11, b"\x01\x00")
    body = (b"\x03\x03" + names.rand_bytes(p.rng, 32) + b"\x20" + names.rand_bytes(p.rng, 32)
            + struct.pack(">HB", suite, 0) + struct.pack(">H", len(exts)) + exts)
    return record(22, _handshake(2, body) + _handshake(14, b""))


def build(p: Packet) -> bytes:
    first = p.first and not p.state.get(f"hello_{p.side}")
    if first:
        p.state[f"hello_{p.side}"] = True
        hello = client_hello(p, p.length) if p.side == 0 else server_hello(p)
        rest = p.length - len(hello)
        if hello and (rest == 0 or rest >= MIN_LEN):
            return hello + (app_data(p, rest) if rest else b"")
    return app_data(p, p.length)


def detect(payload: bytes) -> bool:
    return len(payload) >= 5 and payload[0] in (20, 21, 22, 23) and payload[1] == 3 and payload[2] <= 4


def learn(stats: dict, payload: bytes, side: int) -> None:
    count(stats, "records", payload[0])
    if payload[0] != 22 or len(payload) < 44:
        return
    at = 5 + 4 + 2 + 32
    at += 1 + payload[at]
    if payload[5] == 1 and at + 2 <= len(payload) and "suites" not in stats:
        n = struct.unpack_from(">H", payload, at)[0] // 2
        stats["suites"] = [x for (x,) in struct.iter_unpack(">H", payload[at + 2:at + 2 + 2 * n])
                           if x & 0x0F0F != 0x0A0A]  # GREASE values are left out
    elif payload[5] == 2 and at + 2 <= len(payload):
        count(stats, "chosen", struct.unpack_from(">H", payload, at)[0])


SERVICE = Service("tls", "tcp", at_least(MIN_LEN), build, detect, learn)
