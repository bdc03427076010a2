"""Configuration of the ``sd15`` backend: NetDiffusion's settings as validated dataclasses, presets as functions.

Every default is the seed's (``../shared/reference/netdiffusion.md`` sections 3-6: kohya_ss v22.6.2
``LoraLowVRAMSettings.json`` and the A1111 parameters of the published sample image): LoRA rank 128 / alpha
128 on the UNet's and the text encoder's attention and MLP layers, AdamW (8-bit when bitsandbytes is there),
lr 1e-4 UNet / 5e-5 text encoder, constant schedule, fp16, seed 1234, clip skip 2, gradient checkpointing,
batch 1, 1 epoch of 20 repeats, at 816x768; generation Euler-ancestral, 20 steps, CFG 7, seed 1234,
ControlNet canny 100/200 at weight 1.5, resize to 1088x1024, colour snapping by NetDiffusion's rule.

``weights.base`` / ``weights.controlnet`` say where the pretrained Stable Diffusion 1.5 and ControlNet weights
are (:mod:`netdiff_lib.models.sd15.weights`); ``netdiff train --weights/--controlnet`` fill them in.
The preset ``tiny`` (64x64 internal images, rank 4, a few steps) is for tests only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from netdiff_lib.config import _parse, split_setting
from netdiff_lib.errors import ConfigError
from netdiff_lib.image import SNAP_RULES
from netdiff_lib.schema import MAX_PACKETS

PRESETS = ("tiny", "small", "base")
PRECISIONS = ("no", "fp16", "bf16")
SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")
#: kohya's "Standard" LoRA: every Linear / 1x1 conv of the UNet's Transformer2DModel blocks and of CLIP's
#: attention and MLP (``networks/lora.py``: Transformer2DModel, CLIPAttention, CLIPMLP).
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _multiple_of_8(name: str, value: int) -> None:
    if value < 8 or value % 8:
        raise ConfigError(f"{name} must be a positive multiple of 8 (the VAE's scale), not {value}")


@dataclass(frozen=True)
class WeightsConfig:
    """Where the pretrained weights are: a diffusers folder, a ``.safetensors``/``.ckpt`` file, a Hugging Face
    cache folder or an ``s3://`` URI (downloaded once into ``cache``; empty: ``$NETDIFF_WEIGHTS_CACHE`` or
    ``~/.cache/netdiff/weights``). ``config`` / ``controlnet_config``: local diffusers folders giving the model
    configs (and tokenizer) of single-file checkpoints (offline, nothing is fetched)."""

    base: str = ""
    controlnet: str = ""
    config: str = ""
    controlnet_config: str = ""
    cache: str = ""


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 128
    alpha: float = 128.0
    train_text_encoder: bool = True

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise ConfigError("lora.rank must be >= 1 and lora.alpha > 0")


@dataclass(frozen=True)
class TrainSettings:
    """``steps`` 0: ``epochs x repeats x images / batch`` (kohya's rule)."""

    width: int = 816
    height: int = 768
    steps: int = 0
    epochs: int = 1
    repeats: int = 20
    batch_size: int = 1
    unet_lr: float = 1e-4
    text_encoder_lr: float = 5e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    optimizer: str = "adamw8bit"
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    mixed_precision: str = "fp16"
    seed: int = 1234
    clip_skip: int = 2
    gradient_checkpointing: bool = True
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    cpu_threads: int = 0

    def __post_init__(self) -> None:
        _multiple_of_8("train.width", self.width)
        _multiple_of_8("train.height", self.height)
        if self.steps < 0 or self.epochs < 1 or self.repeats < 1 or self.batch_size < 1:
            raise ConfigError("train.steps must be >= 0 and train.epochs, repeats, batch_size >= 1")
        if self.unet_lr <= 0 or self.text_encoder_lr < 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ConfigError("train.unet_lr and max_grad_norm must be > 0; text_encoder_lr, weight_decay >= 0")
        if self.lr_schedule not in SCHEDULES or self.warmup_steps < 0:
            raise ConfigError(f"train.lr_schedule must be one of {', '.join(SCHEDULES)}; warmup_steps >= 0")
        if self.optimizer not in ("adamw8bit", "adamw"):
            raise ConfigError("train.optimizer must be adamw8bit (AdamW when bitsandbytes is absent) or adamw")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"train.mixed_precision must be one of {', '.join(PRECISIONS)}")
        if self.clip_skip < 1:
            raise ConfigError("train.clip_skip must be >= 1 (1: the last CLIP layer; 2: the one before, A1111's)")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.cpu_threads < 0:
            raise ConfigError("train.checkpoint_every and keep_checkpoints must be >= 1, cpu_threads >= 0")


@dataclass(frozen=True)
class GenerateSettings:
    """txt2img at ``width`` x ``height``, ControlNet canny on a real image of the class, resize to the
    NetDiffusion image (1088x1024; ``hires_denoise`` > 0: a real img2img pass there), snap, keep ``max_packets``."""

    width: int = 816
    height: int = 768
    steps: int = 20
    guidance: float = 7.0
    seed: int = 1234
    scheduler: str = "euler_a"
    controlnet_scale: float = 1.5
    control_start: float = 0.0
    control_end: float = 1.0
    canny_low: int = 100
    canny_high: int = 200
    controls_per_class: int = 4
    hires_denoise: float = 0.0
    snap: str = "netdiffusion"
    dtype: str = "fp16"
    batch_size: int = 8
    max_packets: int = MAX_PACKETS

    def __post_init__(self) -> None:
        _multiple_of_8("generate.width", self.width)
        _multiple_of_8("generate.height", self.height)
        if self.steps < 1 or self.guidance < 0 or self.controlnet_scale < 0 or self.batch_size < 1:
            raise ConfigError("generate.steps and batch_size must be >= 1; guidance, controlnet_scale >= 0")
        if self.scheduler not in ("euler_a", "euler", "ddim", "dpmpp_2m"):
            raise ConfigError("generate.scheduler must be euler_a, euler, ddim or dpmpp_2m")
        if not 0 <= self.control_start <= self.control_end <= 1:
            raise ConfigError("generate.control_start/control_end must satisfy 0 <= start <= end <= 1")
        if not 0 <= self.canny_low <= self.canny_high <= 255 * 4:
            raise ConfigError("generate.canny_low must be >= 0 and <= canny_high")
        if self.controls_per_class < 1 or not 0 <= self.hires_denoise <= 1:
            raise ConfigError("generate.controls_per_class must be >= 1 and hires_denoise in [0, 1]")
        if self.snap not in SNAP_RULES:
            raise ConfigError(f"generate.snap must be one of {', '.join(SNAP_RULES)}")
        if self.dtype not in ("fp16", "bf16", "fp32"):
            raise ConfigError("generate.dtype must be fp16, bf16 or fp32 (fp32 always on the CPU)")
        if not 1 <= self.max_packets <= MAX_PACKETS:
            raise ConfigError(f"generate.max_packets must be in 1..{MAX_PACKETS}")


@dataclass(frozen=True)
class Sd15Config:
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    preset: str = "base"
    backend: str = "sd15"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sd15Config:
        try:
            return cls(weights=WeightsConfig(**d.get("weights", {})), lora=LoraSettings(**d.get("lora", {})),
                       train=TrainSettings(**d.get("train", {})), generate=GenerateSettings(**d.get("generate", {})),
                       preset=d.get("preset", "custom"))
        except TypeError as exc:
            raise ConfigError(f"bad sd15 config: {exc}") from None

    def with_settings(self, assignments: list[str] | tuple[str, ...]) -> Sd15Config:
        """A copy with ``section.key=value`` assignments applied (``lora.rank=64``, ``train.width=512``)."""
        out = self
        for item in assignments:
            section, name, part, text = split_setting(out, item, SECTIONS)
            current = getattr(part, name)
            value = text if isinstance(current, str) else _parse(text, current, item)
            out = replace(out, **{section: replace(part, **{name: value})})
        return out

    def with_weights(self, weights: dict[str, str] | None) -> Sd15Config:
        """A copy with ``{"base": URI, "controlnet": URI, ...}`` set (empty values ignored)."""
        known = {f.name for f in fields(WeightsConfig)}
        bad = sorted(set(weights or {}) - known)
        if bad:
            raise ConfigError(f"backend sd15 knows the weights {', '.join(sorted(known))}, not {', '.join(bad)}")
        kept = {k: str(v) for k, v in (weights or {}).items() if v}
        return replace(self, weights=replace(self.weights, **kept))


SECTIONS = ("weights", "lora", "train", "generate")


def base() -> Sd15Config:
    """NetDiffusion's settings, unchanged."""
    return Sd15Config()


def small() -> Sd15Config:
    """The seed's settings with 5 repeats (quicker first runs; same resolution and LoRA)."""
    cfg = base()
    return replace(cfg, train=replace(cfg.train, repeats=5), preset="small")


def tiny() -> Sd15Config:
    """Tests on CPU with tiny random models: 64x64 internal images, rank 4, 4 steps, 32 packets per trace."""
    cfg = base()
    return replace(
        cfg,
        lora=replace(cfg.lora, rank=4, alpha=4.0),
        train=replace(cfg.train, width=64, height=64, steps=4, mixed_precision="no", checkpoint_every=2,
                      cpu_threads=1),
        generate=replace(cfg.generate, width=64, height=64, steps=4, controls_per_class=2, dtype="fp32",
                         batch_size=4, max_packets=32),
        preset="tiny",
    )


def preset(name: str) -> Sd15Config:
    table = {"tiny": tiny, "small": small, "base": base}
    if name not in table:
        raise ConfigError(f"unknown sd15 preset {name!r}; choose one of {', '.join(PRESETS)}")
    return table[name]()
