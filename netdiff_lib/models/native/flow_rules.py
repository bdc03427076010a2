"""Decoding rules that give generated flows the shape of the class's real ones, by construction.

The first is fitted per class on the training traces (like the TCP rates of :mod:`.endpoints`, which the second
builds on); both are kept in the tokenizer's state (``tokens.json``: ``conv_decode`` with ``single_rates``, and
``tcp_state``), so a model folder written without them decodes as it did.

**One-packet flows at the class's share** (``model.conv_decode=calibrate``).  Fitting records per class and
transport (TCP, UDP) the share of flows that hold one packet (:func:`single_rates`; the two differ: on IoT
Sentinel one class has 5 % of its TCP flows and 17 % of its UDP flows of one packet, another 19 % and 2 %).
Decoding regroups (:func:`~netdiff_lib.models.native.endpoints.regroup`), then, per class and transport over
the batch, keeps each one-packet flow with probability ``q = min(1, p (N - S) / ((1 - p) S))`` and moves the
others' packet into the nearest conversation of its kind and ports, as ``merge`` does (``p``: the class's share,
``N`` the batch's flows of the class and transport, ``S`` the one-packet ones among them).  ``q`` is ``p / s``
(``s = S / N``, the rate matching of the TCP rules) corrected for the flows that the moved packets leave:
``q S`` kept of ``N - S + q S`` flows is the share ``p``.  A flow is counted as the decoded ports will make it
(:meth:`Calibration.move`): conversations whose two ports are service values share their port pair with any
other of the trace's that has the same pair.  A model with fewer one-packet flows than ``p`` keeps all of them
(none are made).

**Full handshakes** (``model.tcp_state=handshake``: the ``enforce`` rules, and this).  A connection that the TCP
rules open is, to a flow meter (nfstream, :mod:`netdiff_lib.evaluate.flows`), a *full handshake* when its first
packet is a SYN without ACK, the responder sends a SYN and the initiator an ACK.  Reconstruction
(:mod:`netdiff_lib.repair.tcp`) makes the responder's first packet the SYN-ACK but turns the initiator's packets
before it into SYN retransmissions, so a connection whose sampled second packet is the initiator's again has no
handshake, nor one without an initiator's packet after the responder's first.  :func:`handshake_order` makes the
packets in the second and third places of each opened connection the responder's and the initiator's (of a
connection of two packets, the second is the responder's), and the flag rules
(:func:`~netdiff_lib.models.native.endpoints.connection_flags`) then make them the SYN-ACK and an ACK (SYN and
SYN-ACK carry no payload: reconstruction drops it; a closing whose only FIN or RST was on the packet that became
the SYN-ACK moves to each side's last packet).  The change
that disturbs least: **move, else flip**.  Where the connection holds a packet of the side needed, the first such
packet moves forward into the place and the packets it passes move back one place each (a stable move: each
side keeps its own packets, their order, contents and count; only the interleaving of the two sides changes,
and the times stay with the places, so the trace's timing is untouched); where it holds none (a connection of
the initiator's packets only, or of the responder's after the SYN), the packet in the place changes direction
(ports swapped).  At most one move or one flip per connection; connections not opened, and those whose two
ports are equal (no direction), stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netdiff_lib.models.native.endpoints import Connections, batch_fields, flow_ids
from netdiff_lib.repair.groups import Grouping


def single_rates(trace_of: np.ndarray, l3: np.ndarray, l4: np.ndarray, sport: np.ndarray, dport: np.ndarray,
                 labels: list[str]) -> dict[str, list[float]]:
    """Per class (and pooled, key ""): [share of TCP flows of one packet, share of UDP flows of one packet]; a
    class without flows of a transport gets the pooled share, and none at all 1 (keep every one)."""
    idx = np.flatnonzero((np.asarray(l3) != 0) & ((np.asarray(l4) == 1) | (np.asarray(l4) == 2)))
    if not len(idx):
        return {}
    trace = np.asarray(trace_of, np.int64)[idx]
    g = Grouping(flow_ids(trace, l3[idx], l4[idx], sport[idx], dport[idx]))
    first = np.flatnonzero(g.is_first)
    one, udp = g.size[g.gid[first]] == 1, np.asarray(l4)[idx][first] == 2
    lab = np.asarray(labels, dtype=object)[trace[first]].astype(str)

    def shares(sel: np.ndarray, fallback: list[float]) -> list[float]:
        return [float(one[sel & m].mean()) if (sel & m).any() else fallback[j]
                for j, m in enumerate((~udp, udp))]

    pooled = shares(np.ones(len(first), bool), [1.0, 1.0])
    return {"": pooled} | {str(c): shares(lab == c, pooled) for c in np.unique(lab) if c}


def fit_single_rates(parsed: list[Any], labels: list[str]) -> dict[str, list[float]]:
    """:func:`single_rates` of the training traces (``parsed``: :class:`~netdiff_lib.models.native.tokens.Fields`)."""
    trace_of, v = batch_fields(parsed)
    return single_rates(trace_of, v["l3"], v["l4"], v["sport"], v["dport"], labels)


@dataclass
class Calibration:
    """Per trace of a batch: its class's one-packet shares (``share`` (traces, 2): TCP, UDP) and its class id;
    ``first_slot``: the port vocabulary's ephemeral token (tokens below it are service values)."""

    share: np.ndarray
    cls: np.ndarray
    first_slot: int
    rng: np.random.Generator

    @classmethod
    def of(cls, rates: dict[str, list[float]], labels: list[str], first_slot: int,
           rng: np.random.Generator) -> Calibration:
        pooled = rates.get("", [1.0, 1.0])
        share = np.array([rates.get(lab, pooled) for lab in labels], np.float64).reshape(-1, 2)
        ids = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1]
        return cls(share, ids.reshape(-1), first_slot, rng)

    def move(self, g: Grouping, trace: np.ndarray, kind: np.ndarray, srv: np.ndarray,
             cli: np.ndarray) -> np.ndarray:
        """Per packet of the conversations ``g`` (``trace``, ``kind``, ``srv``, ``cli``: each packet's trace, IP
        version and transport as one number, and port tokens): True where it is the packet of a one-packet flow
        that joins another conversation (see the module docstring).  A flow is what the decoded ports make of
        the conversations: two conversations of a trace and kind whose ports are both service values (NTP
        123-123, mDNS) share a port pair, hence one flow; one with an ephemeral port is a flow of its own."""
        first = np.flatnonzero(g.is_first)
        ports = [g.mode(x)[first] for x in (srv, cli)]
        fixed = (np.minimum(*ports) >= 1) & (np.maximum(*ports) < self.first_slot)
        t, k = trace[first], kind[first]
        key = (((t * 64 + k) << 16 | np.minimum(*ports)) << 16) | np.maximum(*ports)
        flow = np.unique(np.where(fixed, key, -1 - np.arange(len(first))), return_inverse=True)[1].reshape(-1)
        packets = np.bincount(flow, weights=g.size[g.gid[first]])
        lone = packets[flow] == 1
        udp = (k % 4 == 2).astype(np.int64)
        at_first = np.unique(flow, return_index=True)[1]  # one conversation per flow
        group = self.cls[t] * 2 + udp
        n = np.bincount(group[at_first], minlength=int(group.max()) + 1)[group]
        s = np.bincount(group[at_first], weights=lone[at_first], minlength=int(group.max()) + 1)[group]
        p = self.share[t, udp]
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(p >= 1, 1.0, np.clip(p * (n - s) / ((1 - p) * np.maximum(s, 1)), 0.0, 1.0))
        moved = np.zeros(g.groups, bool)
        moved[g.gid[first]] = lone & (self.rng.random(len(first)) >= q)
        return moved[g.gid]


def handshake_order(c: Connections | None, sport: np.ndarray, dport: np.ndarray,
                    n: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, flip) over the ``n`` rows of a batch: row ``i`` takes the header of row ``order[i]``, then rows
    where ``flip`` is set swap their ports, so that each opened connection's second packet is the responder's and
    its third the initiator's (see the module docstring)."""
    order, flip = np.arange(n), np.zeros(n, bool)
    if c is None:
        return order, flip
    g, r = c.g, c.g.rank
    s, d = np.asarray(sport, np.int64)[c.idx], np.asarray(dport, np.int64)[c.idx]
    back = s != g.first(s)
    aim = np.zeros(g.groups, bool)
    aim[g.gid] = c.opened & (g.first(s) != g.first(d)) & (g.size[g.gid] >= 2)
    at = np.zeros((3, g.groups), bool)
    for k in (1, 2):
        at[k, g.gid[r == k]] = back[r == k]
    big = len(r) + 1
    first_back, first_fwd = np.full(g.groups, big), np.full(g.groups, big)
    np.minimum.at(first_back, g.gid, np.where(back & (r >= 1), r, big))
    np.minimum.at(first_fwd, g.gid, np.where(~back & (r >= 2), r, big))
    fix_1 = aim & ~at[1]  # the second packet must be the responder's
    fix_2 = aim & at[1] & (g.size >= 3) & at[2]  # the third the initiator's
    lo = np.where(fix_1, 1, 2)
    hi = np.where(fix_1, first_back, first_fwd)
    move, turn = (fix_1 | fix_2) & (hi < big), (fix_1 | fix_2) & (hi >= big)
    lo_p, hi_p, move_p = lo[g.gid], hi[g.gid], move[g.gid]
    new_rank = np.where(move_p & (r == hi_p), lo_p, np.where(move_p & (r >= lo_p) & (r < hi_p), r + 1, r))
    local = np.empty(len(r), np.int64)
    local[g.order[g.first_pos[g.gid] + new_rank]] = np.arange(len(r))
    order[c.idx] = c.idx[local]
    flip[c.idx[turn[g.gid] & (r == lo_p)]] = True
    return order, flip
