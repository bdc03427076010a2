"""The interface every generative backend implements (``native`` today, ``sd15`` next); ``docs/CONTRACTS.md``.

A :class:`Backend` turns a :class:`TrainingData` (labelled nPrint traces, as the encode step wrote them) into a
model folder and loads a model folder back as a :class:`TraceGenerator`.  The generator's ``generate`` returns
what reconstruction needs and nothing backend-specific: one :class:`GeneratedTrace` per synthetic trace
(nPrint matrix in the generator's ``layout``, inter-arrival times already chosen by the :class:`Sampling`
options' timing mode, label).  Turning those into pcaps is backend-independent (:mod:`netdiff_lib.generate`).

Backend-specific training settings live in the backend's own config object, made by ``backend.config(preset,
steps=..., seed=..., settings=[...])``; callers (command line, pipeline stages) only pass it back to ``train``.
Each backend records its name in the model folder's ``model_card.json`` so that the right one loads it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from netdiff_lib.atomic import atomic_path
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.repair.timing import IatModel
from netdiff_lib.schema import Layout
from netdiff_lib.trace import Trace
from netdiff_lib.tracesource import ListSource, SubsetSource, TraceSource, iter_traces

if TYPE_CHECKING:
    from netdiff_lib.payloads import PayloadProfile

TIMINGS = ("generated", "empirical")
GENERATED_FORMAT = "netdiff-generated/1"


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


@dataclass(frozen=True)
class Sampling:
    """How to sample: ``steps`` and ``guidance`` (None: the model's defaults), ``timing`` (``generated``: the
    model's inter-arrival times; ``empirical``: drawn from each class's training gaps), ``seed``, ``progress``;
    ``compile`` (``auto``/``on``/``off``; None: the model's) whether the network runs compiled, where the backend
    can (native: ``generate.compile``)."""

    steps: int | None = None
    guidance: float | None = None
    timing: str = "generated"
    seed: int = 0
    progress: bool = True
    compile: str | None = None

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS:
            raise ConfigError(f"timing must be one of {', '.join(TIMINGS)}, not {self.timing!r}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"sampler steps must be >= 1, not {self.steps}")
        if self.guidance is not None and self.guidance < 0:
            raise ConfigError(f"guidance must be >= 0, not {self.guidance}")
        if self.compile not in (None, "auto", "on", "off"):
            raise ConfigError(f"compile must be auto, on or off, not {self.compile!r}")


@dataclass
class TrainingData:
    """Labelled nPrint traces to train on, with a ``fingerprint`` of their content (a resumed training checks
    it), where they came from (``source``), the packets kept per capture by the encoder (``max_packets``) and
    the payload profile learned from the same captures (``payloads``: a backend saves it in its model folder as
    ``payloads.json``, which reconstruction reads).

    The traces are either in memory (``traces``: wrapped in a :class:`~netdiff_lib.tracesource.ListSource`) or a
    :class:`~netdiff_lib.tracesource.TraceSource` read on demand (``dataset``, with ``traces`` left empty: nothing
    is read here but the fingerprint, streaming, when neither it nor the source's own ``fingerprint`` attribute
    is given).  Either way ``dataset`` is the one to read: it holds the traces with packets only.  ``labels`` and
    ``captures`` (distinct ``sources`` when not given) come from its metadata."""

    traces: list[Trace] = field(default_factory=list)
    source: str = ""
    max_packets: int = 0
    captures: int = 0
    fingerprint: str = field(default="")
    payloads: PayloadProfile | None = None
    dataset: TraceSource | None = None

    def __post_init__(self) -> None:
        if self.dataset is not None and self.traces:
            raise ValueError("TrainingData takes traces or a dataset, not both")
        if self.dataset is None:
            self.traces = [t for t in self.traces if len(t)]
            if not self.traces:
                raise InputError(self.source, "no training trace holds a packet")
            if any(t.label is None for t in self.traces):
                raise InputError(self.source, "every training trace needs a label")
            self.dataset = ListSource(self.traces)
        else:
            keep = np.flatnonzero(np.asarray(self.dataset.lengths) > 0)
            if not len(keep):
                raise InputError(self.source, "no training trace holds a packet")
            if len(keep) < len(self.dataset):
                self.dataset = SubsetSource(self.dataset, keep)
            if any(not lab for lab in self.dataset.labels):
                raise InputError(self.source, "every training trace needs a label")
        self.captures = self.captures or len(set(self.dataset.sources))
        self.fingerprint = (self.fingerprint or str(getattr(self.dataset, "fingerprint", "") or "")
                            or trace_fingerprint(self.traces or iter_traces(self.dataset)))

    @property
    def labels(self) -> list[str]:
        """The classes, sorted."""
        return sorted(set(self.source_of().labels))

    def source_of(self) -> TraceSource:
        """The traces as a source (``dataset``, set in ``__post_init__``)."""
        assert self.dataset is not None
        return self.dataset

    def in_memory(self) -> TrainingData:
        """This data with every trace read into ``traces`` (a backend that trains on small data only)."""
        if self.traces:
            return self
        return TrainingData(list(iter_traces(self.source_of())), source=self.source, max_packets=self.max_packets,
                            captures=self.captures, fingerprint=self.fingerprint, payloads=self.payloads)


class TraceGenerator(ABC):
    """A loaded model: its class labels, the nPrint layout of its matrices and ``generate``."""

    labels: list[str]

    def apply_settings(self, settings: Sequence[str]) -> list[str]:
        """Apply ``netdiff generate --set`` ``section.key=value`` ``settings`` to this loaded model, in memory only
        (never to its folder); returns one-line notices (a rule this model cannot follow, and what it does instead).
        ConfigError for a key that cannot change once the model is trained; by default every key."""
        refuse_settings(type(self).__name__, settings)
        return []

    @property
    @abstractmethod
    def layout(self) -> Layout:
        """The layout of the matrices that :meth:`generate` returns."""

    @abstractmethod
    def generate(self, per_class: int | dict[str, int], sampling: Sampling | None = None) -> list[GeneratedTrace]:
        """``per_class`` traces of every label (or ``{label: count}``), in label order."""


class Backend(ABC):
    """Make a config, train a model folder from nPrint traces, load one back."""

    name: ClassVar[str]
    #: True when :meth:`train` can run as one of several data-parallel processes (one per GPU, started by
    #: :func:`netdiff_lib.stages.launch.launch`); otherwise it runs in one process whatever the GPU count.
    distributed: ClassVar[bool] = False
    #: True when training holds the privacy gate (``--privacy on|off``, config section ``privacy``); a backend
    #: without one trains with it off and refuses ``--privacy on``.
    privacy_gate: ClassVar[bool] = False

    @abstractmethod
    def config(self, preset: str, *, steps: int | None = None, seed: int | None = None,
               settings: Sequence[str] = (), weights: Mapping[str, str] | None = None) -> Any:
        """This backend's training config: a named ``preset``, ``steps``/``seed`` when given (None: the
        preset's), ``section.key=value`` ``settings`` and pretrained ``weights`` by role (``{"base": URI,
        "controlnet": URI}``: local paths or ``s3://`` URIs; a backend that starts from scratch raises
        ConfigError when given any); raises ConfigError on a bad value."""

    @abstractmethod
    def train(self, data: TrainingData, out: str, config: Any, *, resume: bool = False,
              progress: bool = True) -> str:
        """Train on ``data`` and write the model folder ``out`` (local or ``s3://``; its checkpoints under
        ``out/checkpoints``, resumed from when ``resume``); returns ``out``."""

    def check_generation_settings(self, settings: Sequence[str]) -> None:
        """ConfigError, before a model is loaded, for ``netdiff generate --set`` ``settings`` that its
        :meth:`TraceGenerator.apply_settings` would refuse; by default any."""
        refuse_settings(f"backend {self.name!r}", settings)

    @abstractmethod
    def load(self, model_dir: str, device: str = "cpu", weights: Mapping[str, str] | None = None) -> TraceGenerator:
        """Load a model folder written by :meth:`train`; ``weights`` (roles as in :meth:`config`) replace the
        pretrained weights the folder names (another copy of the same weights, e.g. on another machine)."""


def refuse_settings(what: str, settings: Sequence[str]) -> None:
    """ConfigError for any generation setting: ``what`` (a backend, a model) takes none."""
    if settings:
        raise ConfigError(f"--set {settings[0]}: {what} takes no generation settings (only native models do)")


PRIVACY_MODES = ("on", "off")


def privacy_settings(backend: Backend, mode: str | None) -> list[str]:
    """``--privacy MODE`` as config settings of ``backend`` (``None`` or "": the preset's); ConfigError for ``on``
    with a backend that has no privacy gate."""
    if not mode:
        return []
    if mode not in PRIVACY_MODES:
        raise ConfigError(f"--privacy must be 'on' or 'off', not {mode!r}")
    if not backend.privacy_gate:
        if mode == "on":
            raise ConfigError(f"--privacy on: backend {backend.name!r} has no privacy gate (it trains on every "
                              "capture and its model is not checked against held-out ones; the gate is the native "
                              "backend's); leave --privacy out or pass --privacy off")
        return []
    return [f"privacy.mode={mode}"]


def no_weights(backend: str, weights: Mapping[str, str] | None) -> None:
    """ConfigError if pretrained ``weights`` are given to a backend that trains from scratch."""
    given = sorted(k for k, v in (weights or {}).items() if v)
    if given:
        raise ConfigError(f"backend {backend!r} trains from scratch and takes no pretrained weights "
                          f"({', '.join(given)} given); use --backend sd15 for Stable Diffusion weights")


def trace_fingerprint(traces: Iterable[Trace]) -> str:
    """sha256 over the sorted (label, sha256 of matrix and times) of every trace: the data a model saw (``traces``
    may be a stream: one trace at a time is held)."""
    import hashlib

    rows = []
    for t in traces:
        h = hashlib.sha256(np.ascontiguousarray(t.matrix).tobytes())
        if t.ts_ns is not None:
            h.update(np.ascontiguousarray(t.ts_ns).tobytes())
        rows.append(f"{t.label}\t{h.hexdigest()}")
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def empirical_times(traces: list[GeneratedTrace], models: dict[str, IatModel], seed: int) -> list[GeneratedTrace]:
    """The traces with inter-arrival times drawn from their class's model (``Sampling.timing="empirical"``);
    a class without a model keeps its generated times."""
    out = []
    for i, g in enumerate(traces):
        model = models.get(g.label)
        if model is None:
            out.append(g)
            continue
        iat = model.sample(len(g.matrix), np.random.default_rng([seed, i]))
        if len(iat):
            iat[0] = 0.0
        out.append(GeneratedTrace(g.matrix, iat, g.label))
    return out


def save_generated(path: str | Path, trace: GeneratedTrace, layout: Layout) -> Path:
    """Write a generated trace (matrix, inter-arrival times, label, layout) as ``.npz``, atomically."""
    header = {"format": GENERATED_FORMAT, "layout": layout.to_dict(), "label": trace.label}
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, matrix=trace.matrix, iat_us=trace.iat_us,
                            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    return Path(path)


def load_generated(path: str | Path) -> tuple[GeneratedTrace, Layout]:
    """Read a file written by :func:`save_generated`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            matrix, iat = z["matrix"], z["iat_us"]
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"not a generated-trace file ({exc})") from None
    if header.get("format") != GENERATED_FORMAT:
        raise InputError(path, f"unknown format {header.get('format')!r}, expected {GENERATED_FORMAT}")
    try:
        return GeneratedTrace(matrix, iat, str(header["label"])), Layout.from_dict(header["layout"])
    except (ValueError, KeyError) as exc:
        raise InputError(path, f"not a generated trace ({exc})") from None
