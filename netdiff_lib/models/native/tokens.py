"""The token view of a packet: header fields as the categories they are, for discrete diffusion.

A 16-bit length shown as one real number (the first design, continuous features, BENCHMARKS.md) is regressed
onto and lands between the modes of real traffic, which repeats exact values.  Here every packet becomes one
categorical token per *field*, with a vocabulary learned from the training traces
(:mod:`netdiff_lib.models.native.vocab`), plus its inter-arrival time, which stays continuous:

=========== ====================================== ==============================================
field       read from                               token space
=========== ====================================== ==============================================
kind        IP version, protocol, transport block   the (version, protocol, transport) triples seen
ip_len      IPv4 total length / IPv6 length + 40    frequent values + escape bins
ttl, tos    IPv4 TTL, TOS / IPv6 hop limit, class   frequent values + escape bins
ip_df       IPv4 don't-fragment bit                 0 / 1
ip_id       IPv4 identification                     frequent values (0 ...) + escape bins
ip_opts     IPv4 option bytes                       templates
v6_flow     IPv6 flow label                         frequent values + escape bins
sport       TCP / UDP source port                   service ports + per-trace slots (``ports``)
dport       TCP / UDP destination port              service ports + per-trace slots (``ports``)
conv        TCP / UDP conversation and direction    index and role in the trace (``conv``)
server_port the conversation's responder port       service ports + "ephemeral" (``conv``)
client_port the conversation's initiator port       service ports + "ephemeral" (``conv``)
tcp_flags   the nine TCP flag bits                  the combinations seen
tcp_win     TCP window                              frequent values + escape bins
tcp_urp     TCP urgent pointer                      frequent values + escape bins
tcp_opts    TCP option bytes                        templates (timestamps, SACK edges cleared)
icmp        ICMP type and code                      frequent values + escape bins
=========== ====================================== ==============================================

``model.endpoints`` picks the port fields: ``ports`` (the first design: two port fields) or ``conv`` (a flow is
one object: the packet's conversation and direction, plus the conversation's two ports, voted per conversation
when decoding; :mod:`~netdiff_lib.models.native.endpoints`, which also holds ``model.tcp_state``).

With ``model.iat=tokens`` the inter-arrival time is also one more field, ``iat``: bins of 1/20 decade of
``log10(1 + µs)`` (a categorical can put its mass on the few delays a device repeats, where one Gaussian
regression averages them), and decoding draws the time uniformly inside the sampled bin.

Token 0 of every field is "absent"; whether a field applies follows from the packet's ``kind`` alone
(:meth:`FieldTokenizer.applicable`).  Everything else is derived when decoding, not sampled: IP version and
header lengths, TCP data offset (from the option template), UDP and IPv6 payload lengths (from ``ip_len``),
checksums (0, reconstruction computes them), sequence and acknowledgement numbers and ICMP identifiers
(random, reconstruction makes them consistent per connection), fragment fields (0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netdiff_lib.atomic import read_json, write_json
from netdiff_lib.config import CONV_DECODE, IAT_DECODE, TCP_STATE
from netdiff_lib.errors import InputError
from netdiff_lib.models.native import endpoints, flow_rules
from netdiff_lib.models.native.iat_roles import fit_iat_roles
from netdiff_lib.models.native.token_decode import decode_packed
from netdiff_lib.models.native.token_schema import (
    IAT_BINS_PER_DECADE,
    OPTION_BYTES,
    PORT_FIELDS,
    TCP_FLAGS,
    VALUE_FIELDS,
)
from netdiff_lib.models.native.vocab import (
    ABSENT,
    Templates,
    Vocab,
    encode_iat,
    slot_tokens,
    template_of,
)
from netdiff_lib.schema import NETDIFFUSION, Layout, bits_to_uint

FORMAT = "netdiff-tokens/1"
FORMAT_2 = "netdiff-tokens/2"  # conversations or TCP state (written only then: older readers refuse these)
FIELDS = ("kind", "ip_len", "ttl", "tos", "ip_df", "ip_id", "ip_opts", "v6_flow", "sport", "dport",
          "tcp_flags", "tcp_win", "tcp_urp", "tcp_opts", "icmp")
#: ``model.endpoints=conv``: the two port fields become a conversation and its two ports (endpoints.py)
CONV_FIELDS = (*FIELDS[:8], *endpoints.CONV_FIELDS, *FIELDS[10:])
CONV_PORTS = ("server_port", "client_port")
IAT_FIELD = "iat"
IAT_TOKEN_BINS = 9 * IAT_BINS_PER_DECADE  # up to 10^9 µs (about 17 minutes) between packets
L4 = ("none", "tcp", "udp", "icmp")
#: Which transport/network a field needs: "ip" (any), "ipv4", "ipv6", "port" (TCP or UDP), "tcp", "icmp".
NEEDS = {"ip_len": "ip", "ttl": "ip", "tos": "ip", "ip_df": "ipv4", "ip_id": "ipv4", "ip_opts": "ipv4",
         "v6_flow": "ipv6", "sport": "port", "dport": "port", "conv": "port", "server_port": "port",
         "client_port": "port", "tcp_flags": "tcp", "tcp_win": "tcp",
         "tcp_urp": "tcp", "tcp_opts": "tcp", "icmp": "icmp"}


def _present(matrix: np.ndarray, layout: Layout, name: str) -> np.ndarray:
    return (matrix[:, layout.span(name).slice] >= 0).all(axis=1)


def _uint(matrix: np.ndarray, layout: Layout, name: str) -> np.ndarray:
    return bits_to_uint(matrix[:, layout.span(name).slice]).astype(np.int64)


def _option_bytes(matrix: np.ndarray, layout: Layout, name: str, nbytes: np.ndarray) -> list[bytes]:
    raw = np.packbits(matrix[:, layout.span(name).slice] > 0, axis=1)
    return [raw[i, : int(k)].tobytes() for i, k in enumerate(np.clip(nbytes, 0, OPTION_BYTES))]


@dataclass
class Fields:
    """The raw field values of a matrix's packets, before tokenisation."""

    l3: np.ndarray
    proto: np.ndarray
    l4: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    tcp_opts: list[str] = field(default_factory=list)
    ip_opts: list[str] = field(default_factory=list)


def read_fields(matrix: np.ndarray, layout: Layout = NETDIFFUSION) -> Fields:
    """Every modelled field of every packet (values of absent fields are meaningless)."""
    v4, v6 = _present(matrix, layout, "ipv4_ver"), _present(matrix, layout, "ipv6_ver")
    l3 = np.where(v4, 4, np.where(v6, 6, 0))
    proto = np.where(v4, _uint(matrix, layout, "ipv4_proto"), np.where(v6, _uint(matrix, layout, "ipv6_nh"), -1))
    tcp, udp, icmp = (_present(matrix, layout, n) for n in ("tcp_sprt", "udp_sport", "icmp_type"))
    l4 = np.where(tcp, 1, np.where(udp, 2, np.where(icmp, 3, 0)))
    pick = lambda a, b: np.where(v4, _uint(matrix, layout, a), _uint(matrix, layout, b))  # noqa: E731
    flags = np.concatenate([np.arange(layout.span(f"tcp_{f}").start, layout.span(f"tcp_{f}").stop)
                            for f in TCP_FLAGS])
    values = {
        "ip_len": np.where(v4, _uint(matrix, layout, "ipv4_tl"),
                          np.minimum(_uint(matrix, layout, "ipv6_len") + 40, 65535)),
        "ttl": pick("ipv4_ttl", "ipv6_hl"), "tos": pick("ipv4_tos", "ipv6_tc"),
        "ip_df": _uint(matrix, layout, "ipv4_dfbit"), "ip_id": _uint(matrix, layout, "ipv4_id"),
        "v6_flow": _uint(matrix, layout, "ipv6_fl"),
        "sport": np.where(tcp, _uint(matrix, layout, "tcp_sprt"), _uint(matrix, layout, "udp_sport")),
        "dport": np.where(tcp, _uint(matrix, layout, "tcp_dprt"), _uint(matrix, layout, "udp_dport")),
        "tcp_flags": bits_to_uint(matrix[:, flags]).astype(np.int64),
        "tcp_win": _uint(matrix, layout, "tcp_wsize"), "tcp_urp": _uint(matrix, layout, "tcp_urp"),
        "icmp": _uint(matrix, layout, "icmp_type") * 256 + _uint(matrix, layout, "icmp_code"),
    }
    tcp_len = np.where(tcp, (_uint(matrix, layout, "tcp_doff") - 5) * 4, 0)
    ip_len = np.where(v4, (_uint(matrix, layout, "ipv4_hl") - 5) * 4, 0)
    tcp_opts = [template_of(b) for b in _option_bytes(matrix, layout, "tcp_opt", tcp_len)]
    ip_opts = [template_of(b, tcp=False) for b in _option_bytes(matrix, layout, "ipv4_opt", ip_len)]
    return Fields(l3, proto, l4, values, tcp_opts, ip_opts)


@dataclass
class FieldTokenizer:
    """nPrint rows + inter-arrival times <-> per-field tokens (n, len(FIELDS)) + one continuous feature."""

    kinds: tuple[tuple[int, int, int], ...]
    vocabs: dict[str, Vocab]
    tcp_opts: Templates
    ip_opts: Templates
    layout: Layout = NETDIFFUSION
    coverage: dict[str, float] = field(default_factory=dict)
    #: Per class ("" = all): where its slot ports lie (:func:`~netdiff_lib.models.native.vocab.slot_histogram`).
    slot_ranges: dict[str, list[float]] = field(default_factory=dict)
    #: > 0: the inter-arrival time is also a token (one more field, ``iat``: bins of ``1 / IAT_BINS_PER_DECADE``
    #: decade of ``log10(1 + µs)``, drawn uniformly inside its bin when decoded) and decoding takes it from there.
    iat_bins: int = 0
    #: ``ports`` or ``conv`` (:mod:`~netdiff_lib.models.native.endpoints`); conversations per trace (conv)
    endpoints: str = "ports"
    conversations: int = 0
    #: ``off``, ``enforce`` or ``handshake``, and per class ("" = all) the shares of TCP flows opened by SYN and
    #: closed
    tcp_state: str = "off"
    tcp_rates: dict[str, list[float]] = field(default_factory=dict)
    #: conv: ``index`` (a conversation is an index from one opening to the next), ``regroup`` (also one kind per
    #: conversation) or ``merge`` (and fewer one-packet ones): :func:`~netdiff_lib.models.native.endpoints.regroup`
    conv_decode: str = "index"
    #: conv_decode ``calibrate``: per class ("" = all) the shares of TCP and UDP flows of one packet
    #: (:func:`~netdiff_lib.models.native.flow_rules.single_rates`)
    single_rates: dict[str, list[float]] = field(default_factory=dict)
    #: ``sampled`` (the times as sampled) or ``role`` (rank for rank into the class's real times of the packet's
    #: role: :mod:`~netdiff_lib.models.native.iat_roles`, whose tables ``iat_roles`` fitting records; none: sampled)
    iat_decode: str = "sampled"
    iat_roles: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def base_fields(self) -> tuple[str, ...]:
        """The header fields (without the inter-arrival token)."""
        return CONV_FIELDS if self.endpoints == "conv" else FIELDS

    @property
    def fields(self) -> tuple[str, ...]:
        return (*self.base_fields, IAT_FIELD) if self.iat_bins else self.base_fields

    def col(self, name: str) -> int:
        return self.base_fields.index(name)

    @property
    def port_vocab(self) -> Vocab:
        return self.vocabs["server_port" if self.endpoints == "conv" else "sport"]

    @property
    def sizes(self) -> list[int]:
        """Categories per field (absent included)."""
        extra = {"kind": 1 + len(self.kinds), "tcp_opts": self.tcp_opts.size, "ip_opts": self.ip_opts.size,
                 IAT_FIELD: 1 + self.iat_bins, "conv": endpoints.conv_size(self.conversations)}
        return [extra[f] if f in extra else self.vocabs[f].size for f in self.fields]

    def applicable(self) -> np.ndarray:
        """(kind tokens, fields) bool: which fields a packet of each kind carries (kind 0 = none)."""
        base = self.base_fields
        table = np.zeros((1 + len(self.kinds), len(self.fields)), bool)
        table[:, len(base):] = True  # the inter-arrival token: every packet
        for k, (l3, _, l4) in enumerate(self.kinds, start=1):
            have = {"ip": l3 != 0, "ipv4": l3 == 4, "ipv6": l3 == 6, "port": L4[l4] in ("tcp", "udp"),
                    "tcp": L4[l4] == "tcp", "icmp": L4[l4] == "icmp"}
            table[k, : len(base)] = [True] + [have[NEEDS[f]] for f in base[1:]]
        return table

    @classmethod
    def fit(cls, matrices: list[np.ndarray], labels: list[str] | None = None, *, max_values: int = 1024,
            escape_bins: int = 16, port_slots: int = 32, port_min_traces: int = 3, iat_bins: int = 0,
            layout: Layout = NETDIFFUSION, endpoints_mode: str = "ports", conversations: int = 32,
            tcp_state: str = "off", conv_decode: str = "index", iats: list[np.ndarray] | None = None,
            iat_decode: str = "sampled") -> FieldTokenizer:
        """Vocabularies from the training traces' matrices (one per trace, ``labels`` their classes; ``iats``
        their inter-arrival µs, for the role tables of ``iat_decode``)."""
        parsed = [read_fields(m, layout) for m in matrices]
        conv = endpoints_mode == "conv"
        tok = cls((), {}, Templates((), OPTION_BYTES), Templates((), OPTION_BYTES), layout, iat_bins=iat_bins,
                  endpoints=endpoints_mode, conversations=conversations if conv else 0, tcp_state=tcp_state,
                  conv_decode=conv_decode if conv else "index", iat_decode=iat_decode)
        labels = labels or [""] * len(parsed)
        l3 = np.concatenate([p.l3 for p in parsed])
        trip = np.stack([l3, np.concatenate([p.proto for p in parsed]), np.concatenate([p.l4 for p in parsed])], 1)
        kinds = tuple(tuple(int(x) for x in row) for row in np.unique(trip[l3 != 0], axis=0))
        tok.kinds = kinds
        kind_tok = np.concatenate([tok._kind_tokens(p) for p in parsed])
        app = tok.applicable()[kind_tok]
        for f, bits in VALUE_FIELDS.items():
            vals = np.concatenate([p.values[f] for p in parsed])[app[:, tok.col(f)]]
            tok.vocabs[f] = Vocab.fit(vals, bits, max_values=max_values, n_bins=escape_bins)
        by_trace = endpoints.trace_ports(parsed, app[:, tok.col("conv" if conv else "sport")])
        ports = np.concatenate(by_trace) if by_trace else np.zeros(0, np.int64)
        uniq, counts = np.unique(np.concatenate([np.unique(p) for p in by_trace] or [ports]), return_counts=True)
        service = Vocab.fit(uniq, 16, keep=counts >= port_min_traces, max_values=max_values)
        rare = ports[~np.isin(ports, np.asarray(service.values, np.int64))]
        bins = Vocab.fit(rare, 16, keep=np.zeros(len(np.unique(rare)), bool), n_bins=escape_bins).bins
        vocab = Vocab(16, service.values, bins, 1 if conv else port_slots)
        tok.vocabs.update({f: vocab for f in (CONV_PORTS if conv else PORT_FIELDS)})
        tok.slot_ranges = endpoints.slot_ranges(by_trace, labels, np.asarray(vocab.values))
        tok.tcp_rates = endpoints.fit_tcp_rates(parsed, labels) if tcp_state != "off" else {}
        tok.single_rates = flow_rules.fit_single_rates(parsed, labels) if tok.conv_decode == "calibrate" else {}
        if iats is not None:
            trace_of, v = endpoints.batch_fields(parsed)
            tok.iat_roles = fit_iat_roles(trace_of, v["l3"], v["l4"], v["sport"], v["dport"], np.concatenate(iats),
                                          labels)
        tcp_rows, ip_rows = app[:, tok.col("tcp_opts")], app[:, tok.col("ip_opts")]
        tcp_all = [t for p in parsed for t in p.tcp_opts]
        ip_all = [t for p in parsed for t in p.ip_opts]
        tok.tcp_opts = Templates.fit([t for t, k in zip(tcp_all, tcp_rows, strict=True) if k], OPTION_BYTES)
        tok.ip_opts = Templates.fit([t for t, k in zip(ip_all, ip_rows, strict=True) if k], OPTION_BYTES)
        tok.coverage = tok._coverage(matrices)
        for name, tpl, items, rows in (("tcp_opts", tok.tcp_opts, tcp_all, tcp_rows),
                                       ("ip_opts", tok.ip_opts, ip_all, ip_rows)):
            known = [not t or t in tpl.items for t, k in zip(items, rows, strict=True) if k]
            if known:
                tok.coverage[name] = round(float(np.mean(known)), 4)
        return tok

    def _kind_tokens(self, p: Fields) -> np.ndarray:
        """Each packet's kind token: 1 + the index of its (IP version, protocol, transport) in :attr:`kinds`."""
        out = np.full(len(p.l3), ABSENT, np.int32)
        if not self.kinds:
            return out
        key = lambda a, b, c: (np.asarray(a, np.int64) * 257 + np.asarray(b, np.int64) + 1) * 4 + c  # noqa: E731
        table = key(*np.asarray(self.kinds, np.int64).T)
        order = np.argsort(table)
        k = key(p.l3, p.proto, p.l4)
        at = np.minimum(np.searchsorted(table[order], k), len(table) - 1)
        hit = (table[order][at] == k) & (np.asarray(p.l3) != 0)
        out[hit] = order[at[hit]] + 1
        return out

    def encode(self, matrix: np.ndarray, iat_us: np.ndarray | None = None,
               trace_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One trace -> (tokens int32 (n, fields), inter-arrival feature float32 (n,) in [-1, 1]); several traces
        laid end to end when ``trace_of`` gives each packet's trace (contiguous, numbered in order)."""
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[1] != self.layout.width:
            raise ValueError(f"matrix shape {matrix.shape} does not fit layout width {self.layout.width}")
        p = read_fields(matrix, self.layout)
        n = len(matrix)
        tokens = np.zeros((n, len(self.fields)), np.int32)
        tokens[:, 0] = self._kind_tokens(p)
        app = self.applicable()[tokens[:, 0]]
        for j, f in enumerate(self.base_fields[1:], start=1):
            if f in VALUE_FIELDS:
                tokens[:, j] = np.where(app[:, j], self.vocabs[f].encode(p.values[f]), ABSENT)
        sport, dport, ports = p.values["sport"], p.values["dport"], self.port_vocab
        if self.endpoints == "conv":
            col = self.col("conv")
            tokens[:, col : col + 3] = np.stack(endpoints.conv_tokens(p.l3, p.l4, sport, dport, app[:, col], ports,
                                                                      self.conversations, trace_of), axis=1)
        elif ports.slots:
            col = self.col("sport")
            tokens[:, col], tokens[:, col + 1] = slot_tokens(sport, dport, app[:, col], ports, trace_of)
        else:
            for f in PORT_FIELDS:
                tokens[:, self.col(f)] = np.where(app[:, self.col(f)], ports.encode(p.values[f]), ABSENT)
        for f, tpl, items in (("tcp_opts", self.tcp_opts, p.tcp_opts), ("ip_opts", self.ip_opts, p.ip_opts)):
            j = self.col(f)
            tokens[:, j] = np.where(app[:, j], tpl.encode(items), ABSENT)
        iat = np.zeros(n) if iat_us is None else np.asarray(iat_us, np.float64)
        if iat.shape != (n,):
            raise ValueError(f"need one inter-arrival time per packet, got shape {iat.shape} for {n} packets")
        if self.iat_bins:
            tokens[:, -1] = 1 + np.clip(np.floor(IAT_BINS_PER_DECADE * np.log10(1.0 + np.maximum(iat, 0.0))), 0,
                                        self.iat_bins - 1)
        return tokens, encode_iat(iat).astype(np.float32)

    @property
    def width(self) -> int:
        """Columns of a training row: the field tokens (as floats, exact below 2^24), then the IAT feature."""
        return len(self.fields) + 1

    def rows(self, matrix: np.ndarray, iat_us: np.ndarray, trace_of: np.ndarray | None = None) -> np.ndarray:
        """Training rows of one trace, or of several laid end to end (``trace_of``, see :meth:`encode`); see
        :attr:`width`."""
        tokens, iat = self.encode(matrix, iat_us, trace_of)
        return np.concatenate([tokens.astype(np.float32), iat[:, None]], axis=1)

    def decode(self, tokens: np.ndarray, iat: np.ndarray, trace_of: np.ndarray | None = None,
               rng: np.random.Generator | None = None,
               labels: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of the packets of one or more traces (``trace_of``: each row's trace, default one trace;
        ``labels``: each trace's class, for its port ranges) -> (nPrint matrix int8 (n, layout.width),
        inter-arrival µs (n,)); :func:`~netdiff_lib.models.native.token_decode.decode_packed`, then expanded."""
        return decode_packed(self, tokens, iat, trace_of, rng, labels).expand()

    def _coverage(self, matrices: list[np.ndarray]) -> dict[str, float]:
        """Share of applicable training values that got an exact token (not an escape), per field."""
        toks = np.concatenate([self.encode(m)[0] for m in matrices])
        app = self.applicable()[toks[:, 0]]
        out = {}
        for j, f in enumerate(self.base_fields[1:], start=1):
            if not app[:, j].any():
                continue
            t = toks[app[:, j], j]
            if f in VALUE_FIELDS:
                exact = (t >= 1) & (t <= len(self.vocabs[f].values))
            elif f in PORT_FIELDS + CONV_PORTS:
                exact = (t >= 1) & (t < self.vocabs[f].first_slot)
            else:
                continue
            out[f] = round(float(exact.mean()), 4)
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT, "layout": self.layout.to_dict(), "kinds": [list(k) for k in self.kinds],
               "vocabs": {k: v.to_dict() for k, v in self.vocabs.items()}, "tcp_opts": self.tcp_opts.to_dict(),
               "ip_opts": self.ip_opts.to_dict(), "coverage": self.coverage,
               "slot_ranges": self.slot_ranges, "iat_bins": self.iat_bins}
        if self.endpoints != "ports" or self.tcp_state != "off":
            out.update(format=FORMAT_2, endpoints=self.endpoints, conversations=self.conversations,
                       tcp_state=self.tcp_state, tcp_rates=self.tcp_rates)
        if self.conv_decode != "index":
            out["conv_decode"] = self.conv_decode
        if self.single_rates:
            out["single_rates"] = self.single_rates
        if self.iat_decode != "sampled" or self.iat_roles:
            out.update(iat_decode=self.iat_decode, iat_roles=self.iat_roles)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FieldTokenizer:
        if d.get("format") not in (FORMAT, FORMAT_2):
            raise ValueError(f"unknown token format {d.get('format')!r}, expected {FORMAT} or {FORMAT_2}")
        if (d.get("endpoints", "ports") not in ("ports", "conv") or d.get("tcp_state", "off") not in TCP_STATE
                or d.get("conv_decode", "index") not in CONV_DECODE
                or d.get("iat_decode", "sampled") not in IAT_DECODE):
            raise ValueError(f"unknown endpoints {d.get('endpoints')!r}, tcp_state {d.get('tcp_state')!r}, "
                             f"conv_decode {d.get('conv_decode')!r} or iat_decode {d.get('iat_decode')!r}")
        return cls(tuple(tuple(int(x) for x in k) for k in d["kinds"]),
                   {k: Vocab.from_dict(v) for k, v in d["vocabs"].items()}, Templates.from_dict(d["tcp_opts"]),
                   Templates.from_dict(d["ip_opts"]), Layout.from_dict(d["layout"]), dict(d.get("coverage", {})),
                   dict(d.get("slot_ranges", {})), int(d.get("iat_bins", 0)), str(d.get("endpoints", "ports")),
                   int(d.get("conversations", 0)), str(d.get("tcp_state", "off")),
                   {str(k): [float(x) for x in v] for k, v in d.get("tcp_rates", {}).items()},
                   str(d.get("conv_decode", "index")),
                   {str(k): [float(x) for x in v] for k, v in d.get("single_rates", {}).items()},
                   str(d.get("iat_decode", "sampled")),
                   {str(k): {str(r): [float(x) for x in q] for r, q in v.items()}
                    for k, v in d.get("iat_roles", {}).items()})

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FieldTokenizer:
        data = read_json(path, missing="no tokenizer here (tokens.json missing)")
        try:
            return cls.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(path, f"not a tokenizer file ({exc})") from None
