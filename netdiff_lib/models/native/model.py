"""The native model: a class-conditional diffusion transformer over packet sequences, and its model folder.

What runs (representation ``tokens``, the only one; :mod:`~netdiff_lib.models.native.field_tokens`): each
packet is one transformer position carrying one categorical token per header field (a vocabulary per field
fitted on the training traces: frequent values, escape bins, per-trace port slots or conversations
(``model.endpoints``, :mod:`~netdiff_lib.models.native.endpoints`), option templates;
:mod:`~netdiff_lib.models.native.tokens`) plus its log inter-arrival time.  The network
(:class:`~netdiff_lib.models.native.discrete.TokenDiT` on :class:`~netdiff_lib.models.native.layers.Trunk`)
sums the field embeddings of a packet, adds a learned position and runs adaLN-Zero transformer blocks
conditioned on the noise level, the class (one extra "null" class for classifier-free guidance) and the trace
length (lengths are drawn from the training traces when generating, so padding is never generated).  It is
trained as masked (absorbing-state) discrete diffusion in two stages, packet kinds (IP version, protocol,
transport) first, then the fields each kind carries, jointly with Gaussian diffusion of the inter-arrival time
(:mod:`~netdiff_lib.models.native.discrete`).

This module holds the loaded model (:class:`NativeModel`, a :class:`~netdiff_lib.models.base.TraceGenerator`)
and the model folder: ``model.safetensors`` (EMA weights), ``config.json`` (config, classes, the
representation's signature), the representation's fitted state (``tokens.json``), ``stats.json``,
``class_map.json``, the model card and loss curve, ``payloads.json``.  The training loop is
:mod:`~netdiff_lib.models.native.train`, the sampler :mod:`~netdiff_lib.models.native.sampler`, the
:class:`~netdiff_lib.models.base.Backend` :mod:`~netdiff_lib.models.native.backend`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from netdiff_lib.atomic import atomic_path
from netdiff_lib.config import SECTIONS, Config, split_setting
from netdiff_lib.errors import ConfigError, InputError, TrainingError
from netdiff_lib.models.base import GeneratedTrace, Sampling, TraceGenerator, empirical_times
from netdiff_lib.models.native.representation import Representation, representation_class
from netdiff_lib.models.native.sampler import generate_traces
from netdiff_lib.repair.timing import IatModel
from netdiff_lib.schema import Layout

if TYPE_CHECKING:
    from netdiff_lib.models.native.data import Prepared

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATS = "stats.json"
CLASSES = "class_map.json"
COMPILED_PREFIX = "_orig_mod."  # torch.compile's wrapper puts the network under this name


@dataclass
class NativeModel(TraceGenerator):
    """A trained native model loaded from its folder: network (EMA weights), representation, classes, statistics."""

    net: torch.nn.Module
    config: Config
    representation: Representation
    labels: list[str]
    stats: dict[str, Any]
    model_dir: str = ""

    def length_pool(self, label: str) -> np.ndarray:
        """Training trace lengths of one class (the generator draws from these)."""
        return np.asarray(self.stats["lengths"][label], dtype=np.int64)

    @property
    def layout(self) -> Layout:
        return self.representation.layout

    def empirical_models(self) -> dict[str, IatModel]:
        """Each class's empirical inter-arrival model, fitted to its training traces."""
        return {lab: IatModel.from_dict(d) for lab, d in self.stats.get("iat_models", {}).items()}

    def generate(self, per_class: int | dict[str, int], sampling: Sampling | None = None, *,
                 length: int | None = None, timings: dict[str, float] | None = None) -> list[GeneratedTrace]:
        """See :meth:`TraceGenerator.generate`; ``length`` fixes every trace's length, ``timings`` receives
        the device and host seconds (:func:`netdiff_lib.models.native.sampler.generate_traces`)."""
        s = sampling or Sampling()
        traces = generate_traces(self, per_class, steps=s.steps, guidance=s.guidance, seed=s.seed,
                                 progress=s.progress, length=length, compile=s.compile, timings=timings)
        return empirical_times(traces, self.empirical_models(), s.seed) if s.timing == "empirical" else traces

    def apply_settings(self, settings: Sequence[str]) -> list[str]:
        """See :meth:`TraceGenerator.apply_settings`: the keys of :data:`netdiff_lib.config.GENERATION_KEYS`; the
        ``model`` ones reach the decoder (the representation's copy, which worker processes are sent) too."""
        self.config = self.config.with_generation_settings(settings)
        keys = [name for section, name, _, _ in (split_setting(self.config, item, SECTIONS) for item in settings)
                if section == "model"]
        self.representation, notices = self.representation.with_decoding(self.config.model, keys)
        return notices


def plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with torch.compile's ``_orig_mod.`` prefix removed (weights saved from a compiled network
    load into a plain one)."""
    return {k.replace(COMPILED_PREFIX, ""): v for k, v in state.items()}


def save_model_dir(out: Path, state: dict[str, torch.Tensor], config: Config, rep: Representation,
                   labels: list[str], stats: dict[str, Any]) -> None:
    """Write the loadable part of a model folder (weights, config, the representation's state, statistics)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in plain_state(state).items()}, str(tmp))
    meta = {"backend": "native", "config": config.to_dict(), "n_classes": len(labels), "labels": labels,
            "codec_width": rep.signature}
    for name, obj in ((CONFIG, meta), (STATS, stats)):
        with atomic_path(out / name) as tmp:
            tmp.write_text(json.dumps(obj, indent=1))
    rep.save(out / rep.file)


def load_model_dir(model_dir: str | Path, device: str | torch.device = "cpu") -> NativeModel:
    """Load a native model folder; clear errors for a missing or foreign folder."""
    from safetensors.torch import load_file

    root = Path(model_dir)
    if not root.is_dir():
        raise InputError(root, "model folder not found")
    for name in (CONFIG, WEIGHTS, STATS):
        if not (root / name).is_file():
            raise InputError(root, f"not a native model folder: {name} is missing (was training finished?)")
    meta = json.loads((root / CONFIG).read_text())
    if meta.get("backend") != "native":
        raise ConfigError(f"{root} holds a {meta.get('backend')!r} model, not a native one")
    config = Config.from_dict(meta["config"])
    cls = representation_class(config.model.representation)
    path = root / cls.file
    if not path.is_file():
        raise InputError(root, f"not a native model folder: {path.name} is missing (was training finished?)")
    rep = cls.load(path)
    if rep.signature != meta.get("codec_width"):
        raise InputError(root, f"{path.name} gives the network shape {rep.signature}, the weights "
                               f"{meta.get('codec_width')}")
    net = rep.network(config, meta["n_classes"])
    try:
        net.load_state_dict(plain_state(load_file(str(root / WEIGHTS))))
    except (RuntimeError, OSError) as exc:
        raise InputError(root / WEIGHTS, f"weights do not fit the saved config ({str(exc)[:200]})") from None
    net.to(device).eval()
    stats = json.loads((root / STATS).read_text())
    return NativeModel(net, config, rep, list(meta["labels"]), stats, str(root))


def write_model_folder(stage: Path, cfg: Config, prep: Prepared, state: dict[str, torch.Tensor],
                       training: dict[str, Any], history: list[dict[str, float]]) -> None:
    """The whole model folder: EMA weights (``state``), config, the representation's state, statistics, class
    map, card (``training``: what the card says about the run), loss curve, payload profile."""
    from netdiff_lib.dataset import ClassMap
    from netdiff_lib.models.card import build_card, write_card, write_loss_curve

    if bad := [n for n, e in state.items() if not torch.isfinite(e).all()]:
        raise TrainingError(f"not writing {stage}: the averaged weights of {len(bad)} tensors ({bad[0]}, ...) are "
                            "not finite")
    save_model_dir(stage, state, cfg, prep.representation, prep.labels, prep.stats)
    class_map = ClassMap.from_labels(prep.labels)
    if list(class_map.labels) != prep.labels:
        raise ConfigError("class order differs from the class map's")  # both sort: cannot happen
    class_map.save(stage / CLASSES)
    card = build_card(backend=cfg.backend, config=cfg.to_dict(), data=prep.data_info,
                      class_map={lab: class_map.type_name(lab) for lab in class_map}, stats=prep.stats,
                      training=training)
    write_card(stage, card)
    write_loss_curve(stage, history, {prep.representation.metric: prep.representation.metric_label})
    if prep.payloads is not None:  # payload structure per class, for reconstruction
        from netdiff_lib.payloads import FILE_NAME

        prep.payloads.save(stage / FILE_NAME)
