"""Privacy: is a generated trace closer to its nearest training trace than a fresh real trace is?

A trace is the vector of the nPrint values (-1/0/1) of its first ``k`` packets (padded with -1 rows), address
columns left out.  The distance between two traces is the Hamming distance over those values divided by their
number (the share of differing values, in [0, 1]).  The distance to the closest training record (DCR) is
computed for every synthetic trace and for every fresh real trace (the real test set); the median ratio
``median DCR(synthetic) / median DCR(fresh real)`` is >= 1 when the generator is no closer to its training data
than new real data is.  Exact copies have DCR 0; near copies a DCR at most a threshold: by default the 5th
percentile of the fresh real DCRs (so about 5 % of fresh real traces are "near copies" by construction and a
generator well above 5 % sits closer to its training data than real traffic does), or a fixed share of
differing values.  All of it per class (of the query trace), macro-averaged over classes, and pooled.

The ternary Hamming distance is computed with one matrix product: with ``o = [v == 1]``, ``a = [v == -1]`` and
``r = |o| + |a|``, ``hamming(x, y) = r_x + r_y - [o_x, a_x] . [2 o_y + a_y, 2 a_y + o_y]``.  Training and query
sets are taken in chunks so that memory stays bounded for thousands of traces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from netdiff_lib.evaluate.fidelity import nanmean
from netdiff_lib.evaluate.utility import first_packets
from netdiff_lib.schema import ADDRESS_FIELDS, Layout

NEAR_COPY: float | None = None  # None: the NEAR_COPY_QUANTILE of the fresh real DCRs
NEAR_COPY_QUANTILE = 0.05
CHUNK = 512


def compared_columns(layout: Layout) -> np.ndarray:
    """Column indices of a layout without its address fields."""
    drop = np.zeros(layout.width, dtype=bool)
    for name in ADDRESS_FIELDS:
        if name in layout.spans:
            drop[layout.span(name).slice] = True
    return np.flatnonzero(~drop)


def trace_vectors(traces: Sequence, k: int) -> np.ndarray:
    """``(n, k * compared columns)`` int8 vectors of the first ``k`` packets' non-address values."""
    if not traces:
        return np.empty((0, 0), dtype=np.int8)
    cols = compared_columns(traces[0].layout)
    return np.stack([first_packets(np.asarray(t.matrix), k)[:, cols].ravel() for t in traces])


def _planes(v: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = (v == 1).astype(dtype)
    a = (v == -1).astype(dtype)
    return np.concatenate([o, a], axis=1), np.concatenate([2 * o + a, 2 * a + o], axis=1), (o.sum(1) + a.sum(1))


def hamming_min(
    queries: np.ndarray, train: np.ndarray, progress: Callable | None = None, chunk: int = CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """For each query vector: the smallest Hamming distance to a training vector, and that vector's index."""
    nq, d = queries.shape
    best = np.full(nq, np.inf)
    arg = np.full(nq, -1, dtype=np.int64)
    if nq == 0 or train.shape[0] == 0:
        return best, arg
    if train.shape[1] != d:
        raise ValueError(f"query vectors have {d} values, training vectors {train.shape[1]}")
    dtype = np.float32 if 2 * d < 2**24 else np.float64
    starts = range(0, train.shape[0], chunk)
    for t0 in progress(starts) if progress else starts:
        _, right, r_t = _planes(train[t0 : t0 + chunk], dtype)
        for q0 in range(0, nq, chunk):
            left, _, r_q = _planes(queries[q0 : q0 + chunk], dtype)
            dist = r_q[:, None] + r_t[None, :] - left @ right.T
            i = np.argmin(dist, axis=1)
            m = dist[np.arange(dist.shape[0]), i]
            sel = slice(q0, q0 + dist.shape[0])
            better = m < best[sel]
            best[sel] = np.where(better, m, best[sel])
            arg[sel] = np.where(better, i + t0, arg[sel])
    return best, arg


def dcr(train: Sequence, queries: Sequence, k: int = 16, progress: Callable | None = None) -> np.ndarray:
    """Normalised distance of each query trace to its closest training trace (share of differing values)."""
    q, t = trace_vectors(queries, k), trace_vectors(train, k)
    if q.size == 0:
        return np.empty(0)
    best, _ = hamming_min(q, t, progress)
    return best / q.shape[1]


def _ratio(num: float, den: float) -> float | None:
    if not (math.isfinite(num) and math.isfinite(den)):
        return None
    if den == 0:
        return 1.0 if num == 0 else None
    return num / den


def _stats(d: np.ndarray, fresh: np.ndarray, near_copy: float) -> dict:
    median = float(np.median(d)) if d.size else math.nan
    fresh_median = float(np.median(fresh)) if fresh.size else math.nan
    return {
        "n": int(d.size),
        "median_dcr": median,
        "median_ratio": _ratio(median, fresh_median),
        "exact_copy_rate": float(np.mean(d == 0)) if d.size else math.nan,
        "near_copy_rate": float(np.mean(d <= near_copy)) if d.size else math.nan,
    }


def near_copy_threshold(fresh: np.ndarray, near_copy: float | None = NEAR_COPY) -> float:
    """The near-copy DCR threshold: ``near_copy`` when given, else the 5th percentile of the fresh DCRs."""
    if near_copy is not None:
        return float(near_copy)
    return float(np.quantile(fresh, NEAR_COPY_QUANTILE)) if fresh.size else 0.0


def privacy_summary(d: np.ndarray, labels: Sequence[str], fresh: np.ndarray, fresh_labels: Sequence[str],
                    near_copy: float | None = NEAR_COPY) -> dict:
    """Pooled, per-class and macro DCR statistics of queries ``d`` against fresh real DCRs ``fresh``."""
    labels, fresh_labels = np.asarray(labels, dtype=object), np.asarray(fresh_labels, dtype=object)
    threshold = near_copy_threshold(fresh, near_copy)
    classes = sorted(set(fresh_labels.tolist()))
    per_class = {c: _stats(d[labels == c], fresh[fresh_labels == c], threshold) for c in classes}
    macro_keys = ("median_dcr", "median_ratio", "exact_copy_rate", "near_copy_rate")
    quantiles = dict(zip(("p05", "p25", "p50", "p75", "p95"), np.quantile(d, [.05, .25, .5, .75, .95]).tolist(),
                         strict=True)) if d.size else {}
    return {
        "all": _stats(d, fresh, threshold) | {"quantiles": quantiles},
        "per_class": per_class,
        "macro": {key: nanmean(s[key] for s in per_class.values()) for key in macro_keys},
        "near_copy": threshold,
        "near_copy_rule": (f"fixed: DCR <= {near_copy}" if near_copy is not None
                           else f"DCR <= the {NEAR_COPY_QUANTILE:.0%} quantile of the fresh real DCRs"),
    }


def membership_auc(synthetic: Sequence, members: Sequence, non_members: Sequence, k: int = 16) -> dict:
    """A distance-to-synthetic membership-inference attack: the attacker guesses that a real trace was in the
    training set when some synthetic trace lies close to it (score = minus the distance to the closest
    synthetic trace).  AUC of that score between training traces (``members``) and fresh real traces
    (``non_members``): 0.5 = the synthetic set tells nothing about who was trained on, 1 = it gives members away.
    """
    syn = trace_vectors(synthetic, k)
    if syn.size == 0 or not members or not non_members:
        return {"auc": math.nan, "members": len(members), "non_members": len(non_members)}
    d_in, _ = hamming_min(trace_vectors(members, k), syn)
    d_out, _ = hamming_min(trace_vectors(non_members, k), syn)
    closer = (d_in[:, None] < d_out[None, :]).mean() + 0.5 * (d_in[:, None] == d_out[None, :]).mean()
    scale = syn.shape[1]
    return {"auc": float(closer), "members": int(d_in.size), "non_members": int(d_out.size),
            "median_distance_members": float(np.median(d_in) / scale),
            "median_distance_non_members": float(np.median(d_out) / scale)}
