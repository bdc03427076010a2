"""Header-field values decoded from nPrint matrices, ready to be compared as distributions.

Every position comes from :mod:`netdiff_lib.schema` (``layout.span`` + ``bits_to_uint``); nothing here knows a
column number.  A field is read only from packets that carry its block (more than half of the block's fixed
header columns are not -1), so a TCP port is never read off a UDP packet.

Values are categorical keys.  Fields with many values are binned so that two samples of the same traffic can
agree at all: ports keep their value below 1024 (services) and fall into 1,024-wide bins above; lengths into
16-byte bins; TCP windows into 256-wide bins; the IPv6 flow label into 4,096-wide bins.  Each key is the lower
edge of its bin.  Trace-level variables are the number of packets per trace (quarter-octave bins, key
``floor(4 log2 n)``) and the log inter-arrival time (0.1-decade bins of ``log10(1 + iat_us)``, first packet of
each trace left out); the protocol mix is a per-packet category code (:data:`PROTOCOLS`: ``ipv4/tcp``, ...).
The flow variable ``packets_per_flow`` (:data:`FLOW_VARIABLES`, quarter-octave bins like the packet count) is
compared like a field but reported apart, outside the mean over fields: a flow is the TCP or UDP packets of a
trace with the same protocol and unordered port pair (a capture is one device's traffic, and the evaluation
layout leaves addresses out), so a reply that names its request's ports joins its flow.
:func:`key_label` makes keys readable for plots.

:func:`extract_fields` turns a list of traces into a :class:`FieldTable`: per field the values and the class
code of each value, plus per class the count of set bits in every column (for the per-bit-column check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from netdiff_lib.schema import BLOCKS, Layout, bits_to_uint

#: ``extract(matrix, rows, layout)``: values of the packets selected by the boolean ``rows``.
Extractor = Callable[[np.ndarray, np.ndarray, Layout], np.ndarray]

PORT_EXACT_BELOW = 1024
PORT_BIN = 1024
LENGTH_BIN = 16
WINDOW_BIN = 256
FLOW_LABEL_BIN = 4096
IAT_BINS_PER_DECADE = 10
PPT_BINS_PER_OCTAVE = 4
TCP_FLAG_FIELDS = ("ns", "cwr", "ece", "urg", "ackf", "psh", "rst", "syn", "fin")
IPV4_FLAG_FIELDS = ("rbit", "dfbit", "mfbit")
L3_NAMES = ("none", "ipv4", "ipv6")
L4_NAMES = ("none", "other", "tcp", "udp", "icmp")
#: Protocol-mix categories by code.
PROTOCOLS = tuple(f"{a}/{b}" for a in L3_NAMES for b in L4_NAMES)
#: Trace-level variables (not header fields) compared like fields.
TRACE_VARIABLES = ("packets_per_trace", "protocol_mix", "log_iat")
#: Flow-level variables: compared like fields, reported apart (not in the mean over fields).
FLOW_VARIABLES = ("packets_per_flow",)
#: (block, source port field, destination port field, IP protocol number) of the transports that form flows.
FLOW_TRANSPORTS = (("tcp", "tcp_sprt", "tcp_dprt", 6), ("udp", "udp_sport", "udp_dport", 17))


def _uint(matrix: np.ndarray, rows: np.ndarray, layout: Layout, name: str) -> np.ndarray:
    return bits_to_uint(matrix[rows, layout.span(name).slice]).astype(np.int64)


def _gathered(names: Sequence[str]) -> Extractor:
    """Several one-bit fields read as one integer, first name most significant."""

    def extract(matrix: np.ndarray, rows: np.ndarray, layout: Layout) -> np.ndarray:
        cols = np.concatenate([np.arange(layout.span(n).start, layout.span(n).stop) for n in names])
        return bits_to_uint(matrix[np.ix_(rows, cols)]).astype(np.int64)

    return extract


def bin_port(ports: np.ndarray) -> np.ndarray:
    """Ports below 1024 as they are; above, the lower edge of their 1,024-wide bin."""
    ports = np.asarray(ports, dtype=np.int64)
    return np.where(ports < PORT_EXACT_BELOW, ports, (ports // PORT_BIN) * PORT_BIN)


def _exact(name: str) -> Extractor:
    return lambda matrix, rows, layout: _uint(matrix, rows, layout, name)


def _binned(name: str, width: int) -> Extractor:
    return lambda matrix, rows, layout: (_uint(matrix, rows, layout, name) // width) * width


def _port(name: str) -> Extractor:
    return lambda matrix, rows, layout: bin_port(_uint(matrix, rows, layout, name))


def tcp_option_kinds(opt_bits: np.ndarray, doff: np.ndarray) -> np.ndarray:
    """Walk TCP option bytes: ``(n, nbytes)`` int16 of option kinds in order, -1 after the end, -2 if malformed.

    ``opt_bits`` are the option bit columns, ``doff`` the data offsets (words); the walk stops at the end of the
    options the header announces, at End-of-Option-List (kind 0, recorded) or at a bad length.  All packets step
    together, one option per step.
    """
    n = opt_bits.shape[0]
    nbytes = opt_bits.shape[1] // 8
    data = bits_to_uint(opt_bits[:, : nbytes * 8].reshape(n, nbytes, 8)).astype(np.int64)
    optlen = np.clip((np.asarray(doff, dtype=np.int64) - 5) * 4, 0, nbytes)
    kinds = np.full((n, nbytes), -1, dtype=np.int16)
    pos = np.zeros(n, dtype=np.int64)
    active = optlen > 0
    for step in range(nbytes):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        p = pos[idx]
        kind = data[idx, p]
        length = np.where(kind <= 1, 1, data[idx, np.minimum(p + 1, nbytes - 1)])
        bad = (kind > 1) & ((length < 2) | (p + 1 >= optlen[idx]) | (p + length > optlen[idx]))
        kinds[idx, step] = np.where(bad, -2, kind)
        pos[idx] = p + length
        active[idx] = (kind != 0) & ~bad & (pos[idx] < optlen[idx])
    return kinds


def _signature_text(row: np.ndarray) -> str:
    kinds = [int(k) for k in row if k != -1]
    return "none" if not kinds else ",".join("bad" if k == -2 else str(k) for k in kinds)


@lru_cache(maxsize=4)
def _hash_weights(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(1, 2**62, size=n, dtype=np.int64) | 1


def tcp_option_signature(matrix: np.ndarray, rows: np.ndarray, layout: Layout) -> np.ndarray:
    """Option-kind signature per TCP packet, e.g. ``'2,4,8,1,3'`` (MSS, SACK-permitted, timestamps, NOP, WS)."""
    kinds = tcp_option_kinds(matrix[rows, layout.span("tcp_opt").slice], _uint(matrix, rows, layout, "tcp_doff"))
    if kinds.shape[0] == 0:
        return np.empty(0, dtype=object)
    # one 64-bit key per row (a polynomial hash of the kinds) instead of a row-wise unique: much faster
    with np.errstate(over="ignore"):
        keys = (kinds.astype(np.int64) + 3) @ _hash_weights(kinds.shape[1])
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    texts = np.array([_signature_text(kinds[i]) for i in first], dtype=object)
    return texts[inverse.ravel()]


#: Packet-level header fields: report name -> (block the packet must carry, extractor).
PACKET_FIELDS: dict[str, tuple[str, Extractor]] = {
    "ipv4_tos": ("ipv4", _exact("ipv4_tos")),
    "ipv4_tl": ("ipv4", _binned("ipv4_tl", LENGTH_BIN)),
    "ipv4_flags": ("ipv4", _gathered([f"ipv4_{f}" for f in IPV4_FLAG_FIELDS])),
    "ipv4_foff": ("ipv4", _exact("ipv4_foff")),
    "ipv4_ttl": ("ipv4", _exact("ipv4_ttl")),
    "ipv4_proto": ("ipv4", _exact("ipv4_proto")),
    "ipv6_tc": ("ipv6", _exact("ipv6_tc")),
    "ipv6_fl": ("ipv6", _binned("ipv6_fl", FLOW_LABEL_BIN)),
    "ipv6_len": ("ipv6", _binned("ipv6_len", LENGTH_BIN)),
    "ipv6_nh": ("ipv6", _exact("ipv6_nh")),
    "ipv6_hl": ("ipv6", _exact("ipv6_hl")),
    "tcp_sprt": ("tcp", _port("tcp_sprt")),
    "tcp_dprt": ("tcp", _port("tcp_dprt")),
    "tcp_doff": ("tcp", _exact("tcp_doff")),
    "tcp_flags": ("tcp", _gathered([f"tcp_{f}" for f in TCP_FLAG_FIELDS])),
    "tcp_wsize": ("tcp", _binned("tcp_wsize", WINDOW_BIN)),
    "tcp_opt_signature": ("tcp", tcp_option_signature),
    "udp_sport": ("udp", _port("udp_sport")),
    "udp_dport": ("udp", _port("udp_dport")),
    "udp_len": ("udp", _binned("udp_len", LENGTH_BIN)),
    "icmp_type": ("icmp", _exact("icmp_type")),
    "icmp_code": ("icmp", _exact("icmp_code")),
}


@lru_cache(maxsize=64)
def fixed_columns(layout: Layout, block: str) -> np.ndarray:
    """Column indices of a block's fixed header fields (options left out: they are -1 when not sent)."""
    names = [f.name for f in BLOCKS[block].fields if f.name in layout.spans and not f.name.endswith("_opt")]
    return np.concatenate([np.arange(layout.span(n).start, layout.span(n).stop) for n in names])


def block_presence(matrix: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Per block of the layout: which packets carry it (more than half of its fixed columns are not -1)."""
    out = {}
    for block in layout.blocks:
        cols = matrix[:, fixed_columns(layout, block)]
        out[block] = (cols >= 0).sum(axis=1) * 2 > cols.shape[1]
    return out


def protocol_mix(presence: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Per-packet protocol category code, an index into :data:`PROTOCOLS` (``ipv4/tcp``, ``none/none``, ...)."""
    none = np.zeros(n, dtype=bool)
    l3 = np.zeros(n, dtype=np.int64)
    l4 = np.ones(n, dtype=np.int64)
    for name in ("ipv6", "ipv4"):  # IPv4 wins when a (generated) packet seems to carry both
        l3[presence.get(name, none)] = L3_NAMES.index(name)
    for name in ("icmp", "udp", "tcp"):
        l4[presence.get(name, none)] = L4_NAMES.index(name)
    l4[l3 == 0] = 0
    return l3 * len(L4_NAMES) + l4


def log_keys(values: np.ndarray) -> np.ndarray:
    """0.1-decade bins of ``log10(1 + x)`` (negative values count as 0): times, whatever their unit."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    return np.floor(IAT_BINS_PER_DECADE * np.log10(1.0 + x)).astype(np.int64)


def iat_keys(iat_us: np.ndarray) -> np.ndarray:
    """0.1-decade bin of ``log10(1 + iat_us)`` for every packet but the first."""
    return log_keys(np.asarray(iat_us)[1:])


def packets_keys(counts: np.ndarray) -> np.ndarray:
    """Quarter-octave bins of packet counts (``floor(4 log2 n)``; -1 for an empty trace)."""
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, np.floor(PPT_BINS_PER_OCTAVE * np.log2(counts)), -1).astype(np.int64)


def flow_sizes(matrix: np.ndarray, presence: dict[str, np.ndarray], layout: Layout) -> np.ndarray:
    """Packets per flow of one trace (TCP and UDP packets by protocol and unordered port pair), by flow key."""
    keys = []
    for block, sport, dport, proto in FLOW_TRANSPORTS:
        rows = presence.get(block)
        if rows is None or not rows.any():
            continue
        a, b = _uint(matrix, rows, layout, sport), _uint(matrix, rows, layout, dport)
        keys.append(np.stack([np.full(a.size, proto), np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not keys:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(keys), axis=0, return_counts=True)[1].astype(np.int64)


def trace_field_values(trace, layout: Layout | None = None) -> dict[str, np.ndarray]:
    """All field and trace-variable values of one trace (fields whose block the layout lacks are left out)."""
    layout = layout or trace.layout
    matrix = np.asarray(trace.matrix)
    presence = block_presence(matrix, layout)
    out: dict[str, np.ndarray] = {}
    for name, (block, extract) in PACKET_FIELDS.items():
        if block in presence:
            out[name] = extract(matrix, presence[block], layout)
    out["packets_per_trace"] = packets_keys(np.array([matrix.shape[0]]))
    out["protocol_mix"] = protocol_mix(presence, matrix.shape[0])
    out["log_iat"] = iat_keys(trace.iat_us())
    out["packets_per_flow"] = packets_keys(flow_sizes(matrix, presence, layout))
    return out


@dataclass
class FieldTable:
    """Field values of a set of traces, each value tagged with the class code of its trace."""

    classes: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    bit_ones: np.ndarray | None = None  # (n_classes, width) count of set bits per column
    bit_rows: np.ndarray | None = None  # (n_classes,) packets per class

    def get(self, name: str, label: str | None = None) -> np.ndarray:
        """Values of ``name`` (all classes, or one class); empty when the field never occurred."""
        vals = self.values.get(name)
        if vals is None:
            return np.empty(0, dtype=np.int64)
        if label is None:
            return vals
        if label not in self.classes:
            return vals[:0]
        return vals[self.codes[name] == self.classes.index(label)]

    def bit_probabilities(self, label: str | None = None) -> np.ndarray | None:
        """P(bit = 1) per column, over all packets or one class's; None without packets."""
        if self.bit_ones is None or self.bit_rows is None:
            return None
        if label is None:
            ones, rows = self.bit_ones.sum(axis=0), self.bit_rows.sum()
        elif label in self.classes:
            i = self.classes.index(label)
            ones, rows = self.bit_ones[i], self.bit_rows[i]
        else:
            return None
        return ones / rows if rows > 0 else None


def extract_fields(traces: Sequence, layout: Layout | None = None, progress: Callable | None = None) -> FieldTable:
    """Decode every field of every trace into one :class:`FieldTable` (``progress`` wraps the iteration)."""
    classes = sorted({str(t.label) for t in traces})
    table = FieldTable(classes)
    parts: dict[str, list[np.ndarray]] = {}
    code_parts: dict[str, list[np.ndarray]] = {}
    width = (layout or traces[0].layout).width if traces else 0
    table.bit_ones = np.zeros((len(classes), width), dtype=np.float64)
    table.bit_rows = np.zeros(len(classes), dtype=np.float64)
    for trace in progress(traces) if progress else traces:
        code = classes.index(str(trace.label))
        for name, vals in trace_field_values(trace, layout).items():
            parts.setdefault(name, []).append(vals)
            code_parts.setdefault(name, []).append(np.full(len(vals), code, dtype=np.int32))
        matrix = np.asarray(trace.matrix)
        table.bit_ones[code] += (matrix == 1).sum(axis=0)
        table.bit_rows[code] += matrix.shape[0]
    for name, chunks in parts.items():
        table.values[name] = np.concatenate(chunks)
        table.codes[name] = np.concatenate(code_parts[name])
    return table


def field_names(table: FieldTable) -> list[str]:
    """Fields of a table in a stable order: header fields first, then the trace variables."""
    order = [*PACKET_FIELDS, *TRACE_VARIABLES]
    return [n for n in order if n in table.values]


def _duration(us: float) -> str:
    if us < 1e3:
        return f"{us:.0f}µs"
    return f"{us / 1e3:.3g}ms" if us < 1e6 else f"{us / 1e6:.3g}s"


def key_label(name: str, key: object) -> str:
    """A readable label for a field key: bin lower edges of the packet-count and inter-arrival variables."""
    if name in ("packets_per_trace", "packets_per_flow") and int(key) >= 0:
        return f"{2 ** (int(key) / PPT_BINS_PER_OCTAVE):.0f}"
    if name == "log_iat":
        return _duration(10 ** (int(key) / IAT_BINS_PER_DECADE) - 1)
    if name == "protocol_mix":
        return PROTOCOLS[int(key)]
    return str(key)
