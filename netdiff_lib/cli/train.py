"""``netdiff train``: train a generator (backend ``native`` by default) on labelled captures.

For several GPUs run the same flags through ``accelerate launch -m netdiff_lib.train``.
"""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a generator on labelled captures (<label>/*.pcap) into a model folder"
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdiff_lib.config import add_train_arguments as train_arguments

    train_arguments(p)
    p.add_argument("--backend", default="native", help="generator backend (default: native)")


def run(args: argparse.Namespace) -> int:
    from netdiff_lib.config import config_from_args
    from netdiff_lib.destination import check_output_dir
    from netdiff_lib.models import get_backend

    check_output_dir(args.out, "model folder")  # before the captures are encoded and the model trained
    backend = get_backend(args.backend)
    cfg = config_from_args(args) if backend.name == "native" else args.config
    out = backend.train(args.data, args.out, cfg, resume=args.resume, workers=args.workers,
                        progress=not args.no_progress)
    print(f"model written to {out}")
    return 0
