"""Field tokens -> nPrint rows, in two halves: the decoding proper, then the expansion into bits.

:func:`decode_packed` turns a batch of sampled tokens (any number of traces, vectorised over all rows: no
Python loop per trace, conversation or packet) into the header bytes the rows stand for, *packed*: one value
byte and one on-the-wire bit per byte of the layout (:class:`Packed`, 1/7 of the nPrint matrix's size), plus
the inter-arrival times.  :meth:`Packed.expand` makes the nPrint matrix of it (one table look-up per byte).
The sampler runs the first half in worker processes, which share no interpreter lock with the thread that
drives the GPU, and sends back the small packed form (:mod:`~netdiff_lib.models.native.host_decode`);
:meth:`~netdiff_lib.models.native.tokens.FieldTokenizer.decode` runs both halves in the calling thread.
Either way a batch and its random generator give the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from netdiff_lib.models.native import endpoints, flow_rules, iat_roles
from netdiff_lib.models.native.token_schema import (
    IAT_BINS_PER_DECADE,
    OPTION_BYTES,
    PORT_FIELDS,
    TCP_FLAGS,
    VALUE_FIELDS,
)
from netdiff_lib.models.native.vocab import decode_iat, resolve_slots
from netdiff_lib.repair.headers import expand_bits, packed, put
from netdiff_lib.schema import BLOCKS, Layout

if TYPE_CHECKING:
    from netdiff_lib.models.native.tokens import FieldTokenizer


def with_rules(tok: FieldTokenizer, **rules: str) -> tuple[FieldTokenizer, list[str]]:
    """``tok`` decoding by other ``rules`` (``tcp_state``, ``conv_decode``, ``iat_decode``: ``netdiff generate
    --set``; the fitted state is kept), and a one-line notice for each rule that needs fitted state ``tok`` lacks
    (a folder trained without it), which then decodes as such a folder always did."""
    notices = []
    if rules.get("tcp_state", "off") != "off" and not tok.tcp_rates:
        notices.append(f"model.tcp_state={rules['tcp_state']} needs the TCP opening rates fitted in training, which "
                       "this model lacks (trained with tcp_state=off): TCP flags stay as sampled")
    if rules.get("conv_decode", "index") != "index" and tok.endpoints != "conv":
        notices.append(f"model.conv_decode={rules['conv_decode']} applies to model.endpoints=conv only: this model's "
                       "ports decode as before")
        rules["conv_decode"] = "index"
    elif rules.get("conv_decode") == "calibrate" and not tok.single_rates:
        notices.append("model.conv_decode=calibrate needs the one-packet flow shares fitted in training, which this "
                       "model lacks (trained with another conv_decode): decoding as regroup")
    if rules.get("iat_decode") == "role" and not tok.iat_roles:
        notices.append("model.iat_decode=role needs the role tables fitted in training, which this model lacks: "
                       "inter-arrival times stay as sampled")
    return replace(tok, **rules), notices


@dataclass
class Packed:
    """Decoded rows before expansion: value bytes ``val`` (n, width / 8) uint8 (0 off the wire), which bytes are
    on the wire ``on`` (n, width / 64) (``np.packbits`` of one flag per byte), inter-arrival µs ``iat`` (n,)."""

    val: np.ndarray
    on: np.ndarray
    iat: np.ndarray

    def expand(self) -> tuple[np.ndarray, np.ndarray]:
        """(nPrint matrix int8 (n, width): the bits of on-the-wire bytes, -1 elsewhere; inter-arrival µs)."""
        on = np.unpackbits(self.on, axis=1, count=self.val.shape[1])
        return expand_bits(self.val, on), self.iat


@dataclass
class BatchCodec:
    """The host codec of the ``tokens`` representation (picklable, no torch): a batch of sampled rows ->
    :class:`Packed` (in a worker process) -> nPrint rows (:meth:`~netdiff_lib.models.native.representation.
    Representation.host_codec`)."""

    tokenizer: FieldTokenizer

    def decode_compact(self, host: tuple[np.ndarray, np.ndarray], lengths: np.ndarray, labels: list[str],
                       rng: np.random.Generator) -> Packed:
        rows, iat = host
        return decode_packed(self.tokenizer, rows, iat, np.repeat(np.arange(len(lengths)), lengths), rng, labels)

    @staticmethod
    def expand(compact: Packed) -> tuple[np.ndarray, np.ndarray]:
        return compact.expand()


def decode_packed(tok: FieldTokenizer, tokens: np.ndarray, iat: np.ndarray, trace_of: np.ndarray | None = None,
                  rng: np.random.Generator | None = None, labels: list[str] | None = None) -> Packed:
    """Tokens of the packets of one or more traces (``trace_of``: each row's trace, default one trace;
    ``labels``: each trace's class, for its port ranges) -> their rows, packed.  Vectorised over all rows."""
    t = np.asfortranarray(tokens, np.int64)  # column by column: each field's tokens contiguous
    n = len(t)
    rng = rng or np.random.default_rng(0)
    trace_of = np.zeros(n, np.int64) if trace_of is None else np.asarray(trace_of, np.int64)
    n_traces = int(trace_of.max()) + 1 if n else 0
    kinds = np.array([(0, -1, 0), *tok.kinds], np.int64)[np.clip(t[:, 0], 0, len(tok.kinds))]
    val = {f: tok.vocabs[f].decode(t[:, tok.col(f)], rng) for f in VALUE_FIELDS}
    labels = labels or [""] * n_traces
    pooled = tok.slot_ranges.get("", [1.0] * 64)
    ranges = np.array([tok.slot_ranges.get(lab, pooled) for lab in labels]).reshape(-1, 64)
    l3, proto, l4 = kinds[:, 0], kinds[:, 1], kinds[:, 2]
    ported = (l3 != 0) & ((l4 == 1) | (l4 == 2))
    if tok.endpoints == "conv":
        col = tok.col("conv")
        conv = np.where(ported, t[:, col], 0)[:, None]
        kind = l3 * 4 + l4 if tok.conv_decode != "index" else None
        calibrate = (flow_rules.Calibration.of(tok.single_rates, labels, tok.port_vocab.first_slot, rng)
                     if tok.conv_decode == "calibrate" and tok.single_rates else None)
        val["sport"], val["dport"] = endpoints.conv_ports(np.concatenate([conv, t[:, col + 1 : col + 3]], 1),
                                                          tok.port_vocab, tok.conversations, trace_of,
                                                          ranges, rng, kind, tok.conv_decode == "merge", calibrate)
    else:
        ports = resolve_slots(t[:, [tok.col(f) for f in PORT_FIELDS]], tok.port_vocab, trace_of, ranges, rng)
        val.update({f: ports[:, i] for i, f in enumerate(PORT_FIELDS)})
    opts = [*tok.tcp_opts.decode(t[:, tok.col("tcp_opts")], rng), *tok.ip_opts.decode(t[:, tok.col("ip_opts")], rng)]
    v4, v6 = l3 == 4, l3 == 6
    tcp, udp, icmp = (l3 != 0) & (l4 == 1), (l3 != 0) & (l4 == 2), (l3 != 0) & (l4 == 3)
    if tok.tcp_state != "off":
        opts = _tcp_rules(tok, val, opts, tcp, trace_of, l3, labels, rng)
    tcp_opt, tcp_optlen, ip_opt, ip_optlen = opts
    ip_hdr = np.where(v4, 20 + ip_optlen, 40)
    rand32 = rng.integers(0, 2**32, size=(3, n), dtype=np.int64)
    w = _Blocks(n, tok.layout)
    w.write(v4, "ipv4", {"ver": 4, "hl": 5 + ip_optlen // 4, "tos": val["tos"], "tl": val["ip_len"],
                         "id": val["ip_id"], "dfbit": val["ip_df"], "ttl": val["ttl"], "proto": proto},
            20 + ip_optlen, (ip_opt, ip_optlen))
    w.write(v6, "ipv6", {"ver": 6, "tc": val["tos"], "fl": val["v6_flow"], "len": val["ip_len"] - 40,
                         "nh": proto, "hl": val["ttl"]}, 40)
    flags = {f: (val["tcp_flags"] >> (len(TCP_FLAGS) - 1 - i)) & 1 for i, f in enumerate(TCP_FLAGS)}
    w.write(tcp, "tcp", {"sprt": val["sport"], "dprt": val["dport"], "seq": rand32[0], "ackn": rand32[1],
                         "doff": 5 + tcp_optlen // 4, "wsize": val["tcp_win"], "urp": val["tcp_urp"], **flags},
            20 + tcp_optlen, (tcp_opt, tcp_optlen))
    w.write(udp, "udp", {"sport": val["sport"], "dport": val["dport"],
                         "len": np.maximum(val["ip_len"] - ip_hdr, 8)}, 8)
    w.write(icmp, "icmp", {"type": val["icmp"] >> 8, "code": val["icmp"] & 0xFF, "roh": rand32[2]}, 8)
    value, on = packed(w.blocks, w.lengths, tok.layout)
    if tok.iat_bins:
        b = np.clip(t[:, -1] - 1, 0, tok.iat_bins - 1) + rng.random(n)
        us = 10.0 ** (b / IAT_BINS_PER_DECADE) - 1.0
    else:
        us = decode_iat(iat)
    if tok.iat_decode == "role" and tok.iat_roles:  # model.iat_decode: the long gaps where conversations open
        role = iat_roles.packet_roles(trace_of, l3, l4, val["sport"], val["dport"])
        us = iat_roles.role_iat(us, role, trace_of, labels, tok.iat_roles)
    return Packed(value, np.packbits(on, axis=1), us)


def _tcp_rules(tok: FieldTokenizer, val: dict[str, np.ndarray], opts: list[np.ndarray], tcp: np.ndarray,
               trace_of: np.ndarray, l3: np.ndarray, labels: list[str],
               rng: np.random.Generator) -> list[np.ndarray]:
    """The TCP state rules on the decoded values ``val`` (in place) and option arrays ``opts`` (returned):
    connections opened and closed at the class's rates (:mod:`.endpoints`); ``handshake``: each opened one's
    packets placed for a full handshake first (:func:`~netdiff_lib.models.native.flow_rules.handshake_order`)."""
    conn = endpoints.tcp_connections(val["tcp_flags"], tcp, trace_of, l3, val["sport"], val["dport"], labels,
                                     tok.tcp_rates, rng)
    handshake = tok.tcp_state == "handshake"
    if handshake:
        order, flip = flow_rules.handshake_order(conn, val["sport"], val["dport"], len(tcp))
        val.update({k: v[order] for k, v in val.items()})
        opts = [a[order] for a in opts]
        val["sport"], val["dport"] = np.where(flip, val["dport"], val["sport"]), np.where(flip, val["sport"],
                                                                                          val["dport"])
    val["tcp_flags"] = endpoints.connection_flags(conn, val["tcp_flags"], val["sport"], handshake)
    return opts


class _Blocks:
    """Header blocks as bytes (the reconstruction's view, :mod:`netdiff_lib.repair.headers`) for ``n`` packets;
    :func:`~netdiff_lib.repair.headers.packed` lays them out in the layout's byte columns in one pass."""

    def __init__(self, n: int, layout: Layout) -> None:
        self.blocks = {b: np.zeros((n, BLOCKS[b].nbytes), np.uint8) for b in layout.blocks}
        self.lengths = {b: np.zeros(n, np.int64) for b in layout.blocks}

    def write(self, rows: np.ndarray, block: str, values: dict[str, Any], length: np.ndarray | int,
              options: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Fields of ``block`` on ``rows`` (other fixed fields 0), its option bytes, its on-the-wire length."""
        idx = np.flatnonzero(rows)
        if not len(idx) or block not in self.blocks:
            return
        sub = {block: np.zeros((len(idx), BLOCKS[block].nbytes), np.uint8)}  # the rows' bytes, contiguous
        for short, v in values.items():
            put(sub, f"{block}_{short}", np.asarray(v)[idx] if np.ndim(v) else v)
        if options is not None:
            sub[block][:, 20 : 20 + OPTION_BYTES] = options[0][idx]
        self.blocks[block][idx] = sub[block]  # each block is written once: its rows were zero
        self.lengths[block][idx] = np.broadcast_to(length, rows.shape)[idx]
