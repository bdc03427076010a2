"""Streamed training batches: each batch's traces read from the trace source and tokenised as training goes.

The loop's batch plan (:class:`~netdiff_lib.models.native.data.BucketPlan`) names the traces of every batch in
advance, so a :class:`torch.utils.data.DataLoader` over those batches (``batch_size=None``: one item is one
whole batch) reads them ahead of the loop in ``data.workers`` processes (:func:`reader_processes`;
``data.prefetch`` batches each; 0 workers: in the training process, nothing ahead).  A rank reads only its own
batches.  A batch holds exactly
the rows the packed path gathers (the first ``bucket`` rows of the trace cut to ``model.max_packets``, zero rows
after its end), so streamed and packed training take the same steps.  Memory holds the batches in flight, not
the data set; the workers are forked from the training process, so a source must be usable after a fork (read
its files or objects anew in :meth:`~netdiff_lib.tracesource.TraceSource.read`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from netdiff_lib.errors import InputError, NetdiffError, TrainingError
from netdiff_lib.models.native.representation import Representation
from netdiff_lib.tracesource import TraceSource

if TYPE_CHECKING:
    from netdiff_lib.config import Config
    from netdiff_lib.models.native.data import Batch, Prepared

Item = tuple[int, int, int, np.ndarray]


class BatchReader(Dataset):
    """``reader[(epoch, batch, bucket, trace indices)]`` -> that batch as host tensors (x0, classes, lengths,
    padded), read from ``source`` and tokenised by ``rep``."""

    def __init__(self, source: TraceSource, rep: Representation, classes: np.ndarray, lengths: np.ndarray,
                 max_packets: int) -> None:
        self.source, self.rep, self.classes, self.lengths, self.cap = source, rep, classes, lengths, max_packets

    def __len__(self) -> int:  # never iterated by index: the sampler gives the items
        return len(self.lengths)

    def __getitem__(self, item: Item) -> tuple[Any, ...] | Failure:
        try:
            return self.read(item)
        except NetdiffError as exc:  # a worker's exception would reach the loop as a RuntimeError
            return Failure(exc)

    def read(self, item: Item) -> tuple[Any, ...]:
        epoch, batch, bucket, idx = item
        order = np.argsort(idx, kind="stable")  # a source reads sorted indices fastest
        traces = self.source.read([int(i) for i in idx[order]])
        lengths = np.minimum(self.lengths[idx], bucket)
        x0 = np.zeros((len(idx), bucket, self.rep.width), np.float32)
        heads = [t.head(self.cap) for t in traces]
        every = self.rep.rows_many(heads)  # the batch's rows at once, then cut per trace
        ends = np.cumsum([len(t.matrix) for t in heads])
        for j, t, rows in zip(order, traces, np.split(every, ends[:-1]), strict=True):
            if len(rows) != min(len(t), self.cap) or len(rows) < lengths[j]:
                raise TrainingError(f"trace {int(idx[j])} of the training source has {len(rows)} packet rows, its "
                                    f"metadata says {int(self.lengths[idx[j]])}: the source's lengths are wrong")
            x0[j, : lengths[j]] = rows[: lengths[j]]
        return (epoch, batch, bucket, idx, torch.from_numpy(x0), torch.from_numpy(self.classes[idx]),
                torch.from_numpy(lengths), bool((lengths < bucket).any()))


class Failure:
    """A reader's :class:`~netdiff_lib.errors.NetdiffError` (a bad trace file...), raised again by the loop."""

    def __init__(self, exc: NetdiffError) -> None:
        self.input = isinstance(exc, InputError)
        self.path, self.cause, self.message = getattr(exc, "path", ""), getattr(exc, "cause", ""), str(exc)

    def throw(self) -> None:
        if self.input:
            raise InputError(self.path, self.cause)
        raise TrainingError(f"reading the training traces: {self.message}")


def _whole(batch: Any) -> Any:
    return batch


def reader_processes(workers: int, world: int) -> int:
    """``data.workers``, with -1 (auto) the CPU cores of one of ``world`` training processes less one, 1 to 16."""
    if workers >= 0:
        return workers
    return max(1, min(16, len(os.sched_getaffinity(0)) // max(1, world) - 1))


def stream_batches(prep: Prepared, cfg: Config, items: Iterator[Item], device: torch.device,
                   world: int = 1) -> Iterator[Batch]:
    """The batches ``items`` names, read and tokenised ahead (see the module docstring), on ``device``."""
    assert prep.dataset is not None
    reader = BatchReader(prep.dataset, prep.representation, prep.classes, prep.lengths, cfg.model.max_packets)
    workers = reader_processes(cfg.data.workers, world)
    loader = DataLoader(reader, batch_size=None, sampler=items, num_workers=workers, collate_fn=_whole,
                        pin_memory=device.type == "cuda", prefetch_factor=cfg.data.prefetch if workers else None)
    for item in loader:
        if isinstance(item, Failure):
            item.throw()
        e, b, bucket, idx, x0, classes, lengths, padded = item
        yield (e, b, bucket, idx, x0.to(device, non_blocking=True), classes.to(device, non_blocking=True),
               lengths.to(device, non_blocking=True), padded)
