"""The native backend: a packet-sequence transformer that denoises whole traces, trained from scratch.

Two representations of a packet, chosen by ``model.representation``: ``tokens`` (the default) shows header
fields as categorical tokens to a masked discrete diffusion model (:mod:`netdiff_lib.models.discrete`);
``features``, the first design and the baseline it is measured against, is described here.

Network (:class:`PacketDiT`): each packet is one token, a linear embedding of its feature vector
(:mod:`netdiff_lib.models.features`: header fields as numbers or bits, plus log inter-arrival time) plus a
learned position.  A stack of DiT-style blocks (PyTorch ``scaled_dot_product_attention``, key-padding mask)
is conditioned through adaptive layer norm ("adaLN-Zero") on the sum of three embeddings: the diffusion
timestep, the class (one extra "null" class for classifier-free guidance) and the trace length (lengths are
drawn from the training data at generation time, so padding is never generated and batches can be bucketed).

Output parameterisation: the network predicts the clean sample through a learned per-value gate on the noisy
input, ``x0 = m + g * x_t`` with ``g = 2 sigmoid(s) * sqrt(alpha_bar_t)``.  At initialisation (zeroed head)
this is the optimal linear estimate for unit-variance data; the network learns where to copy the input
(low noise, confident values) and where to replace it.  A first probe found this with min-SNR weighting far
better than plain v-prediction, which produced noise.

This module holds the continuous network, the model folder (either representation) and the loaded model
(:class:`NativeModel`, a :class:`~netdiff_lib.models.base.TraceGenerator`): the training loop is
:mod:`netdiff_lib.train`, the sampler :mod:`netdiff_lib.models.sampler`, the
:class:`~netdiff_lib.models.base.Backend` :mod:`netdiff_lib.models.native_backend`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netdiff_lib.atomic import atomic_path
from netdiff_lib.config import Config, ModelConfig
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.models.base import GeneratedTrace, Sampling, TraceGenerator, empirical_times
from netdiff_lib.models.discrete import TokenDiT
from netdiff_lib.models.features import FeatureCodec
from netdiff_lib.models.layers import Trunk
from netdiff_lib.models.sampler import generate_traces
from netdiff_lib.models.tokens import IAT_TOKEN_BINS, FieldTokenizer
from netdiff_lib.repair.timing import IatModel
from netdiff_lib.schema import Layout

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FEATURES = "features.json"
TOKENS = "tokens.json"
STATS = "stats.json"
CLASSES = "class_map.json"


class PacketDiT(Trunk):
    """Denoiser over packet sequences: ``forward(x_t, t, labels, lengths, sqrt_alpha_bar) -> x0``."""

    def __init__(self, cfg: ModelConfig, n_features: int, n_classes: int) -> None:
        super().__init__(cfg, n_classes, 2 * n_features)
        self.n_features = n_features
        self.inp = nn.Linear(n_features, cfg.d_model)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor,
        sqrt_alpha_bar: torch.Tensor, padded: bool = True,
    ) -> torch.Tensor:
        """x0 estimate (B, N, F) float32; ``padded=False`` promises every trace fills all N rows (no mask)."""
        m, s = self.trunk(self.inp(x_t), t, labels, lengths, padded).chunk(2, dim=-1)
        gate = 2.0 * torch.sigmoid(s) * sqrt_alpha_bar.float()[:, None, None]
        return m + gate * x_t.float()


@dataclass
class NativeModel(TraceGenerator):
    """A trained native model loaded from its folder: network (EMA weights), features, classes, statistics."""

    net: PacketDiT | TokenDiT
    config: Config
    codec: FeatureCodec | FieldTokenizer
    labels: list[str]
    stats: dict[str, Any]
    model_dir: str = ""

    def length_pool(self, label: str) -> np.ndarray:
        """Training trace lengths of one class (the generator draws from these)."""
        return np.asarray(self.stats["lengths"][label], dtype=np.int64)

    @property
    def layout(self) -> Layout:
        return self.codec.layout

    def empirical_models(self) -> dict[str, IatModel]:
        """Each class's empirical inter-arrival model, fitted to its training traces."""
        return {lab: IatModel.from_dict(d) for lab, d in self.stats.get("iat_models", {}).items()}

    def generate(self, per_class: int | dict[str, int], sampling: Sampling | None = None, *,
                 length: int | None = None, timings: dict[str, float] | None = None) -> list[GeneratedTrace]:
        """See :meth:`TraceGenerator.generate`; ``length`` fixes every trace's length, ``timings`` receives
        the device and host seconds (:func:`netdiff_lib.models.sampler.generate_traces`)."""
        s = sampling or Sampling()
        traces = generate_traces(self, per_class, steps=s.steps, guidance=s.guidance, seed=s.seed,
                                 progress=s.progress, length=length, timings=timings)
        return empirical_times(traces, self.empirical_models(), s.seed) if s.timing == "empirical" else traces


def build_network(cfg: Config, codec: FeatureCodec | FieldTokenizer, n_classes: int) -> PacketDiT | TokenDiT:
    """The network of ``cfg.model.representation`` for this codec (feature map or tokenizer)."""
    if isinstance(codec, FieldTokenizer):
        return TokenDiT(cfg.model, codec.sizes, n_classes)
    return PacketDiT(cfg.model, codec.width, n_classes)


def fit_codec(cfg: Config, matrices: list[np.ndarray], labels: list[str]) -> FeatureCodec | FieldTokenizer:
    """The codec of ``cfg.model.representation``, fitted to the training matrices (``labels``: their classes)."""
    m = cfg.model
    if m.representation == "tokens":
        return FieldTokenizer.fit(matrices, labels, max_values=m.vocab_max_values, escape_bins=m.escape_bins,
                                  port_slots=m.port_slots, port_min_traces=m.port_min_traces,
                                  iat_bins=IAT_TOKEN_BINS if m.iat == "tokens" else 0)
    return FeatureCodec().fit(matrices)


def _codec_file(cfg: Config) -> str:
    return TOKENS if cfg.model.representation == "tokens" else FEATURES


def save_model_dir(out: Path, net: PacketDiT | TokenDiT, state: dict[str, torch.Tensor], config: Config,
                   codec: FeatureCodec | FieldTokenizer, labels: list[str], stats: dict[str, Any]) -> None:
    """Write the loadable part of a model folder (weights, config, codec, classes, statistics)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, str(tmp))
    meta = {"backend": "native", "config": config.to_dict(), "n_classes": net.n_classes, "labels": labels,
            "codec_width": _width(codec)}
    for name, obj in ((CONFIG, meta), (STATS, stats)):
        with atomic_path(out / name) as tmp:
            tmp.write_text(json.dumps(obj, indent=1))
    codec.save(out / _codec_file(config))


def _width(codec: FeatureCodec | FieldTokenizer) -> int | list[int]:
    return codec.sizes if isinstance(codec, FieldTokenizer) else codec.width


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
    codec_path = root / _codec_file(config)
    if not codec_path.is_file():
        raise InputError(root, f"not a native model folder: {codec_path.name} is missing (was training finished?)")
    codec = FieldTokenizer.load(codec_path) if config.model.representation == "tokens" else (
        FeatureCodec.load(codec_path))
    saved = meta.get("codec_width", meta.get("n_features"))
    if _width(codec) != saved:
        raise InputError(root, f"{codec_path.name} gives {_width(codec)} features, the weights {saved}")
    net = build_network(config, codec, meta["n_classes"])
    try:
        net.load_state_dict(load_file(str(root / WEIGHTS)))
    except (RuntimeError, OSError) as exc:
        raise InputError(root / WEIGHTS, f"weights do not fit the saved config ({str(exc)[:200]})") from None
    net.to(device).eval()
    stats = json.loads((root / STATS).read_text())
    return NativeModel(net, config, codec, list(meta["labels"]), stats, str(root))
