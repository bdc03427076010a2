"""Per-packet flow fields of an encoded batch, vectorised: IP protocol, addresses, ports; and which addresses
are local.

Addresses are 128-bit integers with IPv4 mapped into IPv6 (``::ffff:a.b.c.d``), as
:func:`netdiff_lib.labels.base.addr_int` makes them from text, so packets and label rows meet in one key space.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from netdiff_lib.errors import ConfigError
from netdiff_lib.nprint.encode import EncodedBatch
from netdiff_lib.nprint.locate import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP

#: "Local" addresses by default: RFC 1918 private, shared CGNAT space, loopback, link-local, and IPv6 unique local,
#: link-local and loopback.
LOCAL_NETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
              "fc00::/7", "fe80::/10", "::1/128")
_M64 = (1 << 64) - 1


@dataclass
class BatchKeys:
    """Flow fields of the kept packets of a batch (one entry per matrix row), as arrays.

    Addresses are numbered per batch in address order (``src_id``/``dst_id`` index ``addrs``, their 128-bit
    values); ``flow_id`` numbers the bidirectional flow keys of :func:`netdiff_lib.labels.base.flow_key`, whose
    tuples are ``flows``."""

    src_id: np.ndarray
    dst_id: np.ndarray
    src_local: np.ndarray  # bool
    dst_local: np.ndarray  # bool
    addrs: list[int]
    flow_id: np.ndarray
    flows: list[tuple[int, int, int, int, int]]


def _addresses(data: np.ndarray, l3: np.ndarray, version: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` uint64 words, shape ``(k, 2)`` (source, destination), of the kept packets' addresses."""
    k = len(l3)
    raw = np.zeros((k, 2, 16), np.uint8)
    v4, v6 = version == 4, version == 6
    if v4.any():
        at = l3[v4, None] + 12 + np.arange(8)
        raw[v4, :, 10:12] = 0xFF
        raw[v4, :, 12:] = np.take(data, at, mode="clip").reshape(-1, 2, 4)
    if v6.any():
        at = l3[v6, None] + 8 + np.arange(32)
        raw[v6] = np.take(data, at, mode="clip").reshape(-1, 2, 16)
    words = raw.view(">u8").astype(np.uint64)  # (k, 2, 2)
    return words[:, :, 0], words[:, :, 1]


class LocalNets:
    """A set of networks, tested on ``(hi, lo)`` address words at once."""

    def __init__(self, nets: Sequence[str] = LOCAL_NETS) -> None:
        self.text = tuple(nets)
        self.nets = []
        for text in nets:
            try:
                net = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError as exc:
                raise ConfigError(f"--local-net {text!r}: {exc}") from None
            if net.version == 4:
                net = ipaddress.ip_network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
            value, mask = int(net.network_address), int(net.netmask)
            self.nets.append((np.uint64(value >> 64), np.uint64(mask >> 64), np.uint64(value & _M64),
                              np.uint64(mask & _M64)))

    def __call__(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        out = np.zeros(hi.shape, bool)
        for vh, mh, vl, ml in self.nets:
            out |= ((hi & mh) == vh) & ((lo & ml) == vl)
        return out


def _factorize(hi: np.ndarray, lo: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The distinct 128-bit values ``(hi, lo)`` in increasing order (Python ints) and each value's number."""
    if not len(hi) or (hi == hi[0]).all():
        uniq, inverse = np.unique(lo, return_inverse=True)
        top = int(hi[0]) << 64 if len(hi) else 0
        return [top | v for v in uniq.tolist()], inverse.ravel()
    order = np.lexsort((lo, hi))  # by value (a few distinct high words: faster than sorting 16-byte records)
    h, w = hi[order], lo[order]
    new = np.ones(len(order), bool)
    new[1:] = (h[1:] != h[:-1]) | (w[1:] != w[:-1])
    inverse = np.empty(len(order), np.intp)
    inverse[order] = np.cumsum(new) - 1
    return [(a << 64) | b for a, b in zip(h[new].tolist(), w[new].tolist(), strict=True)], inverse


def batch_keys(enc: EncodedBatch, local: LocalNets) -> BatchKeys:
    """The flow fields of every kept packet of ``enc``; ports count only for TCP and UDP, ICMPv6 is ICMP."""
    loc, keep, data = enc.loc, enc.keep, enc.batch.data
    l3, version, l4 = loc.l3[keep], loc.version[keep], loc.l4[keep]
    l4proto = loc.proto[keep]
    ipproto = np.take(data, np.where(version == 4, l3 + 9, l3 + 6), mode="clip").astype(np.int64)
    proto = np.where(l4proto > 0, l4proto, ipproto)
    has_ports = np.isin(l4proto, (PROTO_TCP, PROTO_UDP))
    proto = np.where(proto == PROTO_ICMPV6, PROTO_ICMP, proto)
    at = np.where(has_ports, l4, 0)[:, None] + np.arange(4)
    p = np.take(data, at, mode="clip").astype(np.int64)
    sport = np.where(has_ports, (p[:, 0] << 8) | p[:, 1], 0)
    dport = np.where(has_ports, (p[:, 2] << 8) | p[:, 3], 0)
    hi, lo = _addresses(data, l3, version)
    is_local = local(hi, lo)
    addrs, ids = _factorize(hi.ravel(), lo.ravel())
    sid, did = ids[0::2], ids[1::2]
    swap = (sid > did) | ((sid == did) & (sport > dport))
    a, b = np.where(swap, did, sid), np.where(swap, sid, did)
    pa, pb = np.where(swap, dport, sport), np.where(swap, sport, dport)
    triple, tid = np.unique((proto << 32) | (pa << 16) | pb, return_inverse=True)
    packed = (a * max(len(addrs), 1) + b) * max(len(triple), 1) + tid.ravel()
    _, first, flow_id = np.unique(packed, return_index=True, return_inverse=True)
    t = triple[tid.ravel()[first]].tolist()
    flows = [(v >> 32, addrs[x], (v >> 16) & 0xFFFF, addrs[y], v & 0xFFFF)
             for v, x, y in zip(t, a[first].tolist(), b[first].tolist(), strict=True)]
    return BatchKeys(sid, did, is_local[:, 0], is_local[:, 1], addrs, flow_id.ravel(), flows)
