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
from array import array
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path

import numpy as np

from netdiff_lib.errors import ConfigError, InputError

NS = 1_000_000_000
UNLABELLED = "unlabelled"
PORT_PROTOCOLS = frozenset({6, 17})
_V4_MAPPED = 0xFFFF << 32
PROTOCOLS = {"hopopt": 0, "icmp": 1, "igmp": 2, "ipv4": 4, "tcp": 6, "egp": 8, "igp": 9, "udp": 17, "ipv6": 41,
             "rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58, "icmpv6": 58, "icmp6": 58, "eigrp": 88,
             "ospf": 89, "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132}
FlowKey = tuple[int, int, int, int, int]


@lru_cache(maxsize=1 << 18)  # label files name each host in many rows
def addr_int(text: str) -> int:
    """An address as a 128-bit integer (IPv4 mapped into IPv6); ValueError when it is not an address."""
    ip = ipaddress.ip_address(text.strip())
    return _V4_MAPPED | int(ip) if ip.version == 4 else int(ip)


def addr_text(value: int) -> str:
    """The address of :func:`addr_int` as text (IPv4 in dotted form)."""
    ip = ipaddress.IPv6Address(value)
    return str(ip.ipv4_mapped or ip)


@lru_cache(maxsize=1024)
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


@lru_cache(maxsize=1 << 17)
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


class _Table:
    """Labelled intervals under integer keys (hashes of flow keys or addresses), in flat arrays: 26 bytes a row
    rather than ~600 for Python objects, so CIC-IDS2017's 2.8 million rows fit in ~75 MB."""

    def __init__(self) -> None:
        self.keys, self.starts, self.ends, self.labels = array("q"), array("q"), array("q"), array("H")
        self._np: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: int, start: int, end: int, label: int) -> None:
        self.keys.append(key)
        self.starts.append(start)
        self.ends.append(end)
        self.labels.append(label)

    def extend(self, other: _Table, relabel: list[int]) -> None:
        self.keys.extend(other.keys)
        self.starts.extend(other.starts)
        self.ends.extend(other.ends)
        self.labels.extend(array("H", [relabel[i] for i in other.labels]))

    def finish(self) -> None:
        """Sort by key, then start time."""
        arrays = (self.keys, self.starts, self.ends, self.labels)
        cols = [np.frombuffer(a, np.uint16 if a.typecode == "H" else np.int64) for a in arrays]
        order = np.lexsort((cols[1], cols[0]))
        self.keys, self.starts, self.ends, self.labels = (array(a.typecode, c[order].tobytes())
                                                          for a, c in zip(arrays, cols, strict=True))
        self._np = None

    def find(self, key: int, ts: int) -> int:
        """The label (index) of the interval of ``key`` holding ``ts`` with the latest start, or -1."""
        lo = bisect.bisect_left(self.keys, key)
        if lo == len(self.keys) or self.keys[lo] != key:
            return -1
        hi = bisect.bisect_right(self.keys, key, lo)
        j = bisect.bisect_right(self.starts, ts, lo, hi) - 1
        for i in range(j, max(j - 64, lo - 1), -1):  # latest start first
            if self.ends[i] >= ts:
                return self.labels[i]
        return -1

    def _arrays(self) -> tuple[np.ndarray, ...]:
        """The table as arrays, and for :meth:`find_many` its distinct keys (each one's first row), its distinct
        start times, and per row ``key rank << shift | start rank``: sorted as the rows are, so that one binary
        search finds a key's latest row starting by a time."""
        if self._np is None:
            tk, starts, ends = (np.frombuffer(a, np.int64) for a in (self.keys, self.starts, self.ends))
            ukeys, first = np.unique(tk, return_index=True)
            ustarts, srank = np.unique(starts, return_inverse=True)
            shift = max(len(ustarts).bit_length(), 1)
            krank = np.repeat(np.arange(len(ukeys), dtype=np.int64), np.diff(np.append(first, len(tk))))
            comp = (krank << shift) | srank.ravel()  # fits: fewer than 2**31 rows
            self._np = (tk, starts, ends, np.frombuffer(self.labels, np.uint16), ukeys, first, ustarts, shift, comp)
        return self._np

    def find_many(self, keys: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """:meth:`find` for arrays of keys and times at once (int64 label indices, -1 where none)."""
        tk, _, ends, names, ukeys, first, ustarts, shift, comp = self._arrays()
        out = np.full(len(keys), -1, np.int64)
        if not len(tk):
            return out
        by_key = np.argsort(keys)  # queries in key order: the searches walk the table forward (cache)
        at = np.minimum(np.searchsorted(ukeys, keys[by_key]), len(ukeys) - 1)
        found = np.flatnonzero(ukeys[at] == keys[by_key])
        rows, kr = by_key[found], at[found]
        t, lo = ts[rows], first[kr]
        i = np.searchsorted(comp, (kr << shift) + np.searchsorted(ustarts, t, "right") - 1, "right") - 1
        for _ in range(64):  # latest start first, as find
            live = i >= lo
            rows, i, lo, t = rows[live], i[live], lo[live], t[live]
            if not len(rows):
                break
            hit = ends[i] >= t
            out[rows[hit]] = names[i[hit]]
            miss = ~hit
            rows, i, lo, t = rows[miss], i[miss] - 1, lo[miss], t[miss]
        return out


class LabelIndex:
    """Labelled time intervals per flow and per host (see the module doc); filled by the readers.

    Flows and hosts are keyed by Python's 64-bit hash of the flow key or address: two keys with one hash (about
    one chance in 10^7 among millions of rows) would share their intervals, and a packet would take a label
    only if its time also fell in the other key's interval."""

    MAX_EXAMPLES = 5

    def __init__(self, source: str, fmt: str, keep_going: bool = False) -> None:
        self.source, self.format, self.keep_going = source, fmt, keep_going
        self.flows, self.hosts = _Table(), _Table()
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        self.rows = 0  # rows that gave an interval
        self.skipped: Counter = Counter()  # rows left out on purpose, by reason (blank, repeated header, ...)
        self.bad: Counter = Counter()  # bad rows counted under keep_going, by cause
        self.examples: list[str] = []

    def fail(self, line: int, cause: str) -> None:
        """A bad row: an :class:`InputError` naming the file, line and cause, or counted under ``keep_going``."""
        if not self.keep_going:
            raise InputError(self.source, f"line {line}: {cause}")
        self.bad[cause.split(":", 1)[0]] += 1
        if len(self.examples) < self.MAX_EXAMPLES:
            self.examples.append(f"line {line}: {cause}")

    def label_id(self, label: str) -> int:
        found = self._ids.get(label)
        if found is None:
            if len(self.names) >= 65535:
                raise InputError(self.source, "more than 65,535 different labels")
            found = self._ids[label] = len(self.names)
            self.names.append(label)
        return found

    def add_flow(self, key: FlowKey, start_ns: int, end_ns: int, label: str) -> None:
        found = self._ids.get(label)
        t = self.flows
        t.keys.append(hash(key))
        t.starts.append(start_ns)
        t.ends.append(end_ns if end_ns > start_ns else start_ns)
        t.labels.append(self.label_id(label) if found is None else found)
        self.rows += 1

    def add_host(self, addr: int, start_ns: int, end_ns: int, label: str) -> None:
        self.hosts.add(hash(addr), start_ns, max(end_ns, start_ns), self.label_id(label))
        self.rows += 1

    def merge(self, other: LabelIndex) -> None:
        """Add another index's rows and counts (several label files read as one)."""
        relabel = [self.label_id(name) for name in other.names]
        self.flows.extend(other.flows, relabel)
        self.hosts.extend(other.hosts, relabel)
        self.rows += other.rows
        self.skipped.update(other.skipped)
        self.bad.update(other.bad)
        self.examples += [f"{other.source}: {e}" for e in other.examples]

    def finish(self) -> LabelIndex:
        """Sort the intervals (readers call it last); an index with no usable row is an error."""
        if not len(self.flows) and not len(self.hosts):
            extra = f" ({self.bad_text()})" if self.bad else ""
            raise InputError(self.source, f"no usable label row in this {self.format} file{extra}")
        self.flows.finish()
        self.hosts.finish()
        return self

    @property
    def labels(self) -> list[str]:
        return sorted(self.names)

    def bad_text(self) -> str:
        n = sum(self.bad.values())
        return f"{n} bad row(s): " + "; ".join(self.examples) + ("; ..." if n > len(self.examples) else "")

    def label(self, key: FlowKey, src: int, dst: int, ts: int, host: int | None = None) -> str | None:
        """The label of a packet (flow ``key``, addresses ``src``/``dst``, time ``ts`` ns), or None."""
        if len(self.flows):
            found = self.flows.find(hash(key), ts)
            if found >= 0:
                return self.names[found]
            if not len(self.hosts):
                return None
        for addr in (host, src, dst):
            if addr is not None:
                found = self.hosts.find(hash(addr), ts)
                if found >= 0:
                    return self.names[found]
        return None

    def label_ids(self, flow: np.ndarray, hosts: list[np.ndarray], ts: np.ndarray) -> np.ndarray:
        """:meth:`label` for arrays: ``flow`` the hashes of the packets' flow keys, ``hosts`` those of the addresses
        to try in turn (trace host, source, destination), ``ts`` their times; indices into ``names``, -1 for none."""
        out = self.flows.find_many(flow, ts) if len(self.flows) else np.full(len(ts), -1, np.int64)
        if len(self.flows) and not len(self.hosts):
            return out
        for addr in hosts:
            todo = np.flatnonzero(out < 0)
            if not len(todo):
                break
            out[todo] = self.hosts.find_many(addr[todo], ts[todo])
        return out

    def describe(self) -> str:
        parts = [f"{self.format}: {self.rows} labelled row(s), {len(self.labels)} label(s)"]
        parts += [f"{n} {why}" for why, n in self.skipped.items()]
        if self.bad:
            parts.append(self.bad_text())
        return ", ".join(parts)
