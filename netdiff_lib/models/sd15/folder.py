"""The ``sd15`` model folder: what training writes and generation reads.

``model_card.json`` (``"backend": "sd15"``, the resolved config, data fingerprint, class map, weights used,
training numbers) and ``README.md``; ``config.json`` (the config); ``class_map.json``;
``pytorch_lora_weights.safetensors`` (diffusers) and ``netdiff_lora.safetensors`` (kohya / A1111);
``controls/type-N/*.png`` (real images of each class, for ControlNet); ``stats.json`` (per-class trace lengths
and inter-arrival models: an image carries no time); ``payloads.json``; ``loss.json``; ``checkpoints/``.
The base Stable Diffusion and ControlNet weights are not copied: the card names them and generation loads them
from there (or from ``netdiff generate --weights/--controlnet``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netdiff_lib.atomic import write_json
from netdiff_lib.dataset import ClassMap
from netdiff_lib.errors import InputError
from netdiff_lib.models.base import TrainingData
from netdiff_lib.models.card import CARD, build_card, trace_stats, write_card, write_loss_curve
from netdiff_lib.models.sd15 import lora
from netdiff_lib.models.sd15.config import Sd15Config
from netdiff_lib.models.sd15.data import netdiffusion_trace, save_controls

CONFIG = "config.json"
STATS = "stats.json"
CLASS_MAP = "class_map.json"


def write_model_folder(out: Path, cfg: Sd15Config, data: TrainingData, class_map: ClassMap, unet: Any,
                       text_encoder: Any, training: dict[str, Any], history: list[dict[str, float]]) -> None:
    lora.save_diffusers(out, unet, text_encoder, cfg.lora)
    lora.save_kohya(out, unet, text_encoder, cfg.lora, resolution=f"{cfg.train.width},{cfg.train.height}")
    controls = save_controls(data, class_map, out, cfg.generate.controls_per_class)
    traces = [netdiffusion_trace(t) for t in data.traces]
    stats = trace_stats(traces, list(class_map.labels))
    write_json(out / STATS, {"iat_models": stats["iat_models"], "lengths": stats["lengths"]})
    write_json(out / CONFIG, {"backend": cfg.backend, **cfg.to_dict()})
    class_map.save(out / CLASS_MAP)
    info = {"source": data.source, "fingerprint": data.fingerprint, "captures": data.captures,
            "traces": len(traces), "packets": int(sum(len(t) for t in traces)), "max_packets": data.max_packets}
    card = build_card(backend=cfg.backend, config=cfg.to_dict(), data=info,
                      class_map={lab: class_map.type_name(lab) for lab in class_map}, stats=stats, training=training)
    card["weights"] = {"base": cfg.weights.base, "controlnet": cfg.weights.controlnet}
    card["controls"] = controls
    card["lora"] = {"diffusers": lora.DIFFUSERS_FILE, "kohya": lora.KOHYA_FILE,
                    "prompt": f"pixelated network data, type-N <lora:{Path(lora.KOHYA_FILE).stem}:1>"}
    write_card(out, card)
    write_loss_curve(out, history)
    if data.payloads is not None:
        from netdiff_lib.payloads import FILE_NAME

        data.payloads.save(out / FILE_NAME)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "missing from the sd15 model folder") from None
    except ValueError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None


def read_model_folder(model_dir: Path) -> tuple[Sd15Config, dict[str, Any], ClassMap, dict[str, Any]]:
    """(config, card, class map, stats) of a model folder."""
    card = read_json(model_dir / CARD)
    if card.get("backend") != "sd15":
        raise InputError(model_dir / CARD, f"written by backend {card.get('backend')!r}, not sd15")
    cfg = Sd15Config.from_dict({k: v for k, v in read_json(model_dir / CONFIG).items() if k != "backend"})
    if not (model_dir / lora.DIFFUSERS_FILE).is_file():
        raise InputError(model_dir / lora.DIFFUSERS_FILE, "missing: the LoRA weights of this model folder")
    return cfg, card, ClassMap.load(model_dir / CLASS_MAP), read_json(model_dir / STATS)
