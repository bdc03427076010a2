"""``nprint -V``: a human-readable dump of each written packet on stderr, in the shape of nPrint's
``SuperPacket::print_packet`` (one ``Superpacket { ... }`` block per packet, one line per header).

The exact wording of nPrint's per-header lines is not reproduced; nothing reads this output but people.
"""

from __future__ import annotations

from netdiff_lib.nprint.csvio import ip_text
from netdiff_lib.nprint.encode import EncodedBatch
from netdiff_lib.nprint.locate import PROTO_ICMP, PROTO_TCP, PROTO_UDP

_L4 = {PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMP: "ICMP"}


def _u16(b: bytes, at: int) -> int:
    return int.from_bytes(b[at : at + 2], "big")


def describe(enc: EncodedBatch, row: int) -> str:
    """The dump of the packet behind matrix row ``row``."""
    i = int(enc.keep[row])
    loc, data = enc.loc, enc.batch.data
    lines = ["Superpacket {"]
    if loc.radiotap[i] >= 0:
        lines.append("RadiotapHeader: 56 bytes")
    if loc.eth[i] >= 0:
        e = bytes(data[loc.eth[i] : loc.eth[i] + 14])
        lines.append(f"Ethernet Header: dst: {e[:6].hex(':')}, src: {e[6:12].hex(':')}, type: 0x{_u16(e, 12):04x}")
    if loc.version[i] in (4, 6):
        l3 = int(loc.l3[i])
        h = bytes(data[l3 : l3 + 40])
        if loc.version[i] == 4:
            lines.append(f"IPv4 Header: src: {ip_text(h[12:16])}, dst: {ip_text(h[16:20])}, ttl: {h[8]}, "
                         f"proto: {h[9]}, len: {_u16(h, 2)}")
        else:
            lines.append(f"IPv6 Header: src: {ip_text(h[8:24])}, dst: {ip_text(h[24:40])}, nh: {h[6]}, "
                         f"plen: {_u16(h, 4)}")
    proto = int(loc.proto[i])
    if proto in _L4:
        l4 = bytes(data[loc.l4[i] : loc.l4[i] + 8])
        ports = f"sport: {_u16(l4, 0)}, dport: {_u16(l4, 2)}"
        detail = f"type: {l4[0]}, code: {l4[1]}" if proto == PROTO_ICMP else ports
        lines.append(f"{_L4[proto]} Header: {detail}")
    lines.append(f"Payload: {int(loc.pay_len[i])} bytes")
    return "\n".join([*lines, "}"]) + "\n"
