"""Minimal Ethernet / IPv4 / UDP / TCP frames around a payload, with valid checksums.

Used to ask tshark how it dissects a payload on some port (:mod:`.scan`) and by tests; reconstruction builds
its frames in bulk elsewhere (:mod:`netdiff_lib.repair.emit`).
"""

from __future__ import annotations

import struct

_ETH = bytes.fromhex("020000000002" "020000000001" "0800")
SRC, DST = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1])


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(proto: int, l4: bytes) -> bytes:
    head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, SRC, DST)
    return head[:10] + struct.pack(">H", checksum(head)) + head[12:] + l4


def _pseudo(proto: int, length: int) -> bytes:
    return SRC + DST + struct.pack(">BBH", 0, proto, length)


def udp_frame(sport: int, dport: int, payload: bytes) -> bytes:
    """An Ethernet frame carrying one UDP datagram."""
    head = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0)
    ck = checksum(_pseudo(17, 8 + len(payload)) + head + payload) or 0xFFFF
    return _ETH + _ipv4(17, head[:6] + struct.pack(">H", ck) + payload)


def tcp_frame(sport: int, dport: int, payload: bytes, seq: int = 1, ack: int = 1, flags: int = 0x18) -> bytes:
    """An Ethernet frame carrying one TCP segment (PSH+ACK by default)."""
    head = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)
    ck = checksum(_pseudo(6, 20 + len(payload)) + head + payload)
    return _ETH + _ipv4(6, head[:16] + struct.pack(">H", ck) + head[18:] + payload)
