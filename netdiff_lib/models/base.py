"""The small interface every generative backend implements (``native`` today, ``sd15`` later).

A backend knows how to ``train(data, out, config)`` a model folder from a directory of labelled captures and
how to ``load(model_dir)`` one back as a :class:`TraceGenerator`, whose ``generate(per_class, ...)`` returns
plain arrays: one :class:`GeneratedTrace` per synthetic trace (nPrint matrix, inter-arrival times, label).
Turning those into pcaps (reconstruction) is backend-independent and lives in :mod:`netdiff_lib.generate`.
Each backend records its name in the model folder's ``model_card.json`` so the right one loads it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass
class GeneratedTrace:
    """One synthetic trace: ``matrix`` int8 (packets, layout width) in {-1, 0, 1}, ``iat_us`` float (packets,)
    with the first entry 0, and the class ``label``."""

    matrix: np.ndarray
    iat_us: np.ndarray
    label: str

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.dtype != np.int8:
            raise ValueError(f"matrix must be 2-D int8, got {self.matrix.dtype} {self.matrix.shape}")
        if self.iat_us.shape != (len(self.matrix),):
            raise ValueError("need one inter-arrival time per packet")


class TraceGenerator(ABC):
    """A loaded model: its class labels and a ``generate`` method."""

    labels: list[str]

    @abstractmethod
    def generate(self, per_class: int | dict[str, int], **options: Any) -> list[GeneratedTrace]:
        """``per_class`` traces of every label (or ``{label: count}``), in label order."""


class Backend(ABC):
    """Train a model folder from captures; load one back."""

    name: ClassVar[str]

    @abstractmethod
    def train(self, data: str, out: str, config: Any, **options: Any) -> str:
        """Train on the captures under ``data`` (``<label>/*.pcap``), write the model folder ``out`` (local or
        ``s3://``) and return it."""

    @abstractmethod
    def load(self, model_dir: str, **options: Any) -> TraceGenerator:
        """Load a model folder written by :meth:`train`."""
