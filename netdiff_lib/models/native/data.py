"""Training data for the native model: traces -> model rows, and a length-bucketed batch plan.

Traces average about 290 packets, so padding all of them to 1,024 rows wastes about 3x compute.  Each trace
goes to the smallest length bucket that holds it; a batch takes traces of one bucket only and as many as fit a
token budget (``batch_tokens // bucket``), so a step costs about the same whatever the bucket.

The plan is a pure function of ``(seed, epoch)`` and of the traces' lengths (known from the trace source's
metadata without reading a trace): every rank computes the same list of batches and takes every ``world``-th
one, and the data position saved in a checkpoint is just ``(epoch, next batch)``, which makes resuming after a
kill exact.

Two ways to feed the loop the same batches (config ``data``): *packed*, all rows in one tensor on the training
device and a batch one gather (small data: fast), or *streamed* (:mod:`~netdiff_lib.models.native.stream`):
worker processes read each batch's traces from the source and tokenise them ahead of the loop, so memory does not
grow with the data set.  ``data.stream=auto`` streams above ``data.stream_packets`` packets.  Either way the
representation is fitted, and the trace statistics taken, on at most ``data.sample_per_class`` traces per class.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from netdiff_lib.config import Config
from netdiff_lib.errors import ConfigError
from netdiff_lib.models.base import TrainingData
from netdiff_lib.models.card import trace_stats
from netdiff_lib.models.native.representation import Representation, representation_class
from netdiff_lib.trace import Trace
from netdiff_lib.tracesource import TraceSource, iter_traces, sample_per_class

#: packets tokenised at once when packing (about 70 MB of nPrint rows)
ROWS_CHUNK = 65_536

#: one batch as the loop takes it: (epoch, batch, bucket, trace indices, x0 (B, bucket, F), class indices (B,),
#: lengths (B,), any padding?)
Batch = tuple[int, int, int, np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, bool]


@dataclass
class Prepared:
    """The training data, ready for the loop: classes, the fitted representation, the training traces
    (``dataset``; their lengths cut to ``model.max_packets`` and class indices, from its metadata), the packed rows
    (None when streaming), statistics (saved in the model folder), what the model card says about the data, the
    payload profile."""

    labels: list[str]
    representation: Representation
    packed: PackedTraces | None
    stats: dict[str, Any]
    data_info: dict[str, Any]
    payloads: Any = None  # a PayloadProfile, saved as payloads.json
    dataset: TraceSource | None = None
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def streams(cfg: Config, packets: int) -> bool:
    """Whether training on ``packets`` packets streams (``data.stream``)."""
    return cfg.data.stream == "on" or (cfg.data.stream == "auto" and packets > cfg.data.stream_packets)


def sample_traces(cfg: Config, source: TraceSource) -> list[Trace]:
    """At most ``data.sample_per_class`` traces per class of ``source`` (seeded by ``train.seed``; all of a small
    class, in order), cut to ``model.max_packets``."""
    idx = sample_per_class(source.labels, cfg.data.sample_per_class, cfg.train.seed)
    return [t.head(cfg.model.max_packets) for t in source.read(idx)]


def prepare_data(cfg: Config, data: TrainingData) -> Prepared:
    """Fit the representation on a bounded sample of the traces; pack the rows unless training streams them."""
    src, cap, labels = data.source_of(), cfg.model.max_packets, data.labels
    sample = sample_traces(cfg, src)
    rep = representation_class(cfg.model.representation).fit(cfg, sample, [str(t.label) for t in sample])
    lengths = np.minimum(np.asarray(src.lengths, np.int64), cap)
    index = {lab: i for i, lab in enumerate(labels)}
    classes = np.array([index[str(lab)] for lab in src.labels], np.int64)
    stream = streams(cfg, int(lengths.sum()))
    packed = None if stream else PackedTraces.build((t.head(cap) for t in iter_traces(src)), rep, labels)
    stats = trace_stats(sample, labels)
    stats["lengths"] = {lab: lengths[classes == k].tolist() for k, lab in enumerate(labels)}  # all, from metadata
    stats["traces"] = {lab: len(v) for lab, v in stats["lengths"].items()}
    stats["packets"] = {lab: int(sum(v)) for lab, v in stats["lengths"].items()}
    info = {"source": data.source, "fingerprint": data.fingerprint, "captures": data.captures,
            "traces": len(src), "packets": int(lengths.sum()), "max_packets": cap,
            "encoded_max_packets": data.max_packets, "representation": rep.name, **rep.describe(),
            "streamed": stream, "fit_traces": len(sample)}
    return Prepared(labels, rep, packed, stats, info, data.payloads, src, lengths, classes)


def positions(plan: BucketPlan, rank: int, epoch: int, batch: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """``(epoch, batch, bucket, trace indices)`` of rank ``rank``'s batches from ``(epoch, batch)`` on, for ever."""
    per = plan.batches_per_epoch()
    while True:
        if batch < per:
            batches = plan.epoch(epoch)
            for b in range(batch, per):
                bucket, idx = batches[b * plan.world + rank]
                yield epoch, b, bucket, idx
        epoch, batch = epoch + 1, 0


def batches(prep: Prepared, cfg: Config, plan: BucketPlan, rank: int, epoch: int, batch: int,
            device: torch.device) -> Iterator[Batch]:
    """This rank's batches from ``(epoch, batch)`` on, on ``device``: gathered from the packed rows, or streamed."""
    if prep.packed is not None:
        packed = prep.packed.to(device)
        for e, b, bucket, idx in positions(plan, rank, epoch, batch):
            yield e, b, bucket, idx, *packed.batch(idx, bucket)
        return
    from netdiff_lib.models.native.stream import stream_batches

    yield from stream_batches(prep, cfg, positions(plan, rank, epoch, batch), device, plan.world)


@dataclass
class PackedTraces:
    """All training traces' rows concatenated: ``features[offsets[i]:offsets[i]+lengths[i]]`` is trace i.

    One zero row is appended at the end: padding positions gather it.
    """

    features: torch.Tensor
    offsets: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    @classmethod
    def build(cls, traces: Iterable[Trace], rep: Representation, labels: list[str]) -> PackedTraces:
        """Rows from the representation's :meth:`~netdiff_lib.models.native.representation.Representation.rows`
        (``traces`` may be a stream: only the rows are kept)."""
        index = {lab: i for i, lab in enumerate(labels)}
        feats, classes, lengths, chunk, held = [], [], [], [], 0
        for t in traces:  # tokenised in chunks of packets: many short traces cost no per-trace overhead
            chunk.append(t)
            classes.append(index[str(t.label)])
            lengths.append(len(t.matrix))
            held += len(t.matrix)
            if held >= ROWS_CHUNK:
                feats.append(rep.rows_many(chunk))
                chunk, held = [], 0
        if chunk:
            feats.append(rep.rows_many(chunk))
        lengths = np.array(lengths, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        stacked = np.concatenate([*feats, np.zeros((1, rep.width), np.float32)])
        return cls(torch.from_numpy(stacked), offsets, lengths, np.array(classes, np.int64))

    def to(self, device: torch.device | str) -> PackedTraces:
        return PackedTraces(self.features.to(device), self.offsets, self.lengths, self.labels)

    def batch(self, idx: np.ndarray, bucket: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """(x0 (B, bucket, F), labels (B,), lengths (B,), any padding?) for the traces ``idx``."""
        lengths = np.minimum(self.lengths[idx], bucket)
        pos = np.arange(bucket)[None]
        rows = np.where(pos < lengths[:, None], self.offsets[idx][:, None] + pos, len(self.features) - 1)
        dev = self.features.device
        x0 = self.features[torch.from_numpy(rows).to(dev)]
        padded = bool((lengths < bucket).any())
        return x0, torch.from_numpy(self.labels[idx]).to(dev), torch.from_numpy(lengths).to(dev), padded


class BucketPlan:
    """Deterministic epochs of length-bucketed batches: ``epoch(e) -> [(bucket, trace indices), ...]``."""

    def __init__(self, lengths: np.ndarray, buckets: tuple[int, ...], batch_tokens: int, seed: int,
                 world: int = 1) -> None:
        self.lengths, self.buckets, self.batch_tokens = np.asarray(lengths), tuple(buckets), batch_tokens
        self.seed, self.world = seed, world
        self.bucket_of = np.searchsorted(np.array(self.buckets), np.minimum(self.lengths, self.buckets[-1]))
        if len(self.epoch(0)) == 0:
            raise ConfigError(f"too few traces ({len(self.lengths)}) for one batch on each of {world} processes")

    def epoch(self, e: int) -> list[tuple[int, np.ndarray]]:
        rng = np.random.default_rng([self.seed, e])
        perm = rng.permutation(len(self.lengths))
        batches: list[tuple[int, np.ndarray]] = []
        for b, bucket in enumerate(self.buckets):
            members = perm[self.bucket_of[perm] == b]
            size = max(1, self.batch_tokens // bucket)
            batches.extend((bucket, members[i : i + size]) for i in range(0, len(members), size))
        order = rng.permutation(len(batches))
        usable = len(batches) - len(batches) % self.world
        return [batches[i] for i in order[:usable]]

    def batches_per_epoch(self) -> int:
        return len(self.epoch(0)) // self.world


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The random stream of one training step of one rank (and of the privacy gate's held-out loss draws)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))
    return g
