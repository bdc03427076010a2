"""Flows: group generated packets into conversations, clean up near-duplicate ports, assign roles.

**Near-duplicates.**  Within a trace and transport, a port number seen once (as source or destination)
snaps to the number one bit flip away that is seen at least :data:`SNAP_MIN_COUNT` times, the most frequent
winning (then the lowest flipped bit); then a port *pair* seen in one packet snaps the same way to a frequent
pair one bit away.  A generator's bit errors therefore rejoin their conversation, while a real trace's short
flows on neighbouring ephemeral ports (two or more packets) stay apart.  ICMP echo identifiers are cleaned up
the same way.  Everything is deterministic.

**Port 0** is reserved (RFC 6335) and Wireshark treats it as a wildcard when it matches conversations; a
generated 0 becomes 1 (one bit).

**Flows.**  TCP and UDP packets form a flow per (family, transport, unordered port pair); ICMP echo per
(family, identifier) and all other ICMP per family.  When the layout carries addresses, the unordered address
pair is part of the key as well.

**Roles.**  The server side of a flow is the well-known port (below 1024), else the lower port; a packet is
client -> server (side 0) unless its source port is the server port.  Flows on one port number both ways
(123 <-> 123) are sent by their client.  ICMP replies and errors go server -> client, requests client ->
server.  Without generated addresses a trace has one client host per family and one server host per family
and service (server port; ICMP is one service), which the address plan then names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdiff_lib.repair.headers import POPCOUNT

SNAP_MIN_COUNT = 3
ICMP_SERVICE = 1 << 16
#: ICMP types sent by the server / router side (v4: replies and errors; v6: errors, echo reply, RA).
ICMP_FROM_SERVER = {4: frozenset({0, 3, 4, 5, 11, 12, 14, 16, 18}), 6: frozenset({1, 2, 3, 4, 129, 134})}
ICMP_ECHO = {4: frozenset({0, 8}), 6: frozenset({128, 129})}
L4_TCP, L4_UDP, L4_ICMP = 0, 1, 2


@dataclass
class Flows:
    """Per packet: flow index, side (0 client->server, 1 server->client), ports and host keys."""

    flow: np.ndarray
    side: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    icmp_id: np.ndarray
    client: np.ndarray
    server: np.ndarray
    server_port: np.ndarray
    echo: np.ndarray

    @property
    def count(self) -> int:
        return int(self.flow.max()) + 1 if len(self.flow) else 0


def snap_pairs(a: np.ndarray, b: np.ndarray, group: np.ndarray, bits: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Snap singleton (a, b) pairs to a frequent pair one bit flip away (see the module docstring).

    The search starts from the few frequent pairs: their one-bit neighbours are looked up among the singletons.
    """
    a, b, group = (np.asarray(x, np.int64) for x in (a, b, group))
    if len(a) == 0:
        return a, b
    key = _pair_key(a, b, group, bits)
    uniq, first, inv, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    frequent = np.flatnonzero(counts >= SNAP_MIN_COUNT)
    single_keys = uniq[counts == 1]
    if not len(frequent) or not len(single_keys):
        return a, b
    fa, fb, fg = a[first[frequent]], b[first[frequent]], group[first[frequent]]
    flips = np.int64(1) << np.arange(bits, dtype=np.int64)
    na = np.concatenate([fa[:, None] ^ flips[None, :], np.repeat(fa[:, None], bits, 1)], axis=1)
    nb = np.concatenate([np.repeat(fb[:, None], bits, 1), fb[:, None] ^ flips[None, :]], axis=1)
    nkey = _pair_key(na, nb, fg[:, None], bits)
    pos = np.clip(np.searchsorted(single_keys, nkey), 0, len(single_keys) - 1)
    hit_f, hit_bit = np.nonzero(single_keys[pos] == nkey)
    if not len(hit_f):
        return a, b
    # Per singleton: the most frequent neighbour, then the lowest flipped bit (columns order the bits).
    target = single_keys[pos[hit_f, hit_bit]]
    order = np.lexsort((hit_bit, -counts[frequent[hit_f]], target))
    keep = np.ones(len(order), bool)
    keep[1:] = target[order][1:] != target[order][:-1]
    chosen = order[keep]
    rows = first[np.searchsorted(uniq, target[chosen])]
    x, y = fa[hit_f[chosen]], fb[hit_f[chosen]]
    direct = _popcount16(a[rows] ^ x) + _popcount16(b[rows] ^ y) == 1
    a, b = a.copy(), b.copy()
    a[rows], b[rows] = np.where(direct, x, y), np.where(direct, y, x)
    return a, b


def _popcount16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.int64)
    return POPCOUNT[x & 0xFF].astype(np.int64) + POPCOUNT[(x >> 8) & 0xFF]


def _pair_key(a: np.ndarray, b: np.ndarray, group: np.ndarray, bits: int) -> np.ndarray:
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return (group << (2 * bits)) | (lo << bits) | hi


def server_port(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The server end of each port pair: a well-known port (< 1024) first, else the lower port."""
    rank_a = np.where(a < 1024, 0, 1 << 17) + a
    rank_b = np.where(b < 1024, 0, 1 << 17) + b
    return np.where(rank_a <= rank_b, a, b)


def build_flows(family: np.ndarray, l4: np.ndarray, sport: np.ndarray, dport: np.ndarray,
                icmp_type: np.ndarray, icmp_id: np.ndarray, addresses: tuple[np.ndarray, np.ndarray] | None = None,
                snap: bool = True, trace: np.ndarray | None = None) -> Flows:
    """Flows, sides and host keys of the packets of one or more traces (``trace``: each packet's; see the
    module docstring).  Nothing is shared between traces: flows, snapping and hosts are per trace."""
    family, l4 = np.asarray(family, np.int64), np.asarray(l4, np.int64)
    trace = np.zeros(len(family), np.int64) if trace is None else np.asarray(trace, np.int64)
    ported = l4 != L4_ICMP
    proto_group = trace * 32 + family * 4 + l4
    sport = np.where(ported, np.maximum(sport, 1), 0).astype(np.int64)
    dport = np.where(ported, np.maximum(dport, 1), 0).astype(np.int64)
    echo = ~ported & _type_in(family, icmp_type, ICMP_ECHO)
    icmp_id = np.where(echo, icmp_id, 0).astype(np.int64)
    if snap:
        idx = np.flatnonzero(ported)
        m = len(idx)
        ports, _ = snap_pairs(np.concatenate([sport[idx], dport[idx]]), np.zeros(2 * m, np.int64),
                              np.concatenate([proto_group[idx], proto_group[idx]]))
        sport[idx], dport[idx] = snap_pairs(ports[:m], ports[m:], proto_group[idx])
        idx = np.flatnonzero(echo)
        icmp_id[idx], _ = snap_pairs(icmp_id[idx], np.zeros(len(idx), np.int64), proto_group[idx])
    srv = np.where(ported, server_port(sport, dport), -1)
    from_server = np.where(ported, (sport == srv) & (sport != dport),
                           _type_in(family, icmp_type, ICMP_FROM_SERVER))
    key = ((family * 4 + l4) << 16 | np.minimum(sport, dport)) << 16 | np.maximum(sport, dport)
    key = (key << 17) | np.where(echo, icmp_id + 1, 0)
    key = trace * (len(key) + 1) + _dense_first_seen(key)
    if addresses is not None:
        src, dst = addresses
        pair = _dense_first_seen(np.minimum(src, dst) * (2 * len(src) + 1) + np.maximum(src, dst))
        key = _dense_first_seen(key) * (len(key) + 1) + pair
    flow = _dense_first_seen(key)
    service = np.where(ported, srv, ICMP_SERVICE)
    if addresses is None:
        client = trace * 8 + family
        server = (trace * 8 + family) * (ICMP_SERVICE * 2) + service
    else:
        src, dst = addresses
        src, dst = src + (trace << 44), dst + (trace << 44)
        client, server = np.where(from_server, dst, src), np.where(from_server, src, dst)
    return Flows(flow, from_server.astype(np.int8), sport, dport, icmp_id, client, server, srv, echo)


def _lut(table: dict[int, frozenset[int]]) -> np.ndarray:
    lut = np.zeros((2, 256), bool)
    for row, fam in enumerate((4, 6)):
        lut[row, sorted(table[fam])] = True
    return lut


_LUTS = {id(ICMP_FROM_SERVER): _lut(ICMP_FROM_SERVER), id(ICMP_ECHO): _lut(ICMP_ECHO)}


def _type_in(family: np.ndarray, icmp_type: np.ndarray, table: dict[int, frozenset[int]]) -> np.ndarray:
    lut = _LUTS.get(id(table))
    if lut is None:
        lut = _lut(table)
    return lut[(family == 6).astype(np.int64), np.asarray(icmp_type, np.int64) & 0xFF]


def _dense_first_seen(keys: np.ndarray) -> np.ndarray:
    """Dense ids 0, 1, ... for the distinct values of ``keys``, numbered in order of first appearance."""
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inv.reshape(-1)]
