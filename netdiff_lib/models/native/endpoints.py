"""Endpoints of the token view: ports as values and slots, or as conversations; and the TCP state of a conversation.

``model.endpoints=ports`` (the first design) samples a packet's source and destination port as two fields of
their own (service values or per-trace slots, :func:`~netdiff_lib.models.native.vocab.slot_tokens`): the
request and the reply of one flow are then two independent draws, and a port error splits the flow.

``model.endpoints=conv`` makes a flow one object.  A *conversation* is what reconstruction calls a flow
(:mod:`netdiff_lib.repair.flows`): IP version + transport + unordered port pair, within a trace.  Its
*initiator* is the sender of its first packet.  Each TCP/UDP packet carries three fields:

=========== ==========================================================================================
conv        ``1 + 3 k + r``: the packet's conversation index ``k < K`` and its role ``r``: 0 the
            conversation's first packet (it *opens* it), 1 a later packet initiator -> responder, 2 one
            responder -> initiator
server_port the responder's port: a service value, or "ephemeral" (the vocabulary's one slot token)
client_port the initiator's port, the same way (fixed client ports: DHCP 68, NTP 123, mDNS 5353 are values)
=========== ==========================================================================================

Indices are reused, so that ``K`` bounds the conversations open at once, not those of a trace: a new
conversation takes the lowest index whose last conversation has sent its last packet (when all ``K`` are busy,
the index whose conversation ends first: its later packets then join the new one).  Decoding reads a
conversation as an index from one opening packet to the next (packets of an index before its first opening
form one conversation too), votes its server and client port over its packets (the most frequent token),
draws one fresh port per ephemeral endpoint of a conversation from the class's slot ranges (distinct within a
trace), and sets each packet's source and destination from its role: every packet of a conversation shares
its port pair by construction, whatever the tokens.

**Regrouping** (``model.conv_decode``).  A model samples the conversation tokens of a trace's packets in parallel,
and a UDP packet may land in a TCP conversation (40 % of the conversations of a 150 s ``base`` model on IoT
Sentinel hold two transports, BENCHMARKS.md): its ports are the conversation's, but a flow is also its
transport, so it leaves its own flow and becomes a one-packet flow of its own.  ``index`` decodes as described
above; ``regroup`` (the default) gives each conversation the kind (IP version, transport) most of its packets
have and moves each packet of another kind to the conversation of its kind and port tokens with a packet
nearest to it (:func:`regroup`); ``merge`` also moves the packet of a one-packet conversation so; ``calibrate``
moves only as many as leave the class's real share of one-packet flows
(:mod:`~netdiff_lib.models.native.flow_rules`).  Real tokens hold no strays, so ``regroup`` decodes them exactly;
``merge`` does not (real traffic has a few one-packet flows), ``calibrate`` does where a batch holds a class's
real share.

**TCP state** (``model.tcp_state=enforce``, either endpoints mode).  Fitting records per class the share of
TCP flows whose first packet has SYN (flows that started before the capture did not) and the share that carry
a FIN or RST (flows the capture did not cut).  Decoding groups the TCP packets into flows by their decoded
ports and opens and closes them at the class's rates, keeping the model's choice where it can (a flow the
model opened stays open with probability ``min(1, p / s)``, another one opens with probability
``max(0, (p - s) / (1 - s))``, ``s`` the batch's share of model-opened flows of the class, so the expected
share is the class's ``p``; closing alike).  An opened flow: the initiator's first packet becomes a pure SYN,
the responder's first a SYN-ACK, and no other packet of the flow has SYN; a flow left open loses its FIN and
RST flags; a closing the model did not draw puts FIN on each side's last packet.  ``model.tcp_state=handshake``
also places an opened flow's packets so that the SYN-ACK is its second packet and the initiator's ACK its third
(:func:`~netdiff_lib.models.native.flow_rules.handshake_order`).  Reconstruction
(:mod:`netdiff_lib.repair.tcp`) then numbers the connection and keeps RST and FIN at its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from netdiff_lib.models.native.vocab import Vocab, resolve_slots, slot_histogram
from netdiff_lib.repair.flows import _dense_first_seen
from netdiff_lib.repair.groups import Grouping

if TYPE_CHECKING:
    from netdiff_lib.models.native.flow_rules import Calibration

#: TCP flag values in the ``tcp_flags`` field (nine bits, ns ... fin, big-endian)
FIN, SYN, RST, ACK = 0x001, 0x002, 0x004, 0x010
CONV_FIELDS = ("conv", "server_port", "client_port")


def conv_size(conversations: int) -> int:
    """Tokens of the ``conv`` field: absent, then three roles of each of ``conversations`` indices."""
    return 1 + 3 * conversations


def flow_ids(trace_of: np.ndarray, l3: np.ndarray, l4: np.ndarray, sport: np.ndarray,
             dport: np.ndarray) -> np.ndarray:
    """Dense flow ids (trace, IP version, transport, unordered port pair), numbered by first appearance."""
    lo, hi = np.minimum(sport, dport).astype(np.int64), np.maximum(sport, dport).astype(np.int64)
    key = (((np.asarray(trace_of, np.int64) * 8 + np.asarray(l3, np.int64) % 8) * 4 + np.asarray(l4, np.int64))
           << 32) | (lo << 16) | hi
    return _dense_first_seen(key)


def conv_tokens(l3: np.ndarray, l4: np.ndarray, sport: np.ndarray, dport: np.ndarray, present: np.ndarray,
                vocab: Vocab, conversations: int,
                trace_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(conv, server_port, client_port) tokens of one trace's packets (0 where ``present`` is False); of several
    traces' packets laid end to end when ``trace_of`` (each packet's trace, contiguous) is given."""
    n = len(l3)
    out = [np.zeros(n, np.int32) for _ in CONV_FIELDS]
    idx = np.flatnonzero(present)
    if not len(idx):
        return out[0], out[1], out[2]
    s, d = np.asarray(sport, np.int64)[idx], np.asarray(dport, np.int64)[idx]
    trace = np.zeros(len(idx), np.int64) if trace_of is None else np.asarray(trace_of, np.int64)[idx]
    flow = flow_ids(trace, l3[idx], l4[idx], s, d)
    g = Grouping(flow)
    init, resp = g.first(s), g.first(d)
    role = np.where(g.is_first, 0, np.where((s != init) & (s != d), 2, 1))
    k = _allocate(g, conversations)[flow]
    out[0][idx] = 1 + 3 * k + role
    out[1][idx] = vocab.encode(resp)
    out[2][idx] = vocab.encode(init)
    return out[0], out[1], out[2]


def _allocate(g: Grouping, conversations: int) -> np.ndarray:
    """Per flow (dense ids in order of first appearance): the lowest index whose last flow has ended before this
    flow's first packet, else the index whose flow ends first (its later packets join the new conversation).
    Positions only grow, so traces laid end to end need no reset: an earlier trace's flows have all ended."""
    pos = np.arange(g.n)
    first, last = g.first(pos)[g.order[g.first_pos]], g.last(pos)[g.order[g.first_pos]]
    order = np.argsort(first, kind="stable")
    busy_until = np.full(conversations, -1, np.int64)
    out = np.zeros(g.groups, np.int64)
    for f in order.tolist():
        free = np.flatnonzero(busy_until < first[f])
        k = int(free[0]) if len(free) else int(np.argmin(busy_until))
        out[f], busy_until[k] = k, last[f]
    return out


def conv_ports(tokens: np.ndarray, vocab: Vocab, conversations: int, trace_of: np.ndarray, weights: np.ndarray,
               rng: np.random.Generator, kind: np.ndarray | None = None, singles: bool = False,
               calibrate: Calibration | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sport, dport) of every packet from its (conv, server_port, client_port) tokens ``(n, 3)`` (see the
    module docstring); packets without a conversation token get 0.  ``kind`` (each packet's IP version and
    transport as one number): regroup the conversations by it (:func:`regroup`)."""
    t = np.asarray(tokens, np.int64)
    n = len(t)
    sport, dport = np.zeros(n, np.int64), np.zeros(n, np.int64)
    idx = np.flatnonzero(t[:, 0] > 0)
    if not len(idx):
        return sport, dport
    trace = np.asarray(trace_of, np.int64)[idx]
    c = np.clip(t[idx, 0] - 1, 0, 3 * conversations - 1)
    k, role = c // 3, c % 3
    by_index = Grouping(trace * conversations + k)
    epoch = by_index.cumsum((role == 0).astype(np.int64), exclusive=False)
    conv = _dense_first_seen((trace * conversations + k) * (n + 1) + epoch)
    if kind is not None:
        conv, role = regroup(conv, role, trace, np.asarray(kind, np.int64)[idx], t[idx, 1], t[idx, 2], singles,
                             calibrate)
    g = Grouping(conv)
    eph = vocab.first_slot
    srv, cli = (np.clip(g.mode(t[idx, j]), 0, eph) for j in (1, 2))
    # ephemeral endpoints: slots 2j (client) and 2j + 1 (server) of the trace's j-th conversation, all distinct
    local = conv - Grouping(trace).first(conv)
    table = Vocab(vocab.bits, vocab.values, vocab.bins, 2 * (int(local.max()) + 1))
    pair = np.stack([np.where(cli == eph, eph + 2 * local, cli), np.where(srv == eph, eph + 2 * local + 1, srv)], 1)
    ports = resolve_slots(pair, table, trace, weights[: int(trace.max()) + 1], rng, distinct=True)
    back = role == 2
    sport[idx] = np.where(back, ports[:, 1], ports[:, 0])
    dport[idx] = np.where(back, ports[:, 0], ports[:, 1])
    return sport, dport


def regroup(conv: np.ndarray, role: np.ndarray, trace: np.ndarray, kind: np.ndarray, srv: np.ndarray,
            cli: np.ndarray, singles: bool = False,
            calibrate: Calibration | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Conversations of one kind each (``model.conv_decode=regroup``): a conversation's kind is its most frequent
    packet kind; a packet of another kind (a *stray*: the transport would split the conversation into two flows)
    joins the conversation of its trace, its kind and its server and client port tokens whose packet is nearest
    to it (else of its kind and server port, else of its kind), as a later packet (role 0 becomes 1); strays with
    no such conversation form one new conversation per (trace, kind, ports).  ``singles`` (``merge``): then the
    packet of each one-packet conversation joins a conversation so too, if there is one; ``calibrate``
    (``model.conv_decode=calibrate``): only the packets it picks
    (:meth:`~netdiff_lib.models.native.flow_rules.Calibration.move`).
    Returns the conversation ids (dense, numbered by first packet) and the roles."""
    n = len(conv)
    g = Grouping(conv)
    stray = kind != g.mode(kind)
    out, joined = _join(conv, stray, trace, kind, srv, cli)
    if singles or calibrate is not None:
        g = Grouping(out)
        lone = g.size[g.gid] == 1  # never a home: a packet joins a conversation of two or more
        move = lone if calibrate is None else calibrate.move(g, trace, kind, srv, cli)
        out, more = _join(out, move, trace, kind, srv, cli, new=False, home=~lone)
        joined |= more
    ids = _dense_first_seen(Grouping(out).first(np.arange(n)))
    return ids, np.where(joined & (role == 0), 1, role)


def _join(conv: np.ndarray, stray: np.ndarray, trace: np.ndarray, kind: np.ndarray, srv: np.ndarray,
          cli: np.ndarray, new: bool = True, home: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(conversation ids, joined) with the ``stray`` packets moved (:func:`regroup`) to conversations of the
    ``home`` packets (default: the others)."""
    n = len(conv)
    out, todo = conv.copy(), np.flatnonzero(stray)
    if not len(todo):
        return out, np.zeros(n, bool)
    g = Grouping(conv)
    home = np.flatnonzero(~stray if home is None else home & ~stray)
    cs, cc = g.mode(srv, ~stray), g.mode(cli, ~stray)  # the conversation's port votes, over its own kind
    for level in ((trace, kind, srv, cli), (trace, kind, srv), (trace, kind)):
        if not len(todo) or not len(home):
            break
        votes = [a[home] for a in level[:2]] + [cs[home], cc[home]][: len(level) - 2]
        keys = _dense_rows([np.r_[a, b[todo]] for a, b in zip(votes, level, strict=True)])
        at = keys[: len(home)] * (n + 1) + home
        order = np.argsort(at, kind="stable")
        at = at[order]
        q = keys[len(home):] * (n + 1) + todo
        j = np.searchsorted(at, q)
        before, after = np.maximum(j - 1, 0), np.minimum(j, len(at) - 1)
        ok_b = (j > 0) & (at[before] // (n + 1) == q // (n + 1))
        ok_a = (j < len(at)) & (at[after] // (n + 1) == q // (n + 1))
        pick = np.where(ok_b & (~ok_a | (q - at[before] <= at[after] - q)), before, after)
        hit = ok_b | ok_a
        out[todo[hit]] = conv[home[order[pick[hit]]]]
        todo = todo[~hit]
    joined = stray & ~np.isin(np.arange(n), todo)
    if len(todo) and new:  # a trace without a conversation of their kind: one per (trace, kind, ports)
        out[todo] = int(conv.max()) + 1 + _dense_rows([trace[todo], kind[todo], srv[todo], cli[todo]])
    return out, joined


def _dense_rows(columns: list[np.ndarray]) -> np.ndarray:
    """Dense ids of the distinct rows of equal-length integer ``columns`` (each column made dense, then one key)."""
    key = np.zeros(len(columns[0]), np.int64)
    for col in columns:  # dense after every column: the key stays below the number of rows
        uniq, inv = np.unique(col, return_inverse=True)
        key = np.unique(key * len(uniq) + inv.reshape(-1), return_inverse=True)[1].reshape(-1)
    return key


def tcp_rates(trace_of: np.ndarray, l3: np.ndarray, l4: np.ndarray, sport: np.ndarray, dport: np.ndarray,
              flags: np.ndarray, tcp: np.ndarray, labels: list[str]) -> dict[str, list[float]]:
    """Per class (and pooled, key ""): [share of TCP flows whose first packet has SYN, share with a FIN or RST]."""
    idx = np.flatnonzero(tcp)
    if not len(idx):
        return {}
    g = Grouping(flow_ids(trace_of[idx], l3[idx], l4[idx], sport[idx], dport[idx]))
    f = np.asarray(flags, np.int64)[idx]
    first = np.flatnonzero(g.is_first)
    opened = (f[first] & SYN) > 0
    closed = g.any((f & (FIN | RST)) > 0)[first]
    lab = np.asarray(labels, dtype=object)[np.asarray(trace_of)[idx][first]].astype(str)
    rates = {"": [round(float(opened.mean()), 4), round(float(closed.mean()), 4)]}
    rates.update({c: [round(float(opened[lab == c].mean()), 4), round(float(closed[lab == c].mean()), 4)]
                  for c in np.unique(lab) if c})
    return rates


def _at_rate(model: np.ndarray, rate: np.ndarray, lab: list[str], u: np.ndarray) -> np.ndarray:
    """Per flow: keep the model's choice ``model`` with probability ``min(1, p / s)``, else choose it with
    probability ``max(0, (p - s) / (1 - s))`` (``s``: the share of ``model`` among the class's flows), so that
    the expected share is the class's rate ``p``."""
    keep, add = np.zeros(len(model)), np.zeros(len(model))
    labs = np.asarray(lab, dtype=object)
    for cls in sorted(set(lab)):
        sel = labs == cls
        p, share = float(rate[sel][0]), float(model[sel].mean())
        keep[sel] = min(1.0, p / share) if share > 0 else 0.0
        add[sel] = max(0.0, (p - share) / (1.0 - share)) if share < 1 else 0.0
    return np.where(model, u < keep, u < add)


@dataclass
class Connections:
    """The TCP packets of a batch (rows ``idx``) as connections: flows by decoded ports (``g``, over ``idx``), and
    per packet whether its flow opens, closes, and held a FIN or RST as sampled (:func:`tcp_connections`)."""

    idx: np.ndarray
    g: Grouping
    opened: np.ndarray
    closed: np.ndarray
    model_closed: np.ndarray


def tcp_connections(flags: np.ndarray, tcp: np.ndarray, trace_of: np.ndarray, l3: np.ndarray, sport: np.ndarray,
                    dport: np.ndarray, labels: list[str], rates: dict[str, list[float]],
                    rng: np.random.Generator) -> Connections | None:
    """The TCP connections of a batch, opened and closed at the class's rates (None: no TCP packet or no rates)."""
    idx = np.flatnonzero(tcp)
    if not len(idx) or not rates:
        return None
    trace = np.asarray(trace_of, np.int64)[idx]
    g = Grouping(flow_ids(trace, l3[idx], np.ones(len(idx)), sport[idx], dport[idx]))
    f = np.asarray(flags, np.int64)[idx]
    first = np.flatnonzero(g.is_first)  # one packet per flow, in flow order
    lab = [labels[int(i)] if int(i) < len(labels) else "" for i in trace[first]]
    p = np.array([rates.get(x, rates.get("", [1.0, 1.0])) for x in lab], np.float64).reshape(-1, 2)
    u = rng.random((2, len(first)))
    per_flow = np.zeros((2, g.groups), bool)
    model_closed = g.any((f & (FIN | RST)) > 0)
    per_flow[0, g.gid[first]] = _at_rate((f[first] & SYN) > 0, p[:, 0], lab, u[0])
    per_flow[1, g.gid[first]] = _at_rate(model_closed[first], p[:, 1], lab, u[1])
    return Connections(idx, g, per_flow[0][g.gid], per_flow[1][g.gid], model_closed)


def connection_flags(c: Connections | None, flags: np.ndarray, sport: np.ndarray,
                     handshake: bool = False) -> np.ndarray:
    """TCP flag values of the connections ``c`` (see the module docstring); ``handshake``: the initiator's packet
    after the SYN-ACK also has ACK (:func:`~netdiff_lib.models.native.flow_rules.handshake_order` put it there),
    and a closed connection whose only FIN or RST was on the packet that became the SYN-ACK gets FIN on each
    side's last packet that is no SYN."""
    flags = np.asarray(flags, np.int64).copy()
    if c is None:
        return flags
    g, f, s = c.g, flags[c.idx], np.asarray(sport, np.int64)[c.idx]
    side = (s != g.first(s)).astype(np.int64)
    sd = Grouping(g.gid * 2 + side)
    f = np.where(c.closed, f, f & ~(FIN | RST))
    f = np.where(c.closed & ~c.model_closed & sd.is_last, f | FIN | ACK, f)  # a closing the model did not draw
    f = f & ~SYN
    f = np.where(c.opened & g.is_first, SYN, f)
    f = np.where(c.opened & (side == 1) & sd.is_first, SYN | ACK, f)
    if handshake:  # the ACK; and a closing whose FIN or RST the SYN-ACK took goes to a later packet
        f = np.where(c.opened & (g.rank == 2) & (side == 0), f | ACK, f)
        lost = c.closed & ~g.any((f & (FIN | RST)) > 0)
        f = np.where(lost & sd.is_last & ((f & SYN) == 0), f | FIN | ACK, f)
    flags[c.idx] = f
    return flags


def enforce_tcp(flags: np.ndarray, tcp: np.ndarray, trace_of: np.ndarray, l3: np.ndarray, sport: np.ndarray,
                dport: np.ndarray, labels: list[str], rates: dict[str, list[float]],
                rng: np.random.Generator) -> np.ndarray:
    """TCP flag values with connections opened and closed at the class's rates (see the module docstring)."""
    conn = tcp_connections(flags, tcp, trace_of, l3, sport, dport, labels, rates, rng)
    return connection_flags(conn, flags, sport)


def slot_ranges(ports_by_trace: list[np.ndarray], labels: list[str], service: np.ndarray) -> dict[str, list[float]]:
    """Per class (and pooled, key ""): the range histogram of the ports that are no service value."""
    by_label: dict[str, list[np.ndarray]] = {}
    for ports, lab in zip(ports_by_trace, labels, strict=True):
        by_label.setdefault(lab, []).append(ports[~np.isin(ports, service)])
    out = {lab: np.concatenate(v) for lab, v in by_label.items()}
    pooled = np.concatenate(list(out.values())) if out else np.zeros(0, np.int64)
    ranges = {"": slot_histogram(pooled) if len(pooled) else [1.0] * 64}
    ranges.update({lab: slot_histogram(v) for lab, v in out.items() if lab and len(v)})
    return ranges


def trace_ports(parsed: list[Any], port_rows: np.ndarray) -> list[np.ndarray]:
    """Per trace (``parsed``: :class:`~netdiff_lib.models.native.tokens.Fields`): the source and destination ports
    of its TCP/UDP packets (``port_rows``: all traces' rows)."""
    out, start = [], 0
    for p in parsed:
        rows = port_rows[start : start + len(p.l3)]
        start += len(p.l3)
        out.append(np.concatenate([p.values["sport"][rows], p.values["dport"][rows]]))
    return out


def batch_fields(parsed: list[Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(trace of each packet, {l3, l4, sport, dport, tcp_flags} of all packets) of parsed traces (``parsed``:
    :class:`~netdiff_lib.models.native.tokens.Fields`)."""
    out = {k: np.concatenate([getattr(p, k) for p in parsed]) for k in ("l3", "l4")}
    out.update({k: np.concatenate([p.values[k] for p in parsed]) for k in ("sport", "dport", "tcp_flags")})
    return np.repeat(np.arange(len(parsed)), [len(p.l3) for p in parsed]), out


def fit_tcp_rates(parsed: list[Any], labels: list[str]) -> dict[str, list[float]]:
    """Per class: the shares of TCP flows of the training traces that open with SYN and that close
    (:func:`tcp_rates`)."""
    trace_of, v = batch_fields(parsed)
    return tcp_rates(trace_of, v["l3"], v["l4"], v["sport"], v["dport"], v["tcp_flags"],
                     (v["l3"] != 0) & (v["l4"] == 1), labels)
