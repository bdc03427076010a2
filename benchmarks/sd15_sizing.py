"""GPU sizing of the ``sd15`` backend: the full-size Stable Diffusion 1.5 architecture with RANDOM weights.

Builds SD 1.5's UNet (860M), VAE, CLIP ViT-L text encoder and a ControlNet (``from_unet``) from the configs
below (no download), saves them as a diffusers folder, then runs netdiff's own sd15 code: N LoRA training
steps at 816x768, batch 1, with the seed's settings (rank 128, fp16, gradient checkpointing, AdamW8bit when
bitsandbytes is installed) on the bundled sample captures, and M generations (20 Euler-a steps, CFG 7,
ControlNet canny) at each batch size. Prints one JSON object: steps/s, s/image, peak GPU memory.
Quality needs the real weights and is not measured.

Needs: torch, diffusers, accelerate, safetensors (the GPU image) plus the wheels of ``netdiff[sd15]``:
``peft``, ``transformers`` (<= 5.23 with peft 0.21) and ``tokenizers``, ``opencv-python-headless`` (canny).
It says which are missing. Run from the repository root:

    python benchmarks/sd15_sizing.py --steps 20 --images 8 --batch 1 8      # GPU, full size
    python benchmarks/sd15_sizing.py --tiny                                  # CPU check, tiny models
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

NEEDS = {"torch": "torch==2.13.0", "diffusers": "diffusers", "accelerate": "accelerate", "peft": "peft",
         "transformers": "transformers<=5.23", "tokenizers": "tokenizers", "cv2": "opencv-python-headless",
         "safetensors": "safetensors"}

UNET = {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
       "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
       "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.18215}
CLIP = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu"}


def missing() -> list[str]:
    return [pip for mod, pip in NEEDS.items() if importlib.util.find_spec(mod) is None]


def build_full(out: Path) -> tuple[Path, Path]:
    """SD 1.5-sized random models as a diffusers folder and a ControlNet folder."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from netdiff_lib.models.sd15.tiny import write_tokenizer

    torch.manual_seed(0)
    tok = CLIPTokenizer.from_pretrained(str(write_tokenizer(out / "tokenizer-src")), model_max_length=77)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, **CLIP))
    unet, vae = UNet2DConditionModel(**UNET), AutoencoderKL(**VAE)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, steps_offset=1)
    StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=te, tokenizer=tok, scheduler=sched, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(out / "sd15")
    ControlNetModel.from_unet(unet).save_pretrained(out / "controlnet")
    return out / "sd15", out / "controlnet"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny random models at 64x64 (CPU check)")
    p.add_argument("--steps", type=int, default=20, help="LoRA training steps (default 20)")
    p.add_argument("--images", type=int, default=8, help="images generated per batch size (default 8)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="generation batch sizes (default 1 8)")
    p.add_argument("--data", default="samples/captures", help="labelled captures (default samples/captures)")
    args = p.parse_args(argv)
    if missing():
        print(f"missing packages: pip install {' '.join(missing())}", file=sys.stderr)
        return 2
    import torch

    from netdiff_lib.encoded import from_captures
    from netdiff_lib.models import get_backend
    from netdiff_lib.models.base import Sampling

    cuda = torch.cuda.is_available()
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "tiny": args.tiny}
    with tempfile.TemporaryDirectory(prefix="netdiff-sd15-sizing-") as tmp:
        t0 = time.perf_counter()
        if args.tiny:
            from netdiff_lib.models.sd15.tiny import build_tiny

            sd, cn = build_tiny(Path(tmp))
        else:
            sd, cn = build_full(Path(tmp))
        result["build_s"] = round(time.perf_counter() - t0, 1)
        backend = get_backend("sd15")
        cfg = backend.config("tiny" if args.tiny else "base", steps=args.steps,
                             weights={"base": str(sd), "controlnet": str(cn)},
                             settings=["train.checkpoint_every=1000000"])
        data = from_captures(args.data, 1024)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        backend.train(data, f"{tmp}/model", cfg, progress=False)
        card = json.loads(Path(tmp, "model", "model_card.json").read_text())["training"]
        result["train"] = {"steps": card["steps"], "elapsed_s": card["elapsed_s"],
                           "steps_per_s": round(card["steps"] / max(card["elapsed_s"], 1e-9), 3),
                           "resolution": f"{cfg.train.width}x{cfg.train.height}", "optimizer": card["optimizer"],
                           "precision": card["precision"], "lora_parameters": card["lora_parameters"],
                           "peak_gpu_memory_gib": card.get("peak_gpu_memory_gib")}
        gen = backend.load(f"{tmp}/model", device="cuda" if cuda else "cpu")
        result["generate"] = []
        for b in args.batch:
            gen.cfg = replace(gen.cfg, generate=replace(gen.cfg.generate, batch_size=b))
            gen.generate({gen.labels[0]: b}, Sampling(progress=False))  # warm-up
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            gen.generate({gen.labels[0]: args.images}, Sampling(progress=False))
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            result["generate"].append({
                "batch": b, "images": args.images, "s_per_image": round(dt / args.images, 3),
                "images_per_s": round(args.images / dt, 3), "steps": gen.cfg.generate.steps,
                "resolution": f"{gen.cfg.generate.width}x{gen.cfg.generate.height} -> 1088x1024",
                "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None})
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
