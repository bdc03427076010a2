"""The entry point of trace building: one pass over a capture with the builder that fits the output.

:class:`~netdiff_lib.segment.builder._Builder` follows a batch's runs one at a time (traces with bits, ``index``
values); :class:`~netdiff_lib.segment.columnar.ArrayBuilder` follows them on arrays for a trace store's packed
rows.  This module picks one (:func:`make_builder`) and drives it over the capture's batches
(:func:`segment_capture`); it sits above both so that neither imports the other's dispatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from netdiff_lib.labels.base import LabelIndex
from netdiff_lib.nprint.encode import encode_batch, skip_counts
from netdiff_lib.pcap import PcapFile
from netdiff_lib.schema import Layout
from netdiff_lib.segment.builder import _Builder, packs_directly
from netdiff_lib.segment.columnar import ArrayBuilder
from netdiff_lib.segment.spec import BEYOND, SegmentStats, TraceSpec
from netdiff_lib.store.codec import PackedTrace, PackedTraces
from netdiff_lib.trace import Trace


def make_builder(args: tuple, packed: bool, batched: bool) -> _Builder:
    """The builder for :func:`segment_capture`'s ``args`` (spec ... index): for a store's packed rows a batch at
    a time (no ``index``), :class:`~netdiff_lib.segment.columnar.ArrayBuilder`."""
    if packed and batched and args[-1] is None:
        return ArrayBuilder(*args)
    return _Builder(*args, packed)


def segment_capture(path: str | Path, spec: TraceSpec, layout: Layout, *, max_packets: int | None,
                    label: str | None = None, labels: LabelIndex | None = None, unlabelled: str = "drop",
                    mode: str = "netdiff", source: str | None = None, stats: SegmentStats | None = None,
                    index: int | None = None, batch_size: int = 16384, packed: bool = False,
                    batched: bool = False) -> Iterator[Trace | PackedTrace | PackedTraces]:
    """Cut a capture into traces (see :mod:`netdiff_lib.segment`), yielding each when it ends.

    Packets get ``label`` (the capture's), or with ``labels`` the label of their flow or host at their time;
    packets without one are left out (``unlabelled="drop"``) or labelled ``unlabelled`` (``"keep"``). The counts
    go to ``stats`` when given. ``index`` (an nPrint ``-O`` value, e.g. 0 for source addresses) also fills each
    trace's ``index``.  ``packed`` (for a trace store: :func:`packs_directly` says when it applies) gives
    :class:`~netdiff_lib.store.codec.PackedTrace` objects, the header bytes never expanded to bits; with ``batched``
    too (and no ``index``), each batch's traces as one :class:`~netdiff_lib.store.codec.PackedTraces`.
    """
    pcap = PcapFile(path)
    packed = packed and packs_directly(layout, mode)
    b = make_builder((spec, layout, max_packets, source or str(path), labels, label, unlabelled, index), packed,
                     batched)
    if stats is not None:
        b.stats = stats
    for batch in pcap.batches(batch_size=batch_size):
        b.stats.packets += len(batch)
        if spec.mode == "file" and labels is None and b.one_full():
            b.stats.dropped[BEYOND] += len(batch)  # the one trace is full: count the rest, encode nothing
            continue
        enc = encode_batch(batch, layout, mode, bits=not packed)
        b.stats.dropped.update(skip_counts(enc))
        b.add_batch(enc, batch.ts_ns[enc.keep])
        yield from b.done
        b.done = []
    b.finish()
    yield from b.done
