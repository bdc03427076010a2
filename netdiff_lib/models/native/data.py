"""Training data for the native model: traces -> one packed tensor of model rows, and a length-bucketed batch plan.

Traces average about 290 packets, so padding all of them to 1,024 rows wastes about 3x compute.  Each trace
goes to the smallest length bucket that holds it; a batch takes traces of one bucket only and as many as fit a
token budget (``batch_tokens // bucket``), so a step costs about the same whatever the bucket.

The plan is a pure function of ``(seed, epoch)``: every rank computes the same list of batches and takes every
``world``-th one, and the data position saved in a checkpoint is just ``(epoch, next batch)``, which makes
resuming after a kill exact.  All rows live in one tensor on the training device; a batch is one gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netdiff_lib.config import Config
from netdiff_lib.errors import ConfigError
from netdiff_lib.models.base import TrainingData
from netdiff_lib.models.card import trace_stats
from netdiff_lib.models.native.representation import Representation, representation_class
from netdiff_lib.trace import Trace


@dataclass
class Prepared:
    """The training data, ready for the loop: classes, the fitted representation, the packed rows, statistics
    (saved in the model folder), what the model card says about the data, the payload profile."""

    labels: list[str]
    representation: Representation
    packed: PackedTraces
    stats: dict[str, Any]
    data_info: dict[str, Any]
    payloads: Any = None  # a PayloadProfile, saved as payloads.json


def prepare_data(cfg: Config, data: TrainingData) -> Prepared:
    """Cut the traces to the model's ``max_packets``, fit the representation, pack the rows."""
    traces = [t.head(cfg.model.max_packets) for t in data.traces]
    labels = data.labels
    rep = representation_class(cfg.model.representation).fit(cfg, traces, [str(t.label) for t in traces])
    packed = PackedTraces.build(traces, rep, labels)
    info = {"source": data.source, "fingerprint": data.fingerprint, "captures": data.captures,
            "traces": len(traces), "packets": int(packed.lengths.sum()), "max_packets": cfg.model.max_packets,
            "encoded_max_packets": data.max_packets, "representation": rep.name, **rep.describe()}
    return Prepared(labels, rep, packed, trace_stats(traces, labels), info, data.payloads)


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
    def build(cls, traces: list[Trace], rep: Representation, labels: list[str]) -> PackedTraces:
        """Rows from the representation's :meth:`~netdiff_lib.models.native.representation.Representation.rows`."""
        index = {lab: i for i, lab in enumerate(labels)}
        feats = [rep.rows(t) for t in traces]
        lengths = np.array([len(f) for f in feats], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        stacked = np.concatenate([*feats, np.zeros((1, rep.width), np.float32)])
        return cls(torch.from_numpy(stacked), offsets, lengths, np.array([index[t.label] for t in traces]))

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
