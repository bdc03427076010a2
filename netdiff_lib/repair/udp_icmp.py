"""UDP and ICMP/ICMPv6 headers: lengths, allowed message types and their zero-filled bodies.

UDP: the length field is 8 + payload; ports come from the flow stage.

ICMP: the generated type is kept when it is a message type that a zero-filled body cannot make malformed,
otherwise it snaps to the nearest allowed type (fewest differing bits, then the lower number); the code and
the rest-of-header word are kept (echo identifiers after the flow stage's clean-up).  Bodies are zeros, so
types whose body has structure get a payload length that zeros can fill validly: ICMP errors quote the
offending datagram, which zeros cannot be (Wireshark: "Bogus IP version"), so ICMPv4 errors carry none;
neighbour discovery messages get exactly their fixed part (no options; a router solicitation may carry
its source link-layer address option, :func:`nd_options`), MLD at least its multicast address,
MLDv2 reports whole records, timestamp and address-mask messages at least their fixed fields.  The table was
derived by feeding every type with body lengths 0..100, zero and random rest-of-header words and random codes
to tshark.  Redirect (v4 type 5) cannot be valid with a zero body, and a router advertisement's body depends
on its address count; neither is allowed.
"""

from __future__ import annotations

import numpy as np

from netdiff_lib.repair.headers import POPCOUNT

_ANY = (0, 1 << 16, 1)
#: family -> {type: (minimum, maximum, step) of the body length after the 8-byte ICMP header}.
ICMP_BODY: dict[int, dict[int, tuple[int, int, int]]] = {
    4: {0: _ANY, 3: (0, 0, 1), 4: (0, 0, 1), 8: _ANY, 10: _ANY, 11: (0, 0, 1), 12: (0, 0, 1),
        13: (12, 1 << 16, 1), 14: (12, 1 << 16, 1), 15: _ANY, 16: _ANY, 17: (4, 1 << 16, 1), 18: (4, 1 << 16, 1)},
    6: {1: (1, 1 << 16, 1), 2: (1, 1 << 16, 1), 3: (1, 1 << 16, 1), 4: (1, 1 << 16, 1), 128: _ANY, 129: _ANY,
        130: (16, 1 << 16, 1), 131: (16, 1 << 16, 1), 132: (16, 1 << 16, 1), 133: (0, 8, 8), 134: (8, 8, 1),
        135: (16, 16, 1), 136: (16, 16, 1), 137: (32, 32, 1), 143: (0, 1 << 16, 20)},
}
#: family -> {type: mask of the rest-of-header word}: RFC 4884 "length of the original datagram" fields are
#: cleared, since the body quotes nothing (v4: byte 5 of types 3, 11, 12; v6: byte 4 of types 1 and 3).
ICMP_ROH_MASK: dict[int, dict[int, int]] = {
    4: {3: 0xFF00FFFF, 11: 0xFF00FFFF, 12: 0xFF00FFFF},
    6: {1: 0x00FFFFFF, 3: 0x00FFFFFF},
}


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest allowed type (2, 256), body rule (2, 256, 3) and rest-of-header mask (2, 256); row 1 is IPv6."""
    nearest = np.zeros((2, 256), np.int64)
    rules = np.zeros((2, 256, 3), np.int64)
    masks = np.full((2, 256), 0xFFFFFFFF, np.int64)
    values = np.arange(256)
    for row, fam in enumerate((4, 6)):
        allowed = np.array(sorted(ICMP_BODY[fam]))
        dist = POPCOUNT[(values[:, None] ^ allowed[None, :]).astype(np.uint8)]
        nearest[row] = allowed[np.argmin(dist, axis=1)]
        for t, rule in ICMP_BODY[fam].items():
            rules[row, t] = rule
        for t, mask in ICMP_ROH_MASK[fam].items():
            masks[row, t] = mask
    return nearest, rules, masks


_NEAREST, _RULES, _ROH_MASK = _tables()


def icmp_roh(family: np.ndarray, icmp_type: np.ndarray, roh: np.ndarray) -> np.ndarray:
    """The rest-of-header word with the length fields of quoting message types cleared."""
    return roh & _ROH_MASK[(np.asarray(family) == 6).astype(np.int64), np.asarray(icmp_type, np.int64) & 0xFF]


def icmp_types(family: np.ndarray, gen_type: np.ndarray) -> np.ndarray:
    """The allowed ICMP type nearest to each generated one."""
    return _NEAREST[(np.asarray(family) == 6).astype(np.int64), np.asarray(gen_type, np.int64) & 0xFF]


def icmp_payload(family: np.ndarray, icmp_type: np.ndarray, payload: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Body lengths that a zero-filled body of each type allows (``room``: the most the MTU leaves)."""
    rule = _RULES[(np.asarray(family) == 6).astype(np.int64), np.asarray(icmp_type, np.int64) & 0xFF]
    lo, hi, step = rule[:, 0], np.minimum(rule[:, 1], room), rule[:, 2]
    p = np.clip(payload, lo, np.maximum(hi, lo))
    return lo + (p - lo) // step * step


ND_ROUTER_SOLICIT = 133
SOURCE_LINK_ADDRESS = 1


def nd_options(body: np.ndarray | None, family: np.ndarray, l4_icmp: np.ndarray, icmp_type: np.ndarray,
               payload: np.ndarray, src_mac: np.ndarray) -> np.ndarray | None:
    """Body bytes with the source link-layer address option (type 1, 8 bytes) of every router solicitation
    whose body has room for it (what real solicitations carry); ``body`` is ``None`` or (n, width) uint8."""
    rs = np.flatnonzero(l4_icmp & (np.asarray(family) == 6) & (icmp_type == ND_ROUTER_SOLICIT) & (payload >= 8))
    if not len(rs):
        return body
    n = len(family)
    if body is None or body.shape[1] < 8:
        wider = np.zeros((n, 8), np.uint8)
        if body is not None:
            wider[:, : body.shape[1]] = body
        body = wider
    body[rs, 0], body[rs, 1] = SOURCE_LINK_ADDRESS, 1
    body[rs, 2:8] = src_mac[rs]
    return body
