"""``netdiff split``: deterministic train/test split by capture file, stratified per label."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from netdiff_lib.cli._options import add_out, add_quiet

NAME = "split"
HELP = "split labelled captures into train/test by file (stratified, seeded)"
DESCRIPTION = (
    "Discovers the labelled captures under INPUT (folder or object-store prefix), splits them by file, "
    "stratified per label, deterministically for --seed, and writes OUT/split.json; with --mode link (local "
    "inputs) or copy also OUT/train/<label>/ and OUT/test/<label>/ folders that other stages take as input."
)
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdiff_lib.split import MODES

    p.add_argument("input", metavar="INPUT", help="folder or object-store prefix of labelled captures")
    add_out(p, "output folder", metavar="DIR")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of each label's captures for test")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.add_argument("--mode", choices=MODES, default="link", help="materialise as symlinks, copies, or not at all")
    add_quiet(p, "no summary")


def run(args: argparse.Namespace) -> int:
    from netdiff_lib.dataset import discover
    from netdiff_lib.errors import InputError
    from netdiff_lib.split import split_captures, write_split

    captures = discover(args.input)
    if not captures:
        raise InputError(args.input, "no captures found")
    train, test = split_captures(captures, args.test_fraction, args.seed)
    info = {"input": str(args.input), "test_fraction": args.test_fraction, "seed": args.seed}
    path = write_split(train, test, args.out, args.mode, info)
    if not args.quiet:
        labels = Counter(str(c.label) for c in captures)
        print(f"{len(train)} train / {len(test)} test captures, {len(labels)} labels -> {path}", file=sys.stderr)
    return 0
