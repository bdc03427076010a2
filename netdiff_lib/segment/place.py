"""Where the packets of one batch go, computed on arrays: each packet's segments (flow, window, host or both), its
label per segment, and the packets that go nowhere (late for their window, no local address).

A *placement* is one packet in one segment: a packet between two local hosts has two (its source host's first),
any other packet one at most. Placements come in packet order, then segment order, the order in which the
per-packet builder handled them; :mod:`netdiff_lib.segment.builder` groups them into traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdiff_lib.labels.base import UNLABELLED, LabelIndex
from netdiff_lib.segment.keys import BatchKeys


@dataclass
class Placements:
    pk: np.ndarray  # the packet (matrix row) of each placement
    s: np.ndarray  # 0 for a packet's first segment, 1 for its second (the destination host)
    seg: np.ndarray  # the segment, an index into ``segs``
    segs: list[object]  # segment keys: None (file), flow key, window, host address or (host, window)
    host: np.ndarray | None  # host modes: the address number (into ``keys.addrs``) of the trace's host
    window: np.ndarray | None  # window modes: each segment's window
    late: int = 0  # packets earlier than a closed window
    no_local: int = 0  # packets with no local address (host modes)
    reach: np.ndarray | None = None  # window modes: per packet, the latest window started by then (inclusive)


def place(mode: str, keys: BatchKeys | None, ts: np.ndarray, t0: int, window_ns: int, closed: int) -> Placements:
    """The placements of a batch of ``len(ts)`` packets; ``closed`` is the last window already closed."""
    n = len(ts)
    everyone = np.arange(n)
    if mode == "file":
        return Placements(everyone, np.zeros(n, np.int8), np.zeros(n, np.intp), [None], None, None)
    if mode == "flow":
        return Placements(everyone, np.zeros(n, np.int8), keys.flow_id, keys.flows, None, None)
    w = reach = None
    closer = np.ones(n, bool) if mode == "window" else keys.src_local | keys.dst_local
    valid, late = np.ones(n, bool), 0
    if "window" in mode:
        w = (ts - t0) // window_ns
        reach = np.maximum.accumulate(np.where(closer, np.maximum(w, closed + 1), closed + 1))
        before = np.concatenate(([closed + 1], reach[:-1]))
        valid = w >= before
        late = n - int(valid.sum())
        if mode == "window":
            uw, seg = np.unique(w[valid], return_inverse=True)
            pk = everyone[valid]
            return Placements(pk, np.zeros(len(pk), np.int8), seg.ravel(), uw.tolist(), None, uw, late, 0, reach)
    no_local = int((valid & ~closer).sum())
    src = valid & keys.src_local
    dst = valid & keys.dst_local & ~(src & (keys.src_id == keys.dst_id))
    pk = np.concatenate((np.flatnonzero(src), np.flatnonzero(dst)))
    s = np.concatenate((np.zeros(int(src.sum()), np.int8), np.ones(int(dst.sum()), np.int8)))
    order = np.argsort(pk * 2 + s, kind="stable")
    pk, s = pk[order], s[order]
    host = np.where(s == 0, keys.src_id[pk], keys.dst_id[pk])
    if w is None:
        uh, seg = np.unique(host, return_inverse=True)
        return Placements(pk, s, seg.ravel(), [keys.addrs[h] for h in uh.tolist()], host, None, late, no_local)
    span = int(w[pk].max() - w[pk].min()) + 1 if len(pk) else 1
    low = int(w[pk].min()) if len(pk) else 0
    useg, seg = np.unique(host * span + (w[pk] - low), return_inverse=True)
    hosts, wins = useg // span, useg % span + low
    segs = [(keys.addrs[h], x) for h, x in zip(hosts.tolist(), wins.tolist(), strict=True)]
    return Placements(pk, s, seg.ravel(), segs, host, wins, late, no_local, reach)


def label_codes(pl: Placements, keys: BatchKeys | None, ts: np.ndarray, index: LabelIndex | None,
                label: str | None, unlabelled: str) -> tuple[np.ndarray, list[str]]:
    """Each placement's label, an index into the returned names, or -1 for none (the packet is left out of that
    segment): the capture's ``label``, or with ``index`` that of the packet's flow or host at its time."""
    if index is None:
        return np.full(len(pl.pk), 0 if label is not None else -1, np.int64), [label]
    flow = np.array([hash(f) for f in keys.flows], np.int64)[keys.flow_id[pl.pk]]
    addr = np.array([hash(a) for a in keys.addrs], np.int64)
    hosts = [addr[keys.src_id[pl.pk]], addr[keys.dst_id[pl.pk]]]
    if pl.host is not None:
        hosts.insert(0, addr[pl.host])
    codes = index.label_ids(flow, hosts, ts[pl.pk])
    names = list(index.names)
    if unlabelled == "keep":
        names += [] if UNLABELLED in names else [UNLABELLED]
        codes[codes < 0] = names.index(UNLABELLED)
    return codes, names
