"""The native backend's one seam: a *representation* of traces, and the registry of them.

The training loop (:mod:`~netdiff_lib.models.native.train`), the sampler loop
(:mod:`~netdiff_lib.models.native.sampler`) and the model folder (:mod:`~netdiff_lib.models.native.model`) know
nothing about how a packet is shown to the network: that is a representation's, one module implementing
:class:`Representation` and one line in :data:`REPRESENTATIONS` (the name ``model.representation`` selects).
Today there is one, ``tokens`` (:mod:`~netdiff_lib.models.native.field_tokens`).

========= ================================================================ ==============================
verb      what                                                             who calls it
========= ================================================================ ==============================
fit       fit vocabularies / statistics on the training traces             training, once
rows      one trace -> float32 model rows (packets, ``width``)             training, packing the data
network   the denoiser (``nn.Module``; its shape may depend on the fit)    training, loading a folder
schedule  the noise schedule: training noise levels, the sampler's grid    loss and sample
loss      one batch of rows -> (loss to minimise, the logged ``metric``)   training, every step
sample    one batch of (class, length) requests -> host arrays             sampler, on the device
decode    those arrays -> nPrint rows + inter-arrival µs                   sampler, host thread or processes
save/load the fitted state: the file ``file`` of the model folder          model folder
========= ================================================================ ==============================

Rules the loops rely on: ``loss`` and ``sample`` draw every random number from the generator they are given
(so a resumed run takes the same steps, and a seed gives the same traces); ``loss`` gets ``model`` (what runs
the forward pass: possibly compiled or wrapped for DDP) and ``net`` (the plain network, for its attributes);
batches are length-bucketed: ``rows`` (B, N, width) with the zero row past each trace's ``lengths``, and
``padded`` False when every trace fills all N positions.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from netdiff_lib.config import Config, ModelConfig
    from netdiff_lib.schema import Layout
    from netdiff_lib.trace import Trace

#: name (``model.representation``) -> "module:Class"; a new representation adds one line.
REPRESENTATIONS: dict[str, str] = {
    "tokens": "netdiff_lib.models.native.field_tokens:FieldTokens",
}
#: Removed representations: name -> where they live now.
REMOVED = {"features": "the first design (continuous features) was removed; it lives at commit 425ffc8 "
                       "(BENCHMARKS.md has its numbers)"}


class NoiseSchedule(ABC):
    """Noise levels of a representation's diffusion, in training and in sampling alike."""

    @abstractmethod
    def train_levels(self, batch: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        """The noise level of each sample of a training batch (B,), drawn from ``gen``."""

    @abstractmethod
    def grid(self, steps: int) -> list[tuple[float, float]]:
        """The sampler's ``steps`` (from, to) noise-level pairs, from pure noise to clean."""


class Representation(ABC):
    """How the native backend shows traces to its network (see the module docstring); an instance holds the
    state fitted on the training traces."""

    #: the ``model.representation`` value
    name: ClassVar[str]
    #: the model-folder file of the fitted state
    file: ClassVar[str]
    #: the loss-history key of the error :meth:`loss` logs, and how plots call it
    metric: ClassVar[str]
    metric_label: ClassVar[str]

    @classmethod
    @abstractmethod
    def fit(cls, cfg: Config, traces: list[Trace], labels: list[str]) -> Representation:
        """Fit on the training traces (cut to ``cfg.model.max_packets``); ``labels`` are their classes."""

    @property
    @abstractmethod
    def layout(self) -> Layout:
        """The nPrint layout :meth:`decode` writes."""

    @property
    @abstractmethod
    def width(self) -> int:
        """Columns of a model row."""

    @property
    @abstractmethod
    def signature(self) -> Any:
        """What the network's shape depends on (JSON): saved beside the weights and checked when loading."""

    def describe(self) -> dict[str, Any]:
        """What the model card's data section says about the fit."""
        return {}

    @abstractmethod
    def rows(self, trace: Trace) -> np.ndarray:
        """One trace -> float32 rows (packets, :attr:`width`)."""

    def rows_many(self, traces: Sequence[Trace]) -> np.ndarray:
        """The rows of ``traces``, concatenated: what :meth:`rows` gives each (a representation may do it at
        once: many short traces, e.g. one per flow, then cost no per-trace overhead)."""
        return np.concatenate([self.rows(t) for t in traces]) if traces else np.zeros((0, self.width), np.float32)

    @abstractmethod
    def network(self, cfg: Config, n_classes: int) -> torch.nn.Module:
        """A new (untrained) denoiser for ``n_classes`` classes."""

    @abstractmethod
    def schedule(self, cfg: Config) -> NoiseSchedule:
        """The noise schedule."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, net: torch.nn.Module, cfg: Config, rows: torch.Tensor,
             labels: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator,
             padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to minimise, the detached :attr:`metric`) of one batch."""

    @abstractmethod
    def sample(self, net: torch.nn.Module, cfg: Config, labels: torch.Tensor, lengths: torch.Tensor, n: int, *,
               steps: int, guidance: float, gen: torch.Generator, padded: bool) -> Any:
        """One batch: ``labels`` (B,) class indices, ``lengths`` (B,) packets, ``n`` positions -> host arrays of
        the valid rows (what :meth:`decode` takes); guidance 1 = none, 0 = unconditional."""

    @abstractmethod
    def decode(self, host: Any, lengths: np.ndarray, labels: list[str],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`sample`'s arrays -> (nPrint rows int8 of all the batch's traces in order, inter-arrival µs)."""

    def host_codec(self) -> Any:
        """What decodes batches in a worker process (:mod:`~netdiff_lib.models.native.host_decode`): a picklable
        object whose module imports no torch, with ``decode_compact(host, lengths, labels, rng)`` (:meth:`decode`'s
        work, returning something small to send back) and ``expand(compact)`` (what :meth:`decode` returns); None
        (the default): batches are decoded in a thread of the sampling process."""
        return None

    def with_decoding(self, model: ModelConfig, keys: Sequence[str]) -> tuple[Representation, list[str]]:
        """This representation decoding by the rules ``keys`` of ``model`` (``netdiff generate --set
        model.tcp_state=...``), and one-line notices for the rules whose fitted state it lacks; the default has no
        such rules."""
        return self, []

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the fitted state to ``path``."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> Representation:
        """Read what :meth:`save` wrote (InputError naming the file when it is not that)."""


def check_name(name: str) -> None:
    """ConfigError unless ``name`` is a registered representation."""
    from netdiff_lib.errors import ConfigError

    if name in REMOVED:
        raise ConfigError(f"model.representation={name}: {REMOVED[name]}")
    if name not in REPRESENTATIONS:
        raise ConfigError(f"model.representation must be one of {', '.join(sorted(REPRESENTATIONS))}, "
                          f"not {name!r}")


def representation_class(name: str) -> type[Representation]:
    """The class registered as ``name``."""
    check_name(name)
    module, cls = REPRESENTATIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)
