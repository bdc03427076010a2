"""Decoding rules that give generated flows the shape of the class's real ones, by construction.

Both are fitted per class on the training traces (like the TCP rates of :mod:`.endpoints`) and kept in the
tokenizer's state (``tokens.json``), so a model folder written without them decodes as it did.

**One-packet conversations at the class's share** (``model.conv_decode=calibrate``).  Fitting records per class
and transport (TCP, UDP) the share of flows that hold one packet (:func:`single_rates`; the two differ: on IoT
Sentinel one class has 5 % of its TCP flows and 17 % of its UDP flows of one packet, another 19 % and 2 %).
Decoding regroups (:func:`~netdiff_lib.models.native.endpoints.regroup`), then, per class and transport over
the batch, keeps each one-packet conversation with probability ``q = min(1, p (N - S) / ((1 - p) S))`` and moves
the others into the nearest conversation of their kind and ports, as ``merge`` does (``p``: the class's share,
``N`` the batch's conversations of the class and transport, ``S`` the one-packet ones among them).  ``q`` is
``p / s`` (``s = S / N``, the rate matching of the TCP rules) corrected for the conversations that the moved
packets leave: ``q S`` kept of ``N - S + q S`` conversations is the share ``p``.  A model with fewer one-packet
conversations than ``p`` keeps all of them (none are made).

**Full handshakes** (``model.tcp_state=handshake``: the ``enforce`` rules, and this).  A connection that the TCP
rules open is, to a flow meter (nfstream, :mod:`netdiff_lib.evaluate.flows`), a *full handshake* when its first
packet is a SYN without ACK, the responder sends a SYN and the initiator an ACK.  Reconstruction
(:mod:`netdiff_lib.repair.tcp`) makes the responder's first packet the SYN-ACK but turns the initiator's packets
before it into SYN retransmissions, so a connection whose sampled second packet is the initiator's again has no
handshake.  :func:`handshake_order` makes the packets in the second and third places of each opened connection
the responder's and the initiator's (a connection of two packets: the responder's second), and the flag rules
then make them the SYN-ACK and an ACK (SYN and SYN-ACK carry no payload: reconstruction drops it).  The change
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
        return [round(float(one[sel & m].mean()), 4) if (sel & m).any() else fallback[j]
                for j, m in enumerate((~udp, udp))]

    pooled = shares(np.ones(len(first), bool), [1.0, 1.0])
    return {"": pooled} | {c: shares(lab == c, pooled) for c in np.unique(lab) if c}


def fit_single_rates(parsed: list[Any], labels: list[str]) -> dict[str, list[float]]:
    """:func:`single_rates` of the training traces (``parsed``: :class:`~netdiff_lib.models.native.tokens.Fields`)."""
    trace_of, v = batch_fields(parsed)
    return single_rates(trace_of, v["l3"], v["l4"], v["sport"], v["dport"], labels)


@dataclass
class Calibration:
    """Per trace of a batch: its class's one-packet shares (``share`` (traces, 2): TCP, UDP) and its class id."""

    share: np.ndarray
    cls: np.ndarray
    rng: np.random.Generator

    @classmethod
    def of(cls, rates: dict[str, list[float]], labels: list[str], rng: np.random.Generator) -> Calibration:
        pooled = rates.get("", [1.0, 1.0])
        share = np.array([rates.get(lab, pooled) for lab in labels], np.float64).reshape(-1, 2)
        return cls(share, np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1], rng)

    def keep(self, g: Grouping, trace: np.ndarray, kind: np.ndarray) -> np.ndarray:
        """Per packet of the conversations ``g`` (``trace``, ``kind``: each packet's trace and IP version and
        transport as one number): True where it is a one-packet conversation that stays (see the module
        docstring)."""
        first = np.flatnonzero(g.is_first)
        lone = g.size[g.gid[first]] == 1
        t, udp = trace[first], (kind[first] % 4 == 2).astype(np.int64)
        key = self.cls[t] * 2 + udp
        n, s = np.bincount(key, minlength=1), np.bincount(key, weights=lone, minlength=1)
        p, n, s = self.share[t, udp], n[key], s[key]
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(p >= 1, 1.0, np.clip(p * (n - s) / ((1 - p) * np.maximum(s, 1)), 0.0, 1.0))
        stays = np.zeros(g.groups, bool)
        stays[g.gid[first]] = lone & (self.rng.random(len(first)) < q)
        return stays[g.gid]


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
