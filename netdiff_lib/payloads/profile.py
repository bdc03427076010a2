"""The payload profile: per class, which ports carry which service and the structure of its messages.

:meth:`PayloadProfile.fit` reads labelled captures, decides each flow's service from its server port (the
standard service, else a strong payload signature seen on that port in most of its payloads) and folds every
recognised payload into the service's statistics through the service's own ``learn`` (codes, counts, option
lists, header names from a fixed vocabulary: never names, addresses, serial numbers or certificates).  A
pooled entry (``*``) serves labels the profile has not seen.  :meth:`PayloadProfile.default` has no classes:
standard ports and built-in defaults only.  Saved as JSON (``payloads.json`` beside a model).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netdiff_lib.atomic import read_json, write_json
from netdiff_lib.errors import InputError
from netdiff_lib.payloads.services import BY_SIGNATURE, SERVICES, decide, key
from netdiff_lib.pcap import PcapFile
from netdiff_lib.repair.flows import server_port
from netdiff_lib.validate import ip_offset

FORMAT = "netdiff-payloads/1"
FILE_NAME = "payloads.json"
POOLED = "*"
#: Packets and share of a port's payloads a signature needs before the port is mapped to its service.
MIN_PACKETS, MIN_SHARE = 3, 0.5
MAX_SCAN = 20_000  # packets per capture that a profile learns from


def transport_payloads(path: str | Path, max_packets: int | None = None) -> Iterator[tuple[str, int, int, bytes]]:
    """(transport, source port, destination port, payload) of every whole TCP / UDP packet of a capture."""
    for batch in PcapFile(path).batches(max_packets=max_packets):
        for i in range(len(batch)):
            pkt = batch.packet(i)
            off = ip_offset(pkt, int(batch.linktype[i]))
            if off is None or len(pkt) < off + 20:
                continue
            ip = pkt[off:]
            if ip[0] >> 4 == 4:
                if struct.unpack_from(">H", ip, 6)[0] & 0x3FFF:
                    continue
                proto, l4 = ip[9], ip[(ip[0] & 0xF) * 4:struct.unpack_from(">H", ip, 2)[0]]
            elif ip[0] >> 4 == 6 and len(ip) >= 40:
                proto, l4 = ip[6], ip[40:40 + struct.unpack_from(">H", ip, 4)[0]]
            else:
                continue
            if proto == 17 and len(l4) >= 8:
                yield "udp", *struct.unpack_from(">HH", l4), l4[8:]
            elif proto == 6 and len(l4) >= 20:
                yield "tcp", *struct.unpack_from(">HH", l4), l4[(l4[12] >> 4) * 4:]


@dataclass
class PayloadProfile:
    """``classes``: label -> {"services": {"udp/67": "dhcp", ...}, "stats": {service: {...}}}."""

    classes: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def default(cls) -> PayloadProfile:
        return cls()

    def _entry(self, label: str | None) -> dict:
        return self.classes.get(label or POOLED) or self.classes.get(POOLED) or {}

    def service(self, label: str | None, l4: str, port: int) -> str | None:
        return decide(l4, port, self._entry(label).get("services", {}))

    def stats(self, label: str | None, service: str) -> dict:
        return self._entry(label).get("stats", {}).get(service, {})

    @classmethod
    def fit(cls, files: Iterable[tuple[str | Path, str]], max_packets: int | None = MAX_SCAN) -> PayloadProfile:
        """Learn from ``(capture, label)`` pairs (at most ``max_packets`` packets per capture)."""
        return cls.fit_records((label, transport_payloads(path, max_packets)) for path, label in files)

    @classmethod
    def fit_records(cls, captures: Iterable[tuple[str, Iterable[tuple[str, int, int, bytes]]]]) -> PayloadProfile:
        """Learn from ``(label, transport payloads)`` per capture (as :func:`transport_payloads` yields them)."""
        seen: dict[str, Counter] = {}
        stats: dict[str, dict] = {}
        for label, records in captures:
            for lab in (label, POOLED):
                seen.setdefault(lab, Counter())
                stats.setdefault(lab, {})
            for l4, sport, dport, payload in records:
                if payload:
                    _observe(l4, sport, dport, payload, (seen[label], seen[POOLED]), (stats[label], stats[POOLED]))
        return cls({lab: {"services": _mapping(seen[lab]), "stats": stats[lab]} for lab in seen})

    def to_dict(self) -> dict:
        return {"format": FORMAT, "classes": self.classes}

    @classmethod
    def from_dict(cls, data: dict) -> PayloadProfile:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a payload profile (format {FORMAT!r} expected)")
        return cls(dict(data.get("classes", {})))

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PayloadProfile:
        """A profile from a JSON file, or from a model folder holding ``payloads.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        try:
            return cls.from_dict(read_json(path))
        except ValueError as exc:
            raise InputError(path, str(exc)) from None


def _observe(l4: str, sport: int, dport: int, payload: bytes, seen: Sequence[Counter],
             stats: Sequence[dict]) -> None:
    srv = int(server_port(sport, dport))
    side = int(sport == srv and sport != dport)
    for c in seen:
        c[(key(l4, srv), "")] += 1
    name = decide(l4, srv, {})
    if name is None:
        name = next((n for n in BY_SIGNATURE[l4] if SERVICES[n].detect(payload)), None)
        if name is not None:
            for c in seen:
                c[(key(l4, srv), name)] += 1
    if name is not None and SERVICES[name].detect(payload):
        for s in stats:
            SERVICES[name].learn(s.setdefault(name, {}), payload, side)


def _mapping(seen: Counter) -> dict[str, str]:
    """Ports whose payloads mostly carry one service's signature."""
    out = {}
    for (port_key, name), n in seen.items():
        if name and n >= MIN_PACKETS and n >= MIN_SHARE * seen[(port_key, "")]:
            out[port_key] = name
    return dict(sorted(out.items()))


def load_payloads(model_dir: str | Path) -> PayloadProfile | None:
    """The profile saved in a model folder (``payloads.json``), or None when it has none."""
    path = Path(model_dir) / FILE_NAME
    return PayloadProfile.load(path) if path.is_file() else None
