"""ML utility: does a classifier trained on a trace set recognise the classes of real held-out traces?

Train-on-real/test-on-real (TRTR, the reference) and train-on-synthetic/test-on-real (TSTR) use the same
models (scikit-learn random forest and decision tree) and the same per-trace features: the nPrint values
(-1/0/1) of the first ``k`` packets, padded with -1 rows, plus a few aggregates (packet count, duration,
inter-arrival statistics, share of packets per header block, packet length statistics).  Reported per model:
accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from netdiff_lib.evaluate.fields import block_presence
from netdiff_lib.schema import bits_to_uint


def _random_forest(seed: int) -> object:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=seed)


def _decision_tree(seed: int) -> object:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=seed)


#: Model name -> factory(seed); scikit-learn (the ``eval`` extra) is imported when a model is built.
MODELS: dict[str, Callable[[int], object]] = {"rf": _random_forest, "dt": _decision_tree}
AGGREGATES: tuple[str, ...] = ("log_packets", "log_duration_s", "iat_log_mean", "iat_log_std", "length_mean",
                               "length_std")


def first_packets(matrix: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` rows of a matrix, padded with -1 rows: ``(k, width)`` int8."""
    out = np.full((k, matrix.shape[1]), -1, dtype=np.int8)
    n = min(k, matrix.shape[0])
    out[:n] = matrix[:n]
    return out


def _ip_lengths(matrix: np.ndarray, layout, presence: dict[str, np.ndarray]) -> np.ndarray:
    parts = []
    if "ipv4" in presence:
        parts.append(bits_to_uint(matrix[presence["ipv4"], layout.span("ipv4_tl").slice]).astype(np.float64))
    if "ipv6" in presence:
        parts.append(40.0 + bits_to_uint(matrix[presence["ipv6"], layout.span("ipv6_len").slice]))
    return np.concatenate(parts) if parts else np.empty(0)


def aggregates(trace) -> np.ndarray:
    """Aggregate features of one trace (see :data:`AGGREGATES`, then one share per header block)."""
    matrix = np.asarray(trace.matrix)
    layout = trace.layout
    presence = block_presence(matrix, layout)
    n = matrix.shape[0]
    ts = np.asarray(trace.ts_ns if trace.ts_ns is not None else [], dtype=np.int64)
    duration = float(ts[-1] - ts[0]) / 1e9 if ts.size else 0.0
    iat = np.log10(1.0 + np.clip(np.asarray(trace.iat_us(), dtype=np.float64)[1:], 0, None))
    lengths = _ip_lengths(matrix, layout, presence)
    values = [
        np.log1p(n), np.log1p(max(duration, 0.0)),
        iat.mean() if iat.size else 0.0, iat.std() if iat.size else 0.0,
        lengths.mean() / 1500 if lengths.size else 0.0, lengths.std() / 1500 if lengths.size else 0.0,
    ]
    shares = [presence[b].mean() if n else 0.0 for b in layout.blocks]
    return np.asarray(values + shares, dtype=np.float32)


def trace_features(traces: Sequence, k: int) -> np.ndarray:
    """Feature matrix ``(n_traces, k * width + n_aggregates)`` float32."""
    if not traces:
        return np.empty((0, 0), dtype=np.float32)
    rows = [np.concatenate([first_packets(np.asarray(t.matrix), k).ravel().astype(np.float32), aggregates(t)])
            for t in traces]
    return np.stack(rows)


def score(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1 (over the test classes), per-class metrics and confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    test_classes = sorted(set(y_true.tolist()))
    prec, rec, f1, sup = precision_recall_fscore_support(y_true, y_pred, labels=test_classes, zero_division=0)
    per_class = {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(test_classes, prec, rec, f1, sup, strict=True)}
    with warnings.catch_warnings():  # a model trained on other labels (unmapped synthetic ones) is expected here
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced,
        "macro_f1": float(np.mean(f1)) if len(f1) else 0.0,
        "per_class": per_class,
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def utility(train: Sequence, test: Sequence, k: int = 16, seed: int = 0,
            test_features: np.ndarray | None = None, models: Sequence[str] = tuple(MODELS)) -> dict:
    """Fit each model on ``train`` traces, score it on ``test`` traces; one entry per model name.

    ``test_features`` lets callers compute the test matrix once for several training sets.
    """
    y_train = np.array([str(t.label) for t in train])
    y_test = np.array([str(t.label) for t in test])
    if len(train) == 0 or len(test) == 0:
        return {m: {"error": "empty training or test set"} for m in models}
    x_train = trace_features(train, k)
    x_test = trace_features(test, k) if test_features is None else test_features
    labels = sorted(set(y_train.tolist()) | set(y_test.tolist()))
    out = {}
    for name in models:
        start = time.perf_counter()
        model = MODELS[name](seed).fit(x_train, y_train)
        result = score(y_test, model.predict(x_test), labels)
        result.update(train_traces=len(train), test_traces=len(test), fit_predict_s=time.perf_counter() - start)
        out[name] = result
    return out
