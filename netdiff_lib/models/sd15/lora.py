"""LoRA adapters on Stable Diffusion 1.5 (peft), saved for diffusers and for kohya / AUTOMATIC1111.

The adapters are kohya's "Standard" LoRA (:data:`~netdiff_lib.models.sd15.config.UNET_TARGETS`,
:data:`~netdiff_lib.models.sd15.config.TEXT_TARGETS`), initialised as kohya does (down: Kaiming-uniform, up:
zeros, so training starts from the base model). Two files are written:

* ``pytorch_lora_weights.safetensors``: diffusers' format (``StableDiffusionPipeline.save_lora_weights``,
  with the LoRA config as metadata), loaded with ``pipe.load_lora_weights(model_dir)``;
* ``netdiff_lora.safetensors``: kohya's key names (``lora_unet_<module>.lora_down.weight`` / ``.lora_up.weight``
  / ``.alpha``, ``lora_te_<module>...``), fp16, with ``ss_*`` metadata: copy it into the web UI's
  ``models/Lora/`` and prompt ``pixelated network data, type-N <lora:netdiff_lora:1>`` as NetDiffusion did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from netdiff_lib.atomic import atomic_path
from netdiff_lib.models.sd15.config import TEXT_TARGETS, UNET_TARGETS, LoraSettings

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "netdiff_lora.safetensors"


def add_lora(unet: Any, text_encoder: Any, cfg: LoraSettings) -> None:
    """Freeze the models and add trainable LoRA adapters to the UNet (and the text encoder)."""
    from peft import LoraConfig

    for m in (unet, text_encoder):
        m.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True,
                                target_modules=list(UNET_TARGETS)))
    if cfg.train_text_encoder:
        text_encoder.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True,
                                            target_modules=list(TEXT_TARGETS)))


def trainable(unet: Any, text_encoder: Any) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters by name (``unet.<name>``, ``text_encoder.<name>``), in a fixed order."""
    out = {f"unet.{n}": p for n, p in unet.named_parameters() if p.requires_grad}
    out |= {f"text_encoder.{n}": p for n, p in text_encoder.named_parameters() if p.requires_grad}
    return out


def peft_states(unet: Any, text_encoder: Any, train_text_encoder: bool) -> dict[str, dict[str, torch.Tensor]]:
    """peft's adapter state dicts (``...to_q.lora_A.weight``) of the UNet and, when trained, the text encoder."""
    from peft.utils import get_peft_model_state_dict

    out = {"unet": get_peft_model_state_dict(unet)}
    if train_text_encoder:
        out["text_encoder"] = get_peft_model_state_dict(text_encoder)
    return out


def save_diffusers(folder: Path, unet: Any, text_encoder: Any, cfg: LoraSettings) -> Path:
    """``pytorch_lora_weights.safetensors`` in diffusers' format, atomically."""
    from diffusers import StableDiffusionPipeline

    # peft's own key names (``lora_A``/``lora_B``): diffusers' convert_state_dict_to_diffusers turns attention
    # layers into the old ``lora.down`` names only, which load_lora_weights then silently skips.
    states = peft_states(unet, text_encoder, cfg.train_text_encoder)
    layers = {k: {n: t.detach().float().cpu().contiguous() for n, t in v.items()} for k, v in states.items()}
    meta = {"unet_lora_adapter_metadata": unet.peft_config["default"].to_dict()}
    if "text_encoder" in layers:
        meta["text_encoder_lora_adapter_metadata"] = text_encoder.peft_config["default"].to_dict()
    with atomic_path(folder / DIFFUSERS_FILE) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            save_directory=str(tmp.parent), weight_name=tmp.name, unet_lora_layers=layers["unet"],
            text_encoder_lora_layers=layers.get("text_encoder"), safe_serialization=True, **meta)
    return folder / DIFFUSERS_FILE


def kohya_state(states: dict[str, dict[str, torch.Tensor]], alpha: float,
                dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """peft adapter states -> kohya keys: ``lora_unet_`` / ``lora_te_`` + the module path with ``_`` for ``.``,
    ``.lora_down.weight`` (peft's A), ``.lora_up.weight`` (B) and a scalar ``.alpha`` per module."""
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
    out: dict[str, torch.Tensor] = {}
    for part, state in states.items():
        for key, tensor in state.items():
            module, _, kind = key.rpartition(".lora_")
            if part == "text_encoder" and not module.startswith("text_model."):
                module = "text_model." + module  # transformers 5.23+ flattened CLIPTextModel; kohya keeps the path
            name = prefixes[part] + module.replace(".", "_")
            role = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}.get(kind)
            if role is None:
                raise ValueError(f"unexpected LoRA tensor {key!r}")
            out[f"{name}.{role}"] = tensor.detach().to(dtype).cpu().contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return out


def save_kohya(folder: Path, unet: Any, text_encoder: Any, cfg: LoraSettings, *, resolution: str = "") -> Path:
    """``netdiff_lora.safetensors`` in kohya's format (fp16, as the seed saved it), atomically."""
    from safetensors.torch import save_file

    state = kohya_state(peft_states(unet, text_encoder, cfg.train_text_encoder), cfg.alpha)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(cfg.rank),
            "ss_network_alpha": str(cfg.alpha), "ss_base_model_version": "sd_v1", "ss_v2": "False",
            "ss_resolution": resolution, "ss_training_comment": "netdiff sd15 backend (NetDiffusion's method)"}
    with atomic_path(folder / KOHYA_FILE) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return folder / KOHYA_FILE
