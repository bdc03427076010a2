"""Trace sources: a data set of labelled traces that is read on demand, not held in memory.

A :class:`TraceSource` knows, cheaply and for every trace, its label, the capture it came from and its length;
it reads the traces themselves only when asked (:meth:`TraceSource.read`), a few at a time.  Training and
evaluation take a source, so a data set of millions of traces (encoded from long captures into a trace store
on local disk or ``s3://``) never has to fit in memory.  :class:`ListSource` wraps traces already in memory
(a folder of small captures, a test); the trace store provides the on-disk kind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from netdiff_lib.errors import InputError
from netdiff_lib.schema import Layout
from netdiff_lib.trace import ArrayFile, Trace, load_trace


@runtime_checkable
class TraceSource(Protocol):
    """Labelled traces, read by index.

    ``labels[i]``, ``sources[i]`` (the capture a trace was cut from: a holdout by capture keeps all traces of a
    capture on one side) and ``lengths[i]`` (packets) are known without reading trace ``i``.  :meth:`read`
    returns the traces at ``indices`` in that order; it is efficient for sorted or contiguous indices.
    """

    layout: Layout
    labels: Sequence[str]
    sources: Sequence[str]
    lengths: np.ndarray

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int]) -> list[Trace]: ...


class ListSource:
    """A :class:`TraceSource` over traces already in memory."""

    def __init__(self, traces: Sequence[Trace]) -> None:
        if not traces:
            raise ValueError("a trace source needs at least one trace")
        self.traces = list(traces)
        self.layout = self.traces[0].layout
        self.labels = [str(t.label) for t in self.traces]
        self.sources = [str(t.source if t.source is not None else i) for i, t in enumerate(self.traces)]
        self.lengths = np.array([len(t) for t in self.traces], np.int64)

    def __len__(self) -> int:
        return len(self.traces)

    def read(self, indices: Sequence[int]) -> list[Trace]:
        return [self.traces[int(i)] for i in indices]


def iter_traces(source: TraceSource, batch: int = 256) -> Iterator[Trace]:
    """Every trace of ``source`` in index order, reading ``batch`` at a time."""
    for start in range(0, len(source), batch):
        yield from source.read(range(start, min(start + batch, len(source))))


class SubsetSource:
    """The traces ``indices`` of another source, in that order (a holdout's two sides, a source less its empty
    traces); nothing is read until :meth:`read`."""

    def __init__(self, parent: TraceSource, indices: Sequence[int]) -> None:
        self.parent = parent
        self.indices = np.asarray(indices, np.int64)
        self.layout = parent.layout
        self.labels = [parent.labels[int(i)] for i in self.indices]
        self.sources = [parent.sources[int(i)] for i in self.indices]
        self.lengths = np.asarray(parent.lengths, np.int64)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, indices: Sequence[int]) -> list[Trace]:
        return self.parent.read([int(self.indices[int(i)]) for i in indices])


class ArrayFolderSource:
    """A :class:`TraceSource` over a folder of trace array files (``.npz`` as :func:`netdiff_lib.trace.save_trace`
    writes them, e.g. an encode output's ``nprint/train``), found recursively and sorted by path, or over the
    array files ``paths`` in that order.

    Opening it reads each file's header only (label, source, packet count, the encoder's ``max_packets``, kept as
    the largest in :attr:`max_packets`: nothing is inflated); :meth:`read` loads the files asked for.  A file
    without a label takes its folder's name (``<label>/<file>.npz``)."""

    def __init__(self, root: str | Path | None = None, *, paths: Sequence[str | Path] | None = None) -> None:
        if paths is None:
            if root is None:
                raise ValueError("ArrayFolderSource needs a folder or paths")
            base = Path(root)
            paths = sorted(p for p in base.rglob("*.npz") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(base).parts))
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise InputError(root or "", "no trace array files (.npz) in this folder")
        self.labels, self.sources, lengths, self.max_packets = [], [], [], 0
        for p in self.paths:
            with ArrayFile(p) as f:
                if not self.labels:
                    self.layout = f.layout
                elif f.layout != self.layout:
                    raise InputError(p, "its nPrint layout differs from the other traces' of the folder")
                self.labels.append(str(f.label if f.label is not None else p.parent.name))
                self.sources.append(str(f.source if f.source is not None else f"{p.parent.name}/{p.name}"))
                lengths.append(f.rows)
                self.max_packets = max(self.max_packets, int(f.meta.get("max_packets", f.rows)))
        self.lengths = np.array(lengths, np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices: Sequence[int]) -> list[Trace]:
        out = []
        for i in indices:
            t = load_trace(self.paths[int(i)])
            out.append(t if t.label is not None else replace(t, label=self.labels[int(i)]))
        return out


def sample_per_class(labels: Sequence[str], per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``per_class`` traces of every class, drawn with ``seed`` (all of a class that has
    no more: a small data set is taken whole, in order)."""
    labels_arr = np.asarray([str(x) for x in labels])
    out = []
    for k, lab in enumerate(sorted(set(labels_arr.tolist()))):
        idx = np.flatnonzero(labels_arr == lab)
        if len(idx) > per_class:
            idx = np.random.default_rng([seed, k]).choice(idx, per_class, replace=False)
        out.append(idx)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)
