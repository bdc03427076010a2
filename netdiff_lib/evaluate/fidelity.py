"""Fidelity: how far the field distributions of a trace set are from those of real (held-out) traces.

For every field of :mod:`netdiff_lib.evaluate.fields` the three distances of
:mod:`netdiff_lib.evaluate.distances` are computed on all packets pooled (``all``), per class of the real set
(``per_class``) and as the mean over those classes (``macro``; classes where either side has no value of the
field are left out).  ``mean`` averages the fields: ``mean.all`` over the pooled values, ``mean.macro`` over the
fields' macro values and ``mean.per_class`` over one class's fields.  ``bit_mad`` is the mean absolute
difference of the per-bit-column probabilities ``P(bit = 1)``, pooled, per class and macro-averaged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from netdiff_lib.evaluate.distances import NAMES, histogram_distances
from netdiff_lib.evaluate.fields import FLOW_VARIABLES, FieldTable, field_names


def nanmean(values: Iterable[float]) -> float:
    """Mean of the finite values (NaN when there are none), without numpy's empty-slice warning."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else math.nan


def _mean_of(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    rows = list(rows)
    return {k: nanmean(r[k] for r in rows) for k in NAMES}


def class_histograms(table: FieldTable, name: str, classes: list[str], inverse: np.ndarray, n_keys: int) -> np.ndarray:
    """``(len(classes), n_keys)`` counts of a field's values (as shared-bin indices ``inverse``) per class."""
    codes = table.codes.get(name, np.empty(0, dtype=np.int32))
    lookup = np.array([classes.index(c) if c in classes else -1 for c in table.classes] + [-1], dtype=np.int64)
    cls = lookup[codes]
    keep = cls >= 0
    flat = np.bincount(cls[keep] * n_keys + inverse[keep], minlength=len(classes) * n_keys)
    return flat.reshape(len(classes), n_keys)


def field_fidelity(real: FieldTable, other: FieldTable, name: str, classes: list[str]) -> dict:
    """Distances of one field: pooled, per class and macro-averaged, with the sample sizes."""
    a, b = real.get(name), other.get(name)
    keys, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = inverse.ravel()[: a.size], inverse.ravel()[a.size :]
    ha = class_histograms(real, name, classes, ia, keys.size)
    hb = class_histograms(other, name, classes, ib, keys.size)
    per_class = {c: histogram_distances(ha[i], hb[i]) for i, c in enumerate(classes)}
    return {
        "all": histogram_distances(np.bincount(ia, minlength=keys.size), np.bincount(ib, minlength=keys.size)),
        "n_real": int(a.size),
        "n_other": int(b.size),
        "per_class": per_class,
        "macro": _mean_of(per_class.values()),
    }


def bit_mad(real: FieldTable, other: FieldTable, classes: list[str]) -> dict:
    """Mean absolute difference of per-bit-column probabilities: pooled, per class, macro."""

    def mad(label: str | None) -> float:
        p, q = real.bit_probabilities(label), other.bit_probabilities(label)
        return math.nan if p is None or q is None else float(np.abs(p - q).mean())

    per_class = {c: mad(c) for c in classes}
    return {"all": mad(None), "per_class": per_class, "macro": nanmean(per_class.values())}


def fidelity(real: FieldTable, other: FieldTable, classes: list[str] | None = None) -> dict:
    """Compare ``other`` with ``real`` on every field both tables know; classes default to the real ones."""
    classes = list(real.classes if classes is None else classes)
    names = [n for n in field_names(real) if n in other.values or n in real.values]
    fields = {n: field_fidelity(real, other, n, classes) for n in names}
    return {
        "classes": classes,
        "fields": fields,
        "mean": {
            "all": _mean_of(f["all"] for f in fields.values()),
            "macro": _mean_of(f["macro"] for f in fields.values()),
            "per_class": {c: _mean_of(f["per_class"][c] for f in fields.values()) for c in classes},
        },
        "bit_mad": bit_mad(real, other, classes),
        "flows": {n: field_fidelity(real, other, n, classes) for n in FLOW_VARIABLES
                  if n in other.values or n in real.values},
        "missing_classes": [c for c in classes if c not in other.classes],
    }
