"""Backend ``native``: the packet-sequence diffusion transformer (:mod:`netdiff_lib.models.native`).

Its config is :class:`netdiff_lib.config.Config` (presets ``tiny``, ``small``, ``base``; ``section.key=value``
settings); training is :func:`netdiff_lib.models.native.train.train`, loading
:func:`netdiff_lib.models.native.model.load_model_dir`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from netdiff_lib import config as presets
from netdiff_lib.config import Config
from netdiff_lib.models.base import Backend, TrainingData, no_weights
from netdiff_lib.models.native.model import NativeModel, load_model_dir
from netdiff_lib.models.native.train import train


class NativeBackend(Backend):
    name = "native"
    distributed = True
    privacy_gate = True

    def config(self, preset: str, *, steps: int | None = None, seed: int | None = None,
               settings: Sequence[str] = (), weights: Mapping[str, str] | None = None) -> Config:
        no_weights(self.name, weights)
        return presets.preset(preset).with_settings(list(settings)).with_overrides(steps=steps, seed=seed)

    def train(self, data: TrainingData, out: str, config: Config, *, resume: bool = False,
              progress: bool = True) -> str:
        return train(config, data, out, resume=resume, progress=progress)

    def check_generation_settings(self, settings: Sequence[str]) -> None:
        presets.base().with_generation_settings(settings)

    def load(self, model_dir: str, device: str = "cpu", weights: Mapping[str, str] | None = None) -> NativeModel:
        no_weights(self.name, weights)
        model = load_model_dir(model_dir, device=device)
        if str(device) == "cpu" and model.config.train.cpu_threads:
            torch.set_num_threads(model.config.train.cpu_threads)
        return model
