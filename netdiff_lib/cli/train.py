"""``netdiff train``: train a generator (backend ``native`` by default) on labelled captures.

The captures are encoded once (first ``--max-packets`` packets each) and handed to the backend as
:class:`~netdiff_lib.models.base.TrainingData`; its config comes from ``backend.config(preset, ...)``.
"""

from __future__ import annotations

import argparse
import os

NAME = "train"
HELP = "train a generator on labelled captures (<label>/*.pcap) into a model folder"
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdiff_lib.config import PRESETS
    from netdiff_lib.schema import MAX_PACKETS

    p.add_argument("--data", required=True, help="folder (or s3:// prefix) of <label>/*.pcap captures")
    p.add_argument("--out", required=True, help="model folder to write (local or s3://)")
    p.add_argument("--backend", default="native", help="generator backend (default: native)")
    p.add_argument("--config", default="base", choices=PRESETS, help="the backend's preset (default: base)")
    p.add_argument("--weights", metavar="PATH_OR_URI",
                   help="pretrained weights (sd15: Stable Diffusion 1.5 as a diffusers folder, .safetensors/.ckpt "
                        "file, Hugging Face cache folder or s3:// URI)")
    p.add_argument("--controlnet", metavar="PATH_OR_URI", help="ControlNet weights (sd15: canny), as --weights")
    p.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. model.port_slots=0 (repeatable)")
    p.add_argument("--max-packets", type=int, default=MAX_PACKETS, metavar="N",
                   help=f"packets encoded per capture (default {MAX_PACKETS})")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--workers", type=int, help="processes encoding captures (default: up to 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings(args: argparse.Namespace) -> list[str]:
    """``--set`` values plus the flags that are config values too."""
    extra = [f"train.time_budget_s={args.time_budget}"] if args.time_budget is not None else []
    extra += [f"train.checkpoint_every={args.checkpoint_every}"] if args.checkpoint_every is not None else []
    return [*args.settings, *extra]


def pretrained(args: argparse.Namespace) -> dict[str, str]:
    """``--weights`` / ``--controlnet`` as the backend interface's weights by role."""
    given = {"base": getattr(args, "weights", None), "controlnet": getattr(args, "controlnet", None)}
    return {role: uri for role, uri in given.items() if uri}


def run(args: argparse.Namespace) -> int:
    from netdiff_lib.destination import check_output_dir
    from netdiff_lib.encoded import from_captures
    from netdiff_lib.models import get_backend

    check_output_dir(args.out, "model folder")  # before the captures are encoded and the model trained
    backend = get_backend(args.backend)
    cfg = backend.config(args.config, steps=args.steps, seed=args.seed, settings=settings(args),
                         weights=pretrained(args))
    workers = args.workers or max(1, min(8, os.cpu_count() or 1))
    data = from_captures(args.data, args.max_packets, workers=workers)
    out = backend.train(data, args.out, cfg, resume=args.resume, progress=not args.no_progress)
    print(f"model written to {out}")
    return 0
