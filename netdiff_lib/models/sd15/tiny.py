"""Tiny, randomly initialised Stable Diffusion 1.5-layout models for tests and demos (no download).

:func:`build_tiny` writes a diffusers pipeline folder (UNet2DConditionModel, a 4-level AutoencoderKL so the
VAE scale is 8 as in SD 1.5, CLIPTextModel, a CLIPTokenizer from a locally written byte-level vocabulary, the
SD 1.5 noise schedule) and a ControlNet made from the UNet (``ControlNetModel.from_unet``). About 8 MB;
64x64 images generate in well under a second on one CPU thread. The weights are random: what they generate
is noise, which is what the tests need (every code path of the real models, none of their quality).
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable character map (what CLIP's BPE works on)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(folder: Path) -> Path:
    """A CLIP byte-level BPE tokenizer (``vocab.json``, ``merges.txt``): every byte, alone and word-final, a
    few merges, the two special tokens. Any text tokenizes."""
    chars = _bytes_to_unicode()
    merges = [("p", "i"), ("pi", "x"), ("t", "y"), ("ty", "p"), ("typ", "e</w>"), ("d", "a"), ("n", "e")]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + list(SPECIAL)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder


def build_tiny(out: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``out/sd-tiny`` (diffusers pipeline) and ``out/controlnet-tiny``; returns both folders."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tokenizer(out / "tokenizer-src")), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 32, 32), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=64, scaling_factor=0.18215)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, steps_offset=1,
                              prediction_type="epsilon")
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out / "sd-tiny")
    ControlNetModel.from_unet(unet).save_pretrained(out / "controlnet-tiny")
    return out / "sd-tiny", out / "controlnet-tiny"
