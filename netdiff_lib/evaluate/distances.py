"""Distances between two empirical distributions of one categorical (or pre-binned) variable.

Both samples are counted on shared bins (the union of the values seen in either sample), so a value that only
one side produces counts fully against it.  All three distances lie in [0, 1]:

* Jensen-Shannon divergence, base 2 (the divergence, not its square root): 0 for equal histograms, 1 for
  disjoint supports;
* total variation distance ``0.5 * sum|p - q|``;
* Hellinger distance ``sqrt(1 - sum sqrt(p q))``, computed as ``||sqrt p - sqrt q|| / sqrt 2`` (exactly 0 for
  equal histograms).

A side without any observation has no distribution: the distances are then NaN, and callers leave such fields
out of their means (and count how many they left out).
"""

from __future__ import annotations

import math

import numpy as np

NAMES: tuple[str, ...] = ("jsd", "tvd", "hellinger")


def shared_histograms(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of ``a`` and ``b`` on the union of their values: ``(keys, counts_a, counts_b)``."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    keys, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    inverse = inverse.ravel()
    ca = np.bincount(inverse[: a.size], minlength=keys.size).astype(np.float64)
    cb = np.bincount(inverse[a.size :], minlength=keys.size).astype(np.float64)
    return keys, ca, cb


def _normalise(p: np.ndarray) -> np.ndarray | None:
    total = float(np.sum(p))
    return None if total <= 0 else np.asarray(p, dtype=np.float64) / total


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2) of two histograms on the same bins (normalised here)."""
    pn, qn = _normalise(p), _normalise(q)
    if pn is None or qn is None:
        return math.nan
    m = 0.5 * (pn + qn)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return float(min(1.0, max(0.0, 0.5 * kl(pn) + 0.5 * kl(qn))))


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance of two histograms on the same bins."""
    pn, qn = _normalise(p), _normalise(q)
    if pn is None or qn is None:
        return math.nan
    return float(min(1.0, 0.5 * np.abs(pn - qn).sum()))


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance of two histograms on the same bins."""
    pn, qn = _normalise(p), _normalise(q)
    if pn is None or qn is None:
        return math.nan
    return float(min(1.0, np.linalg.norm(np.sqrt(pn) - np.sqrt(qn)) / math.sqrt(2.0)))


def histogram_distances(p: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """All three distances of two histograms on the same bins."""
    return {"jsd": jsd(p, q), "tvd": tvd(p, q), "hellinger": hellinger(p, q)}


def sample_distances(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """All three distances between the empirical distributions of samples ``a`` and ``b``."""
    _, ca, cb = shared_histograms(a, b)
    return histogram_distances(ca, cb)
