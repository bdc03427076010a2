"""Hosts of a template capture for :meth:`AddressPlan.from_template`: clients, servers and their services.

Packets are located with the codec's own header walker (:func:`netdiff_lib.nprint.locate.locate`), and each
packet's client and server are told apart by the same port rule reconstruction uses
(:func:`netdiff_lib.repair.flows.server_port`); ICMP counts as one service (port 65536) whose server is the
host that sends replies and errors.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import numpy as np

from netdiff_lib.nprint.locate import KEPT, PROTO_ICMP, locate
from netdiff_lib.pcap import PcapFile
from netdiff_lib.repair.flows import ICMP_FROM_SERVER, ICMP_SERVICE, server_port


def _take(data: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    return data[np.clip(start[:, None] + np.arange(width)[None, :], 0, len(data) - 1)]


def template_hosts(path: str | Path) -> tuple[dict, dict, dict]:
    """(clients, servers, services) of a capture; see :func:`template_counts`."""
    pairs: list[tuple[int, bytes, bytes, int]] = []
    for batch in PcapFile(path).batches():
        loc = locate(batch.data, batch.offsets, batch.caplen, batch.linktype, "netdiff")
        ok = np.flatnonzero((loc.reason == KEPT) & (loc.proto > 0))
        if not len(ok):
            continue
        d, l3, l4, fam = batch.data, loc.l3[ok], loc.l4[ok], loc.version[ok]
        v6 = fam == 6
        src = np.where(v6[:, None], _take(d, l3 + 8, 16), np.pad(_take(d, l3 + 12, 4), ((0, 0), (0, 12))))
        dst = np.where(v6[:, None], _take(d, l3 + 24, 16), np.pad(_take(d, l3 + 16, 4), ((0, 0), (0, 12))))
        icmp = loc.proto[ok] == PROTO_ICMP
        ports = _take(d, l4, 4).astype(np.int64)
        sport, dport = ports[:, 0] << 8 | ports[:, 1], ports[:, 2] << 8 | ports[:, 3]
        srv = server_port(sport, dport)
        kind = ports[:, 0]
        icmp_srv = np.array([int(k) in ICMP_FROM_SERVER[int(f)] for k, f in zip(kind, fam, strict=True)], bool)
        from_server = np.where(icmp, icmp_srv, (sport == srv) & (sport != dport))
        service = np.where(icmp, ICMP_SERVICE, srv)
        cli = np.where(from_server[:, None], dst, src)
        ser = np.where(from_server[:, None], src, dst)
        for i in range(len(ok)):
            width = 16 if v6[i] else 4
            pairs.append((int(fam[i]), cli[i, :width].tobytes(), ser[i, :width].tobytes(), int(service[i])))
    return template_counts(pairs)


def template_counts(pairs: list[tuple[int, bytes, bytes, int]]) -> tuple[dict, dict, dict]:
    """Clients, servers (most active first) and service -> server from (family, client, server, service)."""
    clients: dict[int, Counter] = {4: Counter(), 6: Counter()}
    servers: dict[int, Counter] = {4: Counter(), 6: Counter()}
    by_service: dict[tuple[int, int], Counter] = {}
    for fam, cli, srv, service in pairs:
        clients[fam][cli] += 1
        servers[fam][srv] += 1
        by_service.setdefault((fam, service), Counter())[srv] += 1
    text = {b: str(ipaddress.ip_address(b)) for c in (*clients.values(), *servers.values()) for b in c}
    return (
        {f: [text[a] for a, _ in c.most_common()] for f, c in clients.items()},
        {f: [text[a] for a, _ in c.most_common()] for f, c in servers.items()},
        {k: text[c.most_common(1)[0][0]] for k, c in by_service.items()},
    )
