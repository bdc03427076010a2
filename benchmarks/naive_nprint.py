"""Baseline for benchmarks/encode.py: a straightforward per-packet Python nPrint encoder (-4 -t -u -i).

Written from the nPrint specification the way a script would do it (struct for headers, a Python list of
bits per packet), classic little-endian pcap with Ethernet framing only.  It is the yardstick the vectorised
codec is compared with in the same run; it is not used by netdiff.
"""

from __future__ import annotations

import struct

import numpy as np


def _bits(data: bytes, width: int, valid: int) -> list[int]:
    out = []
    for i in range(width):
        if i < valid:
            b = data[i]
            out.extend((b >> (7 - k)) & 1 for k in range(8))
        else:
            out.extend([-1] * 8)
    return out


def encode(path: str, limit: int | None = None) -> int:
    """Encode up to ``limit`` packets into a list of rows; returns the number of rows."""
    rows = []
    with open(path, "rb") as fh:
        fh.read(24)
        while limit is None or len(rows) < limit:
            hdr = fh.read(16)
            if len(hdr) < 16:
                break
            _s, _u, caplen, _w = struct.unpack("<IIII", hdr)
            pkt = fh.read(caplen)
            if struct.unpack("!H", pkt[12:14])[0] != 0x0800:
                continue
            ip = pkt[14:]
            ihl = (ip[0] & 0xF) * 4
            proto = ip[9]
            l4 = ip[ihl:]
            row = _bits(ip, 60, ihl)
            row += _bits(l4, 60, (l4[12] >> 4) * 4) if proto == 6 else [-1] * 480
            row += _bits(l4, 8, 8) if proto == 17 else [-1] * 64
            row += _bits(l4, 8, 8) if proto == 1 else [-1] * 64
            rows.append(row)
    np.array(rows, dtype=np.int8)
    return len(rows)
