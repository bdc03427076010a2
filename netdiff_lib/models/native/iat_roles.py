"""Role-conditional inter-arrival times (``model.iat_decode=role``).

Real traffic of a device is bursts (a conversation's packets milliseconds apart) between long gaps (the next
conversation opens seconds later).  A model can learn the inter-arrival *marginal* of a class well and still put
the long gaps inside conversations, which makes its flows last far too long (BENCHMARKS.md, "Native generator,
conversations").  This rule keeps each packet's sampled time as a *quantile* and moves the gaps to where they
belong: fitting records, per class (and pooled, key ``""``), the quantiles of ``log10(1 + µs)`` of all packets and
of each packet *role* (:data:`ROLES`): the packet that opens a flow (IP version, transport, port pair within the
trace), a later packet in the opener's direction (request), one in the other direction (reply), a packet
without ports (ICMP, ARP...); an opening or portless packet is *inside* when another flow began before it and
has a packet after it (a new conversation while others go on opens after a short gap; one on an idle trace
after a long one).  Decoding reads each packet's role from its decoded ports, finds the rank of its
sampled time in the class's pooled distribution and takes the same rank in its role's distribution: the
model's ranking is kept within a role (a longer sampled gap stays at least as long), the marginal of each role
becomes the class's real one.  Each trace's first packet is left out of the fit (its gap is not a gap).
"""

from __future__ import annotations

import numpy as np

from netdiff_lib.models.native.endpoints import flow_ids

#: packet roles: opens a flow, later packet of the opener's direction, of the other direction, no ports; an
#: opening or portless packet *inside* another flow (one that began before it and has a packet after it)
ROLES = ("open", "request", "reply", "other", "open_inside", "other_inside")
#: a role without a table of its own takes that of (class first, then pooled)
FALLBACK = {"open_inside": "open", "other_inside": "other"}
#: points of each quantile table (levels 0, 1/100, ..., 1)
LEVELS = 101
#: packets a (class, role) needs for a table of its own (else the pooled table of that role)
MIN_PACKETS = 20


def packet_roles(trace_of: np.ndarray, l3: np.ndarray, l4: np.ndarray, sport: np.ndarray,
                 dport: np.ndarray) -> np.ndarray:
    """Each packet's role, an index into :data:`ROLES`, from its decoded ports (rows in trace order)."""
    n = len(l3)
    ported = (np.asarray(l3) != 0) & ((np.asarray(l4) == 1) | (np.asarray(l4) == 2))
    role = np.full(n, ROLES.index("other"), np.int64)
    if not ported.any():
        return role
    flows = flow_ids(trace_of, l3, l4, sport, dport)
    _, first = np.unique(flows, return_index=True)  # flow ids are dense: first[flow] is its first row
    opener = first[flows]
    later = np.where(np.asarray(sport) == np.asarray(sport)[opener], 1, 2)
    role[ported] = np.where(np.arange(n) == opener, 0, later)[ported]
    last = np.zeros(len(first), np.int64)
    rows = np.flatnonzero(ported)
    np.maximum.at(last, flows[rows], rows)
    spans = np.unique(flows[rows])
    cover = np.zeros(n + 1, np.int64)  # flows whose span holds row i (a packet of theirs before and at/after it)
    np.add.at(cover, first[spans] + 1, 1)
    np.add.at(cover, last[spans] + 1, -1)
    inside = np.cumsum(cover)[:n] > 0
    role[inside & (role == 0)] = ROLES.index("open_inside")
    role[inside & (role == 3)] = ROLES.index("other_inside")
    return role


def _levels(z: np.ndarray) -> list[float]:
    return [round(float(x), 5) for x in np.quantile(z, np.linspace(0.0, 1.0, LEVELS))]


def fit_iat_roles(trace_of: np.ndarray, l3: np.ndarray, l4: np.ndarray, sport: np.ndarray, dport: np.ndarray,
                  iat_us: np.ndarray, labels: list[str]) -> dict[str, dict[str, list[float]]]:
    """Per class (``labels``: each trace's) and pooled (``""``): ``{"all" | role: quantiles of log10(1 + µs)}``
    of the training packets (each trace's first packet left out); a role with fewer than :data:`MIN_PACKETS`
    packets in a class has no table there."""
    trace_of = np.asarray(trace_of, np.int64)
    if not len(trace_of):
        return {}
    role = packet_roles(trace_of, l3, l4, sport, dport)
    z = np.log10(1.0 + np.maximum(np.asarray(iat_us, np.float64), 0.0))
    keep = np.r_[False, trace_of[1:] == trace_of[:-1]]  # not a trace's first packet
    lab = np.asarray(labels, dtype=object)[trace_of]
    out: dict[str, dict[str, list[float]]] = {}
    for name in ["", *sorted(set(labels))]:
        rows = keep & (lab == name) if name else keep
        if rows.sum() < MIN_PACKETS:
            continue
        table = {"all": _levels(z[rows])}
        table.update({r: _levels(z[rows & (role == i)]) for i, r in enumerate(ROLES)
                      if (rows & (role == i)).sum() >= MIN_PACKETS})
        out[name] = table
    return out


def _rank(z: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Quantile level of each ``z`` in the non-decreasing ``grid`` (a tie with a flat run: the run's middle)."""
    lo, hi = np.searchsorted(grid, z, "left"), np.searchsorted(grid, z, "right")
    i = np.clip(lo, 1, len(grid) - 1)
    step = grid[i] - grid[i - 1]
    between = (i - 1) + np.clip((z - grid[i - 1]) / np.where(step > 0, step, 1.0), 0.0, 1.0)
    pos = np.where(hi > lo, (lo + hi - 1) / 2.0, between)
    return np.clip(pos, 0, len(grid) - 1) / (len(grid) - 1)


def role_iat(iat_us: np.ndarray, role: np.ndarray, trace_of: np.ndarray, labels: list[str],
             tables: dict[str, dict[str, list[float]]]) -> np.ndarray:
    """The sampled inter-arrival µs mapped, rank for rank, from the class's pooled distribution to its role's
    (:func:`fit_iat_roles`); packets of a class and role with no table (nor a pooled one) keep theirs."""
    out = np.asarray(iat_us, np.float64).copy()
    if not tables or not len(out):
        return out
    z = np.log10(1.0 + np.maximum(out, 0.0))
    lab = np.asarray(labels, dtype=object)[np.asarray(trace_of, np.int64)]
    pooled = tables.get("", {})
    for name in set(lab.tolist()):
        table = tables.get(name) or pooled
        if "all" not in table:
            continue
        rows = lab == name
        q = _rank(z[rows], np.asarray(table["all"]))
        new = z[rows]
        for i, r in enumerate(ROLES):
            grid = table.get(r) or pooled.get(r) or table.get(FALLBACK.get(r, r)) or pooled.get(FALLBACK.get(r, r))
            mine = role[rows] == i
            if grid is not None and mine.any():
                new[mine] = np.interp(q[mine], np.linspace(0.0, 1.0, len(grid)), grid)
        out[rows] = 10.0 ** new - 1.0
    return out
