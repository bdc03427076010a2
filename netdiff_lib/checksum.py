"""Vectorised Internet checksums (RFC 1071) over many packets at once.

Headers are handed over as a padded byte matrix ``(packets, bytes)``: row ``i`` holds packet ``i``'s bytes
and zeros after its end.  Zero bytes add nothing to a ones'-complement sum, so padding needs no masking and
a zero-filled payload needs no bytes at all: only its length, which enters through the pseudo-header.
Sums are accumulated in uint64 (no overflow below 2**48 bytes) and folded once at the end.

Used by reconstruction (to write checksums), the built-in validator (to verify them) and anything else that
needs IPv4, TCP, UDP, ICMP or ICMPv6 checksums.
"""

from __future__ import annotations

import numpy as np

_U64 = np.uint64


def sum16(rows: np.ndarray) -> np.ndarray:
    """Sum of the big-endian 16-bit words of every row of a uint8 matrix (an odd last byte is padded)."""
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2:
        raise ValueError("sum16 needs a (packets, bytes) matrix")
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, np.zeros((len(rows), 1), np.uint8)], axis=1)
    words = np.ascontiguousarray(rows).view(">u2")
    return words.sum(axis=1, dtype=_U64)


def fold(total: np.ndarray) -> np.ndarray:
    """Fold 64-bit partial sums into 16-bit ones'-complement sums (not inverted)."""
    s = np.asarray(total, dtype=_U64)
    for _ in range(3):
        s = (s & _U64(0xFFFF)) + (s >> _U64(16))
    return s.astype(np.uint16)


def finish(total: np.ndarray) -> np.ndarray:
    """The checksum field value for partial sums ``total`` (the inverted folded sum)."""
    return ~fold(total)


def internet_checksum(rows: np.ndarray, initial: np.ndarray | int = 0) -> np.ndarray:
    """Checksum of each row (its checksum field must be zero), plus an optional pseudo-header sum."""
    return finish(sum16(rows) + np.asarray(initial, dtype=_U64))


def pseudo_v4(src: np.ndarray, dst: np.ndarray, proto: np.ndarray | int, length: np.ndarray) -> np.ndarray:
    """IPv4 pseudo-header sums from 32-bit addresses, protocol numbers and upper-layer lengths."""
    src, dst = np.asarray(src, _U64), np.asarray(dst, _U64)
    m = _U64(0xFFFF)
    return ((src >> _U64(16)) + (src & m) + (dst >> _U64(16)) + (dst & m)
            + np.asarray(proto, _U64) + np.asarray(length, _U64))


def pseudo_v6(src: np.ndarray, dst: np.ndarray, next_header: np.ndarray | int, length: np.ndarray) -> np.ndarray:
    """IPv6 pseudo-header sums from (n, 16) address byte rows, next-header values and upper-layer lengths."""
    length = np.asarray(length, _U64)
    return (sum16(src) + sum16(dst) + (length >> _U64(16)) + (length & _U64(0xFFFF))
            + np.asarray(next_header, _U64))


def verify(rows: np.ndarray, initial: np.ndarray | int = 0) -> np.ndarray:
    """True where a row (checksum field included) plus ``initial`` sums to 0xFFFF, i.e. the checksum is good."""
    return fold(sum16(rows) + np.asarray(initial, dtype=_U64)) == 0xFFFF
