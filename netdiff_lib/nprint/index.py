"""The ``-O`` index column of nPrint CSV (source/destination address, ports, or a flow key) per packet."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from netdiff_lib.errors import ConfigError
from netdiff_lib.nprint.csvio import ip_text
from netdiff_lib.nprint.locate import PROTO_TCP, PROTO_UDP, byte_windows

if TYPE_CHECKING:
    from netdiff_lib.nprint.encode import EncodedBatch


def _addresses(enc: EncodedBatch, which: str) -> list[str]:
    loc, k, d = enc.loc, enc.keep, enc.batch.data
    l3, ver = loc.l3[k], loc.version[k].tolist()
    off4, off6 = (12, 8) if which == "src" else (16, 24)
    w4 = byte_windows(d, l3 + off4, 4)
    w6 = byte_windows(d, l3 + off6, 16)
    return [ip_text(bytes(b6) if v == 6 else bytes(b4)) if v else "NULL"
            for b4, b6, v in zip(w4, w6, ver, strict=True)]


def _ports(enc: EncodedBatch, at: int) -> list[str]:
    loc, k, d = enc.loc, enc.keep, enc.batch.data
    has = np.isin(loc.proto[k], (PROTO_TCP, PROTO_UDP))
    w = byte_windows(d, np.where(has, loc.l4[k] + at, 0), 2).astype(np.int64)
    port = (w[:, 0] << 8) | w[:, 1]
    return [str(p) if h else "NULL" for p, h in zip(port.tolist(), has.tolist(), strict=True)]


WLAN_AT = 56  # nPrint reads the 802.11 header right after a radiotap header it takes to be 56 bytes
_NO_TX = (0xC4, 0xD4, 0xE4)  # CTS, ACK and CF-End frames carry no transmitter address


def _tx_macs(enc: EncodedBatch) -> list[str]:
    """``-O 5``: the 802.11 transmitter address (``None`` for CTS/ACK/CF-End; ``NULL`` without radiotap)."""
    start = enc.loc.radiotap[enc.keep]
    w = byte_windows(enc.batch.data, np.where(start >= 0, start + WLAN_AT, 0), 16)
    out = []
    for row, s in zip(w.tolist(), start.tolist(), strict=True):
        if s < 0:
            out.append("NULL")
        elif row[0] in _NO_TX:
            out.append("None")
        else:
            out.append(":".join(f"{b:02x}" for b in row[10:16]))
    return out


def index_values(enc: EncodedBatch, index: int) -> list[str]:
    """The ``-O`` index column of every kept packet."""
    if index in (0, 1):
        return _addresses(enc, "src" if index == 0 else "dst")
    if index in (2, 3):
        return _ports(enc, 0 if index == 2 else 2)
    if index == 5:
        return _tx_macs(enc)
    if index == 4:
        proto = enc.loc.proto[enc.keep]
        names = np.where(proto == PROTO_TCP, "TCP", np.where(proto == PROTO_UDP, "UDP", "NULL")).tolist()
        parts = zip(_addresses(enc, "src"), _addresses(enc, "dst"), _ports(enc, 0), _ports(enc, 2), names, strict=True)
        return ["_".join(p) for p in parts]
    raise ConfigError(f"-O {index} is not supported (0-5: src_ip, dst_ip, src_prt, dst_prt, flow, tx_mac)")
