"""Trace sources: a data set of labelled traces that is read on demand, not held in memory.

A :class:`TraceSource` knows, cheaply and for every trace, its label, the capture it came from and its length;
it reads the traces themselves only when asked (:meth:`TraceSource.read`), a few at a time.  Training and
evaluation take a source, so a data set of millions of traces (encoded from long captures into a trace store
on local disk or ``s3://``) never has to fit in memory.  :class:`ListSource` wraps traces already in memory
(a folder of small captures, a test); the trace store provides the on-disk kind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from netdiff_lib.schema import Layout
from netdiff_lib.trace import Trace


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
