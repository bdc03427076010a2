"""LoRA fine-tuning of Stable Diffusion 1.5 on NetDiffusion images: ``train(cfg, data, out)``.

What kohya_ss did for NetDiffusion, written out: latents cached once (VAE, seeded), epsilon prediction with
DDPM noise on uniform timesteps, MSE loss, clip skip 2 (the penultimate CLIP layer through the final layer
norm), AdamW (bitsandbytes' 8-bit AdamW on CUDA when it is installed) with separate UNet / text-encoder
learning rates, a diffusers LR schedule, gradient clipping at 1, fp16 autocast with a gradient scaler on a GPU
(fp32 on the CPU unless ``bf16``), gradient checkpointing. Steps default to kohya's rule
``ceil(epochs x repeats x images / batch)``.

A resumed run may train longer (more ``steps``) but must otherwise have the same LoRA and training settings.
Resuming is exact: the image order of every epoch is a permutation seeded by ``(seed, epoch)``, the noise and
timesteps of a step come from a generator seeded by ``(seed, step)``, and a checkpoint
(:mod:`netdiff_lib.checkpoint`) holds the LoRA weights, optimizer, LR schedule, gradient scaler and loss history.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from netdiff_lib import checkpoint, storage
from netdiff_lib.errors import ConfigError
from netdiff_lib.models.base import TrainingData
from netdiff_lib.models.sd15 import lora
from netdiff_lib.models.sd15.config import Sd15Config
from netdiff_lib.models.sd15.data import examples
from netdiff_lib.models.sd15.weights import load_pipeline

CHECKPOINTS = "checkpoints"
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Models:
    """What a training step needs, on the device."""

    unet: Any
    text_encoder: Any
    noise: Any  # the DDPM noise scheduler
    latents: torch.Tensor  # (images, 4, h/8, w/8), cached
    ids: torch.Tensor  # (images, 77) caption token ids
    params: dict[str, torch.nn.Parameter]
    pipe: Any


def precision(cfg: Sd15Config, device: torch.device) -> str:
    """fp16/bf16 as configured on a GPU; on the CPU only bf16 (fp16 autocast there is slow and lossy)."""
    mp = cfg.train.mixed_precision
    return mp if device.type == "cuda" or mp == "bf16" else "no"


def step_generator(seed: int, *key: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *key]).generate_state(1)[0]))


def encode_prompt(text_encoder: Any, ids: torch.Tensor, clip_skip: int) -> torch.Tensor:
    """CLIP hidden states with A1111's clip skip: ``clip_skip`` 2 takes the penultimate layer (and the final
    layer norm, as A1111, kohya and diffusers' ``clip_skip=1`` do)."""
    if clip_skip <= 1:
        return text_encoder(ids)[0]
    out = text_encoder(ids, output_hidden_states=True)
    body = getattr(text_encoder, "text_model", text_encoder)  # transformers 5.23+ has no .text_model
    return body.final_layer_norm(out.hidden_states[-clip_skip])


def prepare(cfg: Sd15Config, data: TrainingData, class_map: Any, device: torch.device) -> Models:
    """Load the base weights, add the LoRA, cache the latents and caption ids."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params

    tc = cfg.train
    pipe = load_pipeline(cfg.weights, torch.float32)
    frozen = DTYPES[precision(cfg, device)] if device.type == "cuda" else torch.float32
    unet, te, vae = pipe.unet, pipe.text_encoder, pipe.vae
    torch.manual_seed(tc.seed)  # the LoRA's initial down weights (Kaiming-uniform) are drawn here
    lora.add_lora(unet, te, cfg.lora)
    vae.requires_grad_(False)
    unet.to(device, dtype=frozen)
    te.to(device, dtype=frozen)
    vae.to(device, dtype=torch.float32)
    cast_training_params([unet, te], dtype=torch.float32)
    if tc.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.lora.train_text_encoder:
            te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    exs = examples(data, class_map, tc.width, tc.height)
    latents = cache_latents(vae, [e.image for e in exs], tc.seed, device)
    ids = pipe.tokenizer([e.caption for e in exs], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)
    pipe.vae = vae.to("cpu")
    noise = DDPMScheduler.from_config(pipe.scheduler.config)
    return Models(unet, te, noise, latents, ids, lora.trainable(unet, te), pipe)


@torch.no_grad()
def cache_latents(vae: Any, images: list[Any], seed: int, device: torch.device, chunk: int = 4) -> torch.Tensor:
    """VAE latents of every image (a sample of the posterior, seeded per image), times the scaling factor."""
    from diffusers.image_processor import VaeImageProcessor

    proc = VaeImageProcessor(vae_scale_factor=8)
    out = []
    for i in range(0, len(images), chunk):
        px = proc.preprocess(images[i : i + chunk]).to(device, torch.float32)
        dist = vae.encode(px).latent_dist
        gens = [step_generator(seed, 1 << 20, i + j) for j in range(len(px))]
        eps = torch.stack([torch.randn(dist.mean.shape[1:], generator=g) for g in gens]).to(device)
        out.append((dist.mean + dist.std * eps) * vae.config.scaling_factor)
    return torch.cat(out)


def total_steps(cfg: Sd15Config, images: int) -> int:
    tc = cfg.train
    return tc.steps or math.ceil(tc.epochs * tc.repeats * images / tc.batch_size)


def batch_indices(step: int, images: int, cfg: Sd15Config) -> np.ndarray:
    """The images of ``step``: epochs of ``repeats`` copies of every image, each shuffled by ``(seed, epoch)``."""
    per_epoch = images * cfg.train.repeats
    pos = np.arange(step * cfg.train.batch_size, (step + 1) * cfg.train.batch_size)
    out = []
    for p in pos:
        perm = np.random.default_rng([cfg.train.seed, int(p // per_epoch)]).permutation(per_epoch)
        out.append(perm[p % per_epoch] % images)
    return np.asarray(out)


def loss_of(m: Models, idx: np.ndarray, step: int, cfg: Sd15Config, device: torch.device) -> torch.Tensor:
    """The epsilon-prediction MSE of one batch (noise and timesteps from the step's generator)."""
    gen = step_generator(cfg.train.seed, step)
    latents = m.latents[torch.from_numpy(idx).to(device)]
    noise = torch.randn(latents.shape, generator=gen).to(device)
    t = torch.randint(0, m.noise.config.num_train_timesteps, (len(idx),), generator=gen).to(device)
    noisy = m.noise.add_noise(latents, noise, t)
    mp = precision(cfg, device)
    with torch.autocast(device.type, dtype=DTYPES[mp], enabled=mp != "no"):
        emb = encode_prompt(m.text_encoder, m.ids[torch.from_numpy(idx).to(device)], cfg.train.clip_skip)
        pred = m.unet(noisy, t, emb, return_dict=False)[0]
    return F.mse_loss(pred.float(), noise.float())


def make_optimizer(m: Models, cfg: Sd15Config, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """AdamW over the UNet LoRA (``unet_lr``) and text-encoder LoRA (``text_encoder_lr``); 8-bit on CUDA with
    bitsandbytes when ``adamw8bit``. Returns the optimizer and its name."""
    tc = cfg.train
    groups = [{"params": [p for n, p in m.params.items() if n.startswith("unet.")], "lr": tc.unet_lr}]
    te = [p for n, p in m.params.items() if n.startswith("text_encoder.")]
    if te:
        groups.append({"params": te, "lr": tc.text_encoder_lr})
    if tc.optimizer == "adamw8bit" and device.type == "cuda":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(groups, weight_decay=tc.weight_decay), "AdamW8bit"
        except ImportError:
            pass
    return torch.optim.AdamW(groups, weight_decay=tc.weight_decay), "AdamW"


def _staging(out: str) -> tuple[Path, bool]:
    if storage.is_remote(out):
        return Path(tempfile.mkdtemp(prefix="netdiff-sd15-")), True
    Path(out).mkdir(parents=True, exist_ok=True)
    return Path(out), False


def train(cfg: Sd15Config, data: TrainingData, out: str, *, resume: bool = False, progress: bool = True) -> str:
    """Train the LoRA on ``data`` and write the model folder ``out`` (local or ``s3://``)."""
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from netdiff_lib.dataset import ClassMap
    from netdiff_lib.models.sd15.folder import write_model_folder

    if cfg.train.cpu_threads:
        torch.set_num_threads(cfg.train.cpu_threads)
    data = data.in_memory()  # it trains on small data: a trace source is read whole
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stage, remote = _staging(out)
    ckpt_root = storage.join(out, CHECKPOINTS) if remote else str(stage / CHECKPOINTS)
    class_map = ClassMap.from_labels(data.labels)
    m = prepare(cfg, data, class_map, device)
    total = total_steps(cfg, len(m.latents))
    opt, opt_name = make_optimizer(m, cfg, device)
    sched = get_scheduler(cfg.train.lr_schedule, opt, num_warmup_steps=cfg.train.warmup_steps,
                          num_training_steps=total)
    scaler = torch.amp.GradScaler(device.type, enabled=precision(cfg, device) == "fp16")
    loop = {"step": 0, "elapsed_s": 0.0, "history": []}
    if resume and checkpoint.latest(ckpt_root) is not None:
        loop = _resume(ckpt_root, cfg, data, m, opt, sched, scaler)
    m.unet.train()
    m.text_encoder.train()
    bar = tqdm(total=total, initial=loop["step"], desc="sd15 lora", unit="step", disable=not progress,
               dynamic_ncols=True)
    t0 = time.perf_counter() - loop["elapsed_s"]
    while loop["step"] < total:
        step = loop["step"]
        loss = loss_of(m, batch_indices(step, len(m.latents), cfg), step, cfg, device)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(list(m.params.values()), cfg.train.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loop["step"] = step + 1
        loop["elapsed_s"] = time.perf_counter() - t0
        loop["history"].append({"step": step + 1, "loss": float(loss.detach())})
        bar.update(1)
        bar.set_postfix(loss=f"{loop['history'][-1]['loss']:.4f}")
        if loop["step"] % cfg.train.checkpoint_every == 0 or loop["step"] == total:
            _save(ckpt_root, cfg, data, loop, m, opt, sched, scaler)
    bar.close()
    training = {"steps": loop["step"], "elapsed_s": round(loop["elapsed_s"], 1), "optimizer": opt_name,
                "precision": precision(cfg, device), "device": str(device), "images": len(m.latents),
                "lora_parameters": int(sum(p.numel() for p in m.params.values())),
                "final_loss": loop["history"][-1]["loss"] if loop["history"] else None}
    if device.type == "cuda":
        training["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    write_model_folder(stage, cfg, data, class_map, m.unet, m.text_encoder, training, loop["history"])
    if remote:
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            storage.put(path, storage.join(out, path.relative_to(stage).as_posix()))
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _save(root: str, cfg: Sd15Config, data: TrainingData, loop: dict, m: Models, opt: Any, sched: Any,
          scaler: Any) -> None:
    meta = {"backend": cfg.backend, "config": cfg.to_dict(), "loop": loop, "data_fingerprint": data.fingerprint,
            "lr_scheduler": sched.state_dict()}
    state = {"optimizer": opt.state_dict(), "scaler": scaler.state_dict()}
    checkpoint.save(root, loop["step"], meta, {n: p.detach() for n, p in m.params.items()}, {}, state,
                    keep=cfg.train.keep_checkpoints)


def _resume(root: str, cfg: Sd15Config, data: TrainingData, m: Models, opt: Any, sched: Any,
            scaler: Any) -> dict:
    ck = checkpoint.load(root)
    saved = Sd15Config.from_dict(ck.meta["config"])
    same_train = replace(saved.train, steps=cfg.train.steps, checkpoint_every=cfg.train.checkpoint_every,
                         keep_checkpoints=cfg.train.keep_checkpoints, cpu_threads=cfg.train.cpu_threads)
    if (saved.lora, same_train) != (cfg.lora, cfg.train) or saved.weights.base != cfg.weights.base:
        raise ConfigError(f"checkpoint {ck.name} was trained with another sd15 config (preset {saved.preset}, "
                          f"weights {saved.weights.base}); resume with the same settings")
    if ck.meta.get("data_fingerprint") != data.fingerprint:
        raise ConfigError(f"checkpoint {ck.name} was trained on other data (fingerprint differs)")
    if set(ck.model) != set(m.params):
        raise ConfigError(f"checkpoint {ck.name} holds other LoRA tensors than this model")
    with torch.no_grad():
        for n, p in m.params.items():
            p.copy_(ck.model[n])
    opt.load_state_dict(ck.optimizer["optimizer"])
    scaler.load_state_dict(ck.optimizer["scaler"])
    sched.load_state_dict(ck.meta["lr_scheduler"])
    checkpoint.set_rng_state(ck.rng)
    return ck.meta["loop"]
