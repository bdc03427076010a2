"""DNS (port 53) and mDNS (5353): queries from the client, answers from the server, under a synthetic namespace.

One name and a new id (counting up from a random one) per transaction (``cedar-7.example``, ``cedar-7.local`` for
mDNS; mDNS too, so that tshark does not take repeated queries for retransmissions); an answer repeats its query's
id and question, a second answer is an unsolicited one with its own id. Learned per class: query types, answer
counts and (mDNS) the share of responses. Any length from 19 bytes up is hit exactly: the question name is
shortened or lengthened, a query carries an EDNS OPT record with a padding option (RFC 7830), an answer a TXT
record of the remaining size.
"""

from __future__ import annotations

import struct

from netdiff_lib.payloads import names
from netdiff_lib.payloads.base import Packet, Service, at_least, count

HEADER, QTAIL, RR_FIXED = 12, 4, 12  # RR_FIXED: name pointer, type, class, TTL, rdata length
MIN_LEN = HEADER + 3 + QTAIL
OPT_FIXED = 11 + 4  # root name, type, class, TTL, rdata length; padding option code and length
RDATA = {1: 4, 28: 16, 12: None, 33: None, 16: None}  # A, AAAA, PTR, SRV, TXT (None: variable)


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".") if x) + b"\0"


def _rdata(qtype: int, p: Packet, i: int) -> bytes:
    if qtype == 1:
        return names.doc_ip(p.server + i)
    if qtype == 28:
        return bytes.fromhex("20010db8") + bytes(11) + bytes([1 + i % 254])
    if qtype == 33:
        return struct.pack(">HHH", 0, 0, 80 + i) + b"\xc0\x0c"
    return b"\xc0\x0c"  # PTR (and anything else): a pointer to the question name


def _txt(n: int) -> bytes:
    """TXT rdata of exactly ``n`` >= 1 bytes (strings of at most 255)."""
    out = b""
    while n > 0:
        k = min(n, 256)
        out += bytes([k - 1]) + names.text(k - 1)
        n -= k
    return out


def _rr(rtype: int, rdata: bytes) -> bytes:
    return b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, 120, len(rdata)) + rdata


def _name_for(p: Packet, mdns: bool, room: int) -> bytes:
    """The flow's name, or a one-label name that fits ``room`` encoded bytes (>= 3)."""
    key = p.flow * 1000 + p.state["n"]  # one name per transaction
    name = encode_name(names.hostname(key, names.MDNS_DOMAIN if mdns else names.DOMAIN))
    if len(name) <= room:
        return name
    return bytes([room - 2]) + names.text(room - 2, p.flow).replace(b" ", b"x") + b"\0"


def _grow(qname: bytes, extra: int) -> bytes:
    """The name with ``extra`` letters added to its first label (labels stay <= 63)."""
    first = qname[0]
    if first + extra > 63:
        raise ValueError("label too long")
    return bytes([first + extra]) + qname[1:1 + first] + b"x" * extra + qname[1 + first:]


def build_dns(p: Packet, mdns: bool) -> bytes:
    response = p.side == 1 if not mdns else p.rng.random() < float(p.stats.get("response_share", 0.5))
    if not response or p.state.get("answered", True):  # a new transaction (an answer without one: unsolicited)
        p.state["n"] = p.state.get("n", -1) + 1
        p.state.setdefault("id0", int(p.rng.integers(0, 1 << 16)))
        p.state["id"] = (p.state["id0"] + p.state["n"]) % 0xFFFF + 1  # ids never repeat within 65,535 transactions
        p.state["qtype"] = int(names.pick(p.rng, p.stats.get("qtypes", {}), 1))
    p.state["answered"] = response
    qtype = p.state["qtype"] if p.state["qtype"] in RDATA else 1
    answers = [_rr(qtype, _rdata(qtype, p, i)) for i in range(int(names.pick(p.rng, p.stats.get("answers", {}),
                                                                             1)))] if response else []
    qname = _name_for(p, mdns, p.length - HEADER - QTAIL)
    while answers and HEADER + len(qname) + QTAIL + sum(map(len, answers)) > p.length:
        answers.pop()
    rest = p.length - HEADER - len(qname) - QTAIL - sum(map(len, answers))
    extra, ar = b"", 0
    if rest >= (RR_FIXED + 1 if response else OPT_FIXED):
        if response:
            answers.append(_rr(16, _txt(rest - RR_FIXED)))
        else:
            extra, ar = b"\0" + struct.pack(">HHIH", 41, 1232, 0, rest - 11) + struct.pack(
                ">HH", 12, rest - OPT_FIXED) + bytes(rest - OPT_FIXED), 1
    elif rest > 0:
        qname = _grow(qname, rest)
    flags = (0x8400 if mdns else 0x8180) if response else (0 if mdns else 0x0100)
    head = struct.pack(">HHHHHH", p.state["id"], flags, 1, len(answers), 0, ar)
    return head + qname + struct.pack(">HH", qtype, 1) + b"".join(answers) + extra


def _question_end(payload: bytes) -> int | None:
    """Where the first question's type starts, when the payload holds a well-formed uncompressed name."""
    i = HEADER
    while i < len(payload) and payload[i]:
        if payload[i] > 63 or not payload[i + 1:i + 1 + payload[i]].isascii():
            return None
        i += 1 + payload[i]
    return i + 1 if i + 5 <= len(payload) else None


def detect(payload: bytes) -> bool:
    """A DNS message with one to eight questions, the first well formed, of class IN or ANY."""
    if len(payload) < MIN_LEN or payload[2] & 0x78:
        return False
    qd, an = struct.unpack_from(">HH", payload, 4)
    end = _question_end(payload) if 1 <= qd <= 8 and an <= 64 else None
    return end is not None and struct.unpack_from(">H", payload, end + 2)[0] & 0x7FFF in (1, 255)


def learn(stats: dict, payload: bytes, side: int) -> None:
    an = struct.unpack_from(">H", payload, 6)[0]
    response = bool(payload[2] & 0x80)
    count(stats, "kinds", "response" if response else "query")
    kinds = stats["kinds"]
    stats["response_share"] = kinds.get("response", 0) / sum(kinds.values())
    if response:
        count(stats, "answers", min(an, 4))
    end = _question_end(payload)
    if end is not None:
        count(stats, "qtypes", struct.unpack_from(">H", payload, end)[0])


DNS = Service("dns", "udp", at_least(MIN_LEN), lambda p: build_dns(p, False), detect, learn)
MDNS = Service("mdns", "udp", at_least(MIN_LEN), lambda p: build_dns(p, True), detect, learn)
