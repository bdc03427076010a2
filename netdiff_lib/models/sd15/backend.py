"""Backend ``sd15``: NetDiffusion's own method, Stable Diffusion 1.5 + LoRA + ControlNet canny (diffusers, peft).

Config: :class:`~netdiff_lib.models.sd15.config.Sd15Config` (presets ``tiny``, ``small``, ``base``;
``section.key=value`` settings; pretrained weights through ``weights``); training
:func:`~netdiff_lib.models.sd15.train.train`; generation :class:`~netdiff_lib.models.sd15.generate.Sd15Generator`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from netdiff_lib.errors import ConfigError
from netdiff_lib.models.base import Backend, TraceGenerator, TrainingData
from netdiff_lib.models.sd15 import config as presets
from netdiff_lib.models.sd15.config import Sd15Config

PACKAGES = {"diffusers": "diffusers", "peft": "peft", "transformers": "transformers", "cv2": "opencv-python-headless",
            "safetensors": "safetensors"}


def check_packages() -> None:
    """ConfigError naming the packages the backend needs that are not installed."""
    missing = [pip for mod, pip in PACKAGES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ConfigError(f"backend sd15 needs {', '.join(missing)}: pip install 'netdiff[sd15]' "
                          "(with torch==2.13.0 installed first)")


class Sd15Backend(Backend):
    name = "sd15"

    def config(self, preset: str, *, steps: int | None = None, seed: int | None = None,
               settings: Sequence[str] = (), weights: Mapping[str, str] | None = None) -> Sd15Config:
        check_packages()
        cfg = presets.preset(preset).with_settings(list(settings)).with_weights(dict(weights or {}))
        if steps is not None:
            cfg = replace(cfg, train=replace(cfg.train, steps=steps))
        if seed is not None:
            cfg = replace(cfg, train=replace(cfg.train, seed=seed))
        return cfg

    def train(self, data: TrainingData, out: str, config: Sd15Config, *, resume: bool = False,
              progress: bool = True) -> str:
        from netdiff_lib.models.sd15.train import train

        return train(config, data, out, resume=resume, progress=progress)

    def load(self, model_dir: str, device: str = "cpu",
             weights: Mapping[str, str] | None = None) -> TraceGenerator:
        from netdiff_lib.models.sd15.folder import read_model_folder
        from netdiff_lib.models.sd15.generate import Sd15Generator

        check_packages()
        root = Path(model_dir)
        cfg, card, class_map, stats = read_model_folder(root)
        cfg = cfg.with_weights(dict(weights or {}))
        if str(device) == "cpu" and cfg.train.cpu_threads:
            torch.set_num_threads(cfg.train.cpu_threads)
        return Sd15Generator(root, cfg, class_map, card.get("controls", {}), stats, device=device)
