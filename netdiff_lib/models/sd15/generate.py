"""Generation as NetDiffusion did it: txt2img with the LoRA, ControlNet canny on a real image of the class.

For every trace: the prompt ``pixelated network data, type-N`` (the class map's caption), 816x768,
Euler-ancestral, 20 steps, CFG 7, clip skip 2, ControlNet canny (100/200) at weight 1.5 over the whole schedule
on one of the class's reference images (``controls/``, in turn), seed ``generate.seed + Sampling.seed + k`` for
the k-th image (A1111 counts seeds up within a batch); then resize to 1088x1024 (A1111's hires fix with upscaler
"None" and denoising 0; ``generate.hires_denoise`` > 0 runs a real img2img pass there), snap every pixel to red /
green / blue (``generate.snap``: NetDiffusion's rule by default, or ``nearest``) and read the nPrint matrix,
without the blue padding rows at the bottom, at most ``generate.max_packets`` rows.

Times: an image carries no time, so both timing modes draw each trace's inter-arrival times from its class's
training gaps (:func:`~netdiff_lib.models.base.empirical_times`): ``generated`` is the same as ``empirical``
for this backend (NetDiffusion itself wrote every timestamp as 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from netdiff_lib.dataset import ClassMap
from netdiff_lib.image import image_to_matrix, used_rows
from netdiff_lib.models.base import GeneratedTrace, Sampling, TraceGenerator, empirical_times
from netdiff_lib.models.sd15 import lora
from netdiff_lib.models.sd15.config import Sd15Config
from netdiff_lib.models.sd15.data import canny, full_size, load_controls
from netdiff_lib.repair.timing import IatModel
from netdiff_lib.schema import NETDIFFUSION, Layout

SCHEDULERS = {"euler_a": "EulerAncestralDiscreteScheduler", "euler": "EulerDiscreteScheduler",
              "ddim": "DDIMScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler"}


class Sd15Generator(TraceGenerator):
    """A trained ``sd15`` model folder, loaded: the LoRA on the base weights, ControlNet, references."""

    def __init__(self, model_dir: Path, cfg: Sd15Config, class_map: ClassMap, controls: dict[str, list[str]],
                 stats: dict[str, Any], device: str = "cpu") -> None:
        self.model_dir, self.cfg, self.class_map, self.device = model_dir, cfg, class_map, torch.device(device)
        self.labels = list(class_map.labels)
        self.controls = load_controls(model_dir, controls)
        self.iat_models = {lab: IatModel.from_dict(d) for lab, d in stats.get("iat_models", {}).items()}
        self._pipe: Any = None

    @property
    def layout(self) -> Layout:
        return NETDIFFUSION

    @property
    def dtype(self) -> torch.dtype:
        if self.device.type != "cuda":
            return torch.float32
        return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[self.cfg.generate.dtype]

    def pipeline(self) -> Any:
        """The ControlNet txt2img pipeline with this folder's LoRA (loaded once)."""
        if self._pipe is not None:
            return self._pipe
        import diffusers
        from diffusers import StableDiffusionControlNetPipeline

        from netdiff_lib.errors import InputError
        from netdiff_lib.models.sd15.weights import load_controlnet, load_pipeline

        base = load_pipeline(self.cfg.weights, self.dtype)
        sched = getattr(diffusers, SCHEDULERS[self.cfg.generate.scheduler]).from_config(base.scheduler.config)
        pipe = StableDiffusionControlNetPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
            controlnet=load_controlnet(self.cfg.weights, self.dtype), scheduler=sched, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.load_lora_weights(str(self.model_dir), weight_name=lora.DIFFUSERS_FILE, adapter_name="netdiff")
        if "netdiff" not in pipe.get_list_adapters().get("unet", []):
            raise InputError(self.model_dir / lora.DIFFUSERS_FILE, "the LoRA loaded no UNet layer")
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        return pipe

    def images(self, jobs: list[tuple[str, int]], sampling: Sampling) -> list[Any]:
        """One 1088x1024 image per ``(label, k)``: ``k`` picks the control image and the seed."""
        from tqdm.auto import tqdm

        g = self.cfg.generate
        pipe, out = self.pipeline(), []
        bar = tqdm(total=len(jobs), desc="sd15 generate", unit="image", disable=not sampling.progress,
                   dynamic_ncols=True)
        for i in range(0, len(jobs), g.batch_size):
            batch = jobs[i : i + g.batch_size]
            refs = [self.controls[lab][k % len(self.controls[lab])] for lab, k in batch]
            kw = {**self.prompt_embeds([self.class_map.caption(lab) for lab, _ in batch]),
                  "num_inference_steps": sampling.steps or g.steps,
                  "guidance_scale": g.guidance if sampling.guidance is None else sampling.guidance,
                  "generator": [torch.Generator().manual_seed(g.seed + sampling.seed + k) for _, k in batch]}
            imgs = pipe(image=[canny(r, g.canny_low, g.canny_high, (g.width, g.height)) for r in refs],
                        height=g.height, width=g.width, controlnet_conditioning_scale=g.controlnet_scale,
                        control_guidance_start=g.control_start, control_guidance_end=g.control_end, **kw).images
            imgs = [full_size(im) for im in imgs]
            if g.hires_denoise > 0:
                imgs = self.hires(imgs, kw)
            out.extend(imgs)
            bar.update(len(batch))
        bar.close()
        return out

    @torch.no_grad()
    def prompt_embeds(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Prompt and (empty) negative prompt embeddings with the model's clip skip, through the LoRA'd text
        encoder (computed here: diffusers' own clip skip reaches for ``text_model``, gone in transformers 5.23)."""
        from netdiff_lib.models.sd15.train import encode_prompt

        pipe = self.pipeline()
        tok = pipe.tokenizer
        ids = tok(captions + [""] * len(captions), padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids.to(self.device)
        emb = encode_prompt(pipe.text_encoder, ids, self.cfg.train.clip_skip).to(self.dtype)
        return {"prompt_embeds": emb[: len(captions)], "negative_prompt_embeds": emb[len(captions):]}

    def hires(self, images: list[Any], kw: dict[str, Any]) -> list[Any]:
        """A real hires pass: img2img at 1088x1024 with strength ``generate.hires_denoise``."""
        from diffusers import StableDiffusionImg2ImgPipeline

        p = self.pipeline()
        img2img = StableDiffusionImg2ImgPipeline(vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer,
                                                 unet=p.unet, scheduler=p.scheduler, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False)
        img2img.set_progress_bar_config(disable=True)
        return img2img(image=images, strength=self.cfg.generate.hires_denoise, **kw).images

    def matrix(self, image: Any) -> np.ndarray:
        """Snap colours, read the nPrint matrix, drop the padding rows, keep ``max_packets`` (at least one)."""
        m = image_to_matrix(image, self.cfg.generate.snap, trim=False)
        return m[: min(max(used_rows(m), 1), self.cfg.generate.max_packets)]

    def generate(self, per_class: int | dict[str, int], sampling: Sampling | None = None) -> list[GeneratedTrace]:
        s = sampling or Sampling()
        counts = per_class if isinstance(per_class, dict) else dict.fromkeys(self.labels, per_class)
        for lab in counts:
            self.class_map.index(lab)  # an unknown label is an error naming the class map
        jobs = [(lab, k) for lab in self.labels for k in range(counts.get(lab, 0))]
        jobs = [(lab, n) for n, (lab, _) in enumerate(jobs)]  # k: the running image number (seed, control)
        traces = []
        for (lab, _), img in zip(jobs, self.images(jobs, s), strict=True):
            m = self.matrix(img)
            traces.append(GeneratedTrace(m, np.zeros(len(m)), lab))
        return empirical_times(traces, self.iat_models, s.seed)
