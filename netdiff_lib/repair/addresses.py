"""The address plan: which IP and MAC addresses the reconstructed hosts get.

By default synthetic hosts live in documentation ranges, so no real host is ever named: clients in
192.0.2.0/24 (RFC 5737 TEST-NET-1) and 2001:db8:0:1::/64, servers in 198.51.100.0/24 and 203.0.113.0/24
(TEST-NET-2/3) and 2001:db8:0:2::/64 (RFC 3849).  :meth:`AddressPlan.subnets` takes explicit client and server
networks instead; :meth:`AddressPlan.from_template` takes the hosts of a real capture: its clients in order
of activity, its servers, and which server offered which service (port), so a generated DNS flow talks to
the template's DNS server.  Hosts are numbered in order of first appearance within their family and role
and take the pool's addresses in order (network and broadcast addresses skipped; a pool that runs out wraps).

MAC addresses are locally administered unicast (first byte 0x02) and derived from the IP address (its last
four bytes), so every host has one stable MAC.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.repair.template import template_hosts

CLIENT, SERVER = 0, 1
_MAX_POOL = 1 << 16


@dataclass(frozen=True)
class AddressPlan:
    """Client and server address pools per family (CIDR strings or single addresses) and service mappings."""

    client_v4: tuple[str, ...] = ("192.0.2.0/24",)
    server_v4: tuple[str, ...] = ("198.51.100.0/24", "203.0.113.0/24")
    client_v6: tuple[str, ...] = ("2001:db8:0:1::/64",)
    server_v6: tuple[str, ...] = ("2001:db8:0:2::/64",)
    #: ((family, service port), address) pairs: the server that offers a service (ICMP is port 65536).
    services: tuple[tuple[tuple[int, int], str], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("client_v4", "server_v4", "client_v6", "server_v6"):
            nets = getattr(self, name)
            want = 4 if name.endswith("v4") else 6
            if not nets:
                raise ConfigError(f"address plan: {name} is empty")
            for text in nets:
                try:
                    net = ipaddress.ip_network(text, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"address plan: {exc}") from None
                if net.version != want:
                    raise ConfigError(f"address plan: {text} is not an IPv{want} network ({name})")

    @classmethod
    def subnets(cls, client: list[str] | None = None, server: list[str] | None = None) -> AddressPlan:
        """A plan from explicit networks (each string's family decides which pool it fills)."""
        default = cls()
        kw: dict[str, tuple[str, ...]] = {}
        for role, nets in (("client", client or []), ("server", server or [])):
            for fam in (4, 6):
                picked = tuple(n for n in nets if _family(n) == fam)
                if picked:
                    kw[f"{role}_v{fam}"] = picked
        return cls(**{**default.__dict__, **kw})

    @classmethod
    def from_template(cls, path: str | Path) -> AddressPlan:
        """Clients, servers and services of a real capture (see the module docstring)."""
        clients, servers, services = template_hosts(path)
        default = cls()
        kw: dict = {}
        for fam in (4, 6):
            if clients[fam]:
                kw[f"client_v{fam}"] = tuple(clients[fam])
            if servers[fam]:
                kw[f"server_v{fam}"] = tuple(servers[fam])
        if not kw:
            raise InputError(path, "no IPv4/IPv6 TCP, UDP or ICMP packets to take addresses from")
        return cls(**{**default.__dict__, **kw, "services": tuple(sorted(services.items()))})

    def to_dict(self) -> dict:
        d = {k: list(v) for k, v in self.__dict__.items() if k != "services"}
        d["services"] = [[fam, port, addr] for (fam, port), addr in self.services]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AddressPlan:
        services = tuple(((int(f), int(p)), str(a)) for f, p, a in d.get("services", []))
        pools = {k: tuple(d[k]) for k in ("client_v4", "server_v4", "client_v6", "server_v6") if k in d}
        return cls(**pools, services=services)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def pool(self, family: int, role: int, count: int) -> np.ndarray:
        """The first ``count`` addresses of a pool as (count, 16) bytes (IPv4 in the first 4 bytes)."""
        nets = getattr(self, f"{'client' if role == CLIENT else 'server'}_v{family}")
        want = 1 << max(8, (max(count, 1) - 1).bit_length())  # cache per power of two, at least 256
        raw = _pool_hosts(nets, min(want, _MAX_POOL))
        return raw[np.arange(count) % len(raw)]

    def service_map(self) -> dict[tuple[int, int], bytes]:
        return {key: ipaddress.ip_address(addr).packed.ljust(16, b"\0") for key, addr in self.services}


@lru_cache(maxsize=64)
def _pool_hosts(nets: tuple[str, ...], count: int) -> np.ndarray:
    """Up to ``count`` host addresses of some networks, in order, as (k, 16) bytes (read-only, cached)."""
    hosts: list[bytes] = []
    for text in nets:
        net = ipaddress.ip_network(text, strict=False)
        first, size = int(net.network_address), net.num_addresses
        if size > 2:  # no network address; no broadcast address in IPv4
            first, size = first + 1, size - (2 if net.version == 4 else 1)
        width = 4 if net.version == 4 else 16
        take = min(size, count - len(hosts))
        hosts += [(first + i).to_bytes(width, "big").ljust(16, b"\0") for i in range(take)]
        if len(hosts) >= count:
            break
    out = np.frombuffer(b"".join(hosts), np.uint8).reshape(-1, 16)
    out.flags.writeable = False
    return out


def _family(text: str) -> int:
    try:
        return ipaddress.ip_network(text, strict=False).version
    except ValueError as exc:
        raise ConfigError(f"address plan: {exc}") from None


def assign(plan: AddressPlan, family: np.ndarray, client: np.ndarray, server: np.ndarray,
           service: np.ndarray, trace: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(client, server) addresses per packet as (n, 16) bytes from host keys: hosts are numbered in order of
    first appearance within their trace (packets of a trace are contiguous), family and role."""
    n = len(family)
    trace = np.zeros(n, np.int64) if trace is None else trace
    out = [np.zeros((n, 16), np.uint8), np.zeros((n, 16), np.uint8)]
    services = plan.service_map()
    for role, keys in ((CLIENT, client), (SERVER, server)):
        for fam in (4, 6):
            sel = np.flatnonzero(family == fam)
            if not len(sel):
                continue
            _, first, inv = np.unique(keys[sel], return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            host_trace = trace[sel][first[order]]
            start = np.searchsorted(host_trace, host_trace)  # first host of the same trace
            rank = np.empty(len(first), np.int64)
            rank[order] = np.arange(len(first)) - start
            addrs = plan.pool(fam, role, int(rank.max()) + 1)[rank]
            if role == SERVER and services:
                for h, pos in enumerate(first):
                    mapped = services.get((fam, int(service[sel][pos])))
                    if mapped is not None:
                        addrs[h] = np.frombuffer(mapped, np.uint8)
            out[role][sel] = addrs[inv.reshape(-1)]
    return out[0], out[1]


def macs(addresses: np.ndarray, family: np.ndarray) -> np.ndarray:
    """Locally administered MACs (n, 6): 02:00 + the last four bytes of each address."""
    n = len(addresses)
    mac = np.zeros((n, 6), np.uint8)
    mac[:, 0] = 0x02
    last4 = np.where((np.asarray(family) == 4)[:, None], addresses[:, 0:4], addresses[:, 12:16])
    mac[:, 2:6] = last4
    return mac
