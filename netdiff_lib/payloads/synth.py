"""Payload synthesis for reconstruction: a service and a valid length per packet, then the bytes.

Two steps, because TCP sequence numbers depend on payload lengths: :func:`plan` runs before the TCP rules and
moves every length to the nearest one its service (or its ports' filler, :mod:`.ports`) can fill validly;
:func:`fill` runs once lengths are final and builds each packet's bytes in time order, flow by flow, so that
answers match their requests (transaction ids, questions, timestamps) and hellos come first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from netdiff_lib.payloads import ports
from netdiff_lib.payloads.base import Packet
from netdiff_lib.payloads.services import L4_NAMES, SERVICES

if TYPE_CHECKING:
    from netdiff_lib.payloads.profile import PayloadProfile

OTHER = "other"


@dataclass
class Plan:
    """Per packet: its service (``other``: port filler; ``""``: ICMP), the planned length, and whether the
    length had to change."""

    service: np.ndarray
    length: np.ndarray
    adjusted: np.ndarray

    def slice(self, lo: int, hi: int) -> Plan:
        return Plan(self.service[lo:hi], self.length[lo:hi], self.adjusted[lo:hi])


def _profile(profile: PayloadProfile | None) -> PayloadProfile:
    if profile is not None:
        return profile
    from netdiff_lib.payloads.profile import PayloadProfile

    return PayloadProfile.default()


def _service(prof: PayloadProfile, label: str | None, l4: str, server: int, other: int) -> str:
    """The server port's service, else the other port's (mDNS from 5353 to any port), else filler; a port's
    service only when its peer is not a lower port that tshark dissects by number: tshark tries the lower port
    first, so a TLS hello between ports 8443 and 123 would be read as NTP (the filler rules cover both ports)."""
    for port, peer in ((server, other), (other, server)):
        svc = prof.service(label, l4, port)
        if svc and not (peer < port and ports.dissected(l4, peer)):
            return svc
    return OTHER


def plan(l4: np.ndarray, sport: np.ndarray, dport: np.ndarray, server: np.ndarray, side: np.ndarray,
         labels: list[str | None], length: np.ndarray, room: np.ndarray,
         profile: PayloadProfile | None = None) -> Plan:
    """Services and lengths (``l4``: 0 TCP, 1 UDP, 2 ICMP; ``labels``: each packet's class)."""
    prof = _profile(profile)
    n = len(l4)
    service = np.full(n, "", object)
    out = np.asarray(length, np.int64).copy()
    cache: dict[tuple, str] = {}
    for i in np.flatnonzero(np.asarray(l4) < 2):
        name = L4_NAMES[l4[i]]
        other = int(dport[i]) if int(sport[i]) == int(server[i]) else int(sport[i])
        k = (labels[i], name, int(server[i]), other)
        if k not in cache:
            cache[k] = _service(prof, labels[i], name, int(server[i]), other)
        svc = cache[k]
        service[i] = svc
        if svc == OTHER:
            fitted = ports.fit(ports.rule(name, sport[i], dport[i]), int(out[i]))
        else:
            fitted = SERVICES[svc].fit(int(out[i]), int(side[i]))
        out[i] = fitted if fitted <= room[i] else 0
    return Plan(service, out, out != np.asarray(length))


def fill(pl: Plan, length: np.ndarray, l4: np.ndarray, sport: np.ndarray, dport: np.ndarray, server: np.ndarray,
         side: np.ndarray, flow: np.ndarray, client_key: np.ndarray, server_key: np.ndarray, trace: np.ndarray,
         labels: list[str | None], seed: int, profile: PayloadProfile | None = None) -> np.ndarray:
    """(packets, longest payload) uint8 bytes; packets in time order within each trace."""
    prof = _profile(profile)
    length = np.asarray(length, np.int64)
    mat = np.zeros((len(length), int(length.max(initial=0))), np.uint8)
    states: dict[tuple[int, int], dict] = {}
    started: set[tuple[int, int, int]] = set()
    rngs: dict[int, np.random.Generator] = {}
    for i in np.flatnonzero((length > 0) & (np.asarray(l4) < 2)):
        svc, t = pl.service[i], int(trace[i])
        if svc == OTHER:
            body = ports.fill(ports.rule(L4_NAMES[l4[i]], sport[i], dport[i]), int(length[i]))
        else:
            rng = rngs.setdefault(t, np.random.default_rng([seed, t]))
            first = (t, int(flow[i]), int(side[i])) not in started
            started.add((t, int(flow[i]), int(side[i])))
            pk = Packet(int(length[i]), int(side[i]), first, int(flow[i]), int(client_key[i]) & 0xFFFFFF,
                        int(server_key[i]) & 0xFFFFFF, int(server[i]), rng, prof.stats(labels[i], svc),
                        states.setdefault((t, int(flow[i])), {}))
            body = SERVICES[svc].build(pk)
            if len(body) != length[i]:  # the TCP rules changed the planned length (e.g. a flow's first segment)
                body = ports.fill(ports.rule(L4_NAMES[l4[i]], sport[i], dport[i]), int(length[i]))
        if len(body) != length[i]:
            raise AssertionError(f"{svc} built {len(body)} bytes for a {length[i]}-byte payload")
        mat[i, :len(body)] = np.frombuffer(body, np.uint8)
    return mat


def counts(pl: Plan, length: np.ndarray) -> dict[str, int]:
    """Packets with payload per service."""
    names, n = np.unique(pl.service[(np.asarray(length) > 0) & (pl.service != "")].astype(str), return_counts=True)
    return {str(a): int(b) for a, b in zip(names, n, strict=True)}
