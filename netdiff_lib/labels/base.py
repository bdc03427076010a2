"""The label index every label-file reader fills, and the helpers they share (addresses, protocols, times).

A :class:`LabelIndex` holds time intervals with a label, per bidirectional flow (protocol and the two
``(address, port)`` endpoints, in either order) and per host address. :meth:`LabelIndex.label` gives a packet the
label of its flow at its time, else that of its host (the trace's own host first, then the source, then the
destination). Addresses are 128-bit integers, IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``), the form
:mod:`netdiff_lib.segment.keys` computes for packets. Ports count only for TCP and UDP: other protocols'
flows are keyed by their addresses (Zeek writes ICMP type/code, CICFlowMeter 0, in the port columns).
"""

from __future__ import annotations

import bisect
import codecs
import gzip
import ipaddress
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

from netdiff_lib.errors import ConfigError, InputError

NS = 1_000_000_000
UNLABELLED = "unlabelled"
PORT_PROTOCOLS = frozenset({6, 17})
_V4_MAPPED = 0xFFFF << 32
PROTOCOLS = {"hopopt": 0, "icmp": 1, "igmp": 2, "ipv4": 4, "tcp": 6, "egp": 8, "igp": 9, "udp": 17, "ipv6": 41,
             "rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58, "icmpv6": 58, "icmp6": 58, "eigrp": 88,
             "ospf": 89, "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132}
FlowKey = tuple[int, int, int, int, int]
Interval = tuple[int, int, str]


def addr_int(text: str) -> int:
    """An address as a 128-bit integer (IPv4 mapped into IPv6); ValueError when it is not an address."""
    ip = ipaddress.ip_address(text.strip())
    return _V4_MAPPED | int(ip) if ip.version == 4 else int(ip)


def addr_text(value: int) -> str:
    """The address of :func:`addr_int` as text (IPv4 in dotted form)."""
    ip = ipaddress.IPv6Address(value)
    return str(ip.ipv4_mapped or ip)


def proto_number(text: str) -> int:
    """An IP protocol given as a number or a name (``tcp``, ``udp``, ``icmp``, ...); ValueError otherwise."""
    text = text.strip().lower()
    if text.isdigit():
        value = int(text)
        if value > 255:
            raise ValueError(f"protocol {value} is not 0..255")
        return value
    if text not in PROTOCOLS:
        raise ValueError(f"unknown protocol {text!r}")
    return PROTOCOLS[text]


def port_number(text: str) -> int:
    """A port in decimal or hex (``0x01bb``, as UNSW-NB15 writes some); ``-`` or empty is 0."""
    text = text.strip().lower()
    if text in ("", "-"):
        return 0
    value = int(text, 16) if text.startswith("0x") else int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"port {text} is not 0..65535")
    return value


def flow_key(proto: int, a: int, pa: int, b: int, pb: int) -> FlowKey:
    """The bidirectional key of a flow: the two endpoints in a fixed order; ports only for port protocols."""
    if proto not in PORT_PROTOCOLS:
        proto, pa, pb = 1 if proto == 58 else proto, 0, 0  # ICMPv6 as ICMP: packets of both are ICMP
    return (proto, a, pa, b, pb) if (a, pa) <= (b, pb) else (proto, b, pb, a, pa)


def parse_offset(spec: str) -> timezone | None:
    """``UTC``, ``Z`` or ``+HH:MM``/``-HH:MM`` as a fixed zone; None for other text."""
    if spec.upper() in ("UTC", "Z", "GMT"):
        return UTC
    m = re.fullmatch(r"([+-])(\d{1,2}):?(\d{2})?", spec.strip())
    if not m:
        return None
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
    return timezone(-delta if m.group(1) == "-" else delta)


def zone(spec: str) -> tzinfo:
    """A ``--labels-tz`` value as a tzinfo: a fixed offset or an IANA name (``America/Halifax``)."""
    fixed = parse_offset(spec)
    if fixed is not None:
        return fixed
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(spec)
    except (ImportError, ValueError, KeyError, OSError):
        raise ConfigError(f"--labels-tz {spec!r}: expected UTC, an offset such as -03:00, or a time zone name "
                          "such as America/Halifax") from None


def local_ns(dt: datetime, tz: tzinfo) -> int:
    """Nanoseconds since the epoch of a naive local time in ``tz``."""
    aware = dt.replace(tzinfo=tz)
    return int(aware.timestamp()) * NS + aware.microsecond * 1000


def seconds_ns(text: str) -> int:
    """Unix seconds (``1424219009.123``) as nanoseconds; ValueError when not a number."""
    text = text.strip()
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a time in seconds: {text!r}")
    return int(whole) * NS + int((frac + "000000000")[:9])


def read_lines(path: Path) -> Iterator[str]:
    """The lines of a text file (``.gz`` too) without line ends; UTF-8, or Windows-1252 for the lines that are
    not UTF-8 (CIC-IDS2017 writes its web attack labels as ``Web Attack \\x96 Brute Force``)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for raw in fh:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = codecs.decode(raw, "cp1252", "replace")
                yield line.rstrip("\r\n")
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from None


class LabelIndex:
    """Labelled time intervals per flow and per host (see the module doc); filled by the readers."""

    MAX_EXAMPLES = 5

    def __init__(self, source: str, fmt: str, keep_going: bool = False) -> None:
        self.source, self.format, self.keep_going = source, fmt, keep_going
        self.flows: dict[FlowKey, list[Interval]] = {}
        self.hosts: dict[int, list[Interval]] = {}
        self.rows = 0  # rows that gave an interval
        self.skipped: Counter = Counter()  # rows left out on purpose, by reason (blank, repeated header, ...)
        self.bad: Counter = Counter()  # bad rows counted under keep_going, by cause
        self.examples: list[str] = []
        self._starts: dict[object, list[int]] = {}

    def fail(self, line: int, cause: str) -> None:
        """A bad row: an :class:`InputError` naming the file, line and cause, or counted under ``keep_going``."""
        if not self.keep_going:
            raise InputError(self.source, f"line {line}: {cause}")
        self.bad[cause.split(":", 1)[0]] += 1
        if len(self.examples) < self.MAX_EXAMPLES:
            self.examples.append(f"line {line}: {cause}")

    def add_flow(self, key: FlowKey, start_ns: int, end_ns: int, label: str) -> None:
        self.flows.setdefault(key, []).append((start_ns, max(end_ns, start_ns), label))
        self.rows += 1

    def add_host(self, addr: int, start_ns: int, end_ns: int, label: str) -> None:
        self.hosts.setdefault(addr, []).append((start_ns, max(end_ns, start_ns), label))
        self.rows += 1

    def finish(self) -> LabelIndex:
        """Sort the intervals (readers call it last); an index with no usable row is an error."""
        if not self.flows and not self.hosts:
            extra = f" ({self.bad_text()})" if self.bad else ""
            raise InputError(self.source, f"no usable label row in this {self.format} file{extra}")
        for table in (self.flows, self.hosts):
            for rows in table.values():
                rows.sort()
                self._starts[id(rows)] = [r[0] for r in rows] if len(rows) > 8 else []
        return self

    @property
    def labels(self) -> list[str]:
        return sorted({r[2] for table in (self.flows, self.hosts) for rows in table.values() for r in rows})

    def bad_text(self) -> str:
        n = sum(self.bad.values())
        return f"{n} bad row(s): " + "; ".join(self.examples) + ("; ..." if n > len(self.examples) else "")

    def _find(self, rows: list[Interval] | None, ts: int) -> str | None:
        if not rows:
            return None
        starts = self._starts.get(id(rows))
        hi = bisect.bisect_right(starts, ts) if starts else len(rows)
        for i in range(hi - 1, max(hi - 64, 0) - 1, -1):  # latest start first
            start, end, label = rows[i]
            if start <= ts <= end:
                return label
        return None

    def label(self, key: FlowKey, src: int, dst: int, ts: int, host: int | None = None) -> str | None:
        """The label of a packet (flow ``key``, addresses ``src``/``dst``, time ``ts`` ns), or None."""
        if self.flows:
            found = self._find(self.flows.get(key), ts)
            if found is not None or not self.hosts:
                return found
        for addr in (host, src, dst):
            if addr is not None:
                found = self._find(self.hosts.get(addr), ts)
                if found is not None:
                    return found
        return None

    def describe(self) -> str:
        parts = [f"{self.format}: {self.rows} labelled row(s), {len(self.labels)} label(s)"]
        parts += [f"{n} {why}" for why, n in self.skipped.items()]
        if self.bad:
            parts.append(self.bad_text())
        return ", ".join(parts)
