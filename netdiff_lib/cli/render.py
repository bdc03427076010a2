"""``netdiff render``: traces (captures, array files, nPrint CSV) -> NetDiffusion PNG images."""

from __future__ import annotations

import argparse
from pathlib import Path

from netdiff_lib.cli._batch import Summary, add_common, finish, run_files
from netdiff_lib.cli.encode import add_mode
from netdiff_lib.errors import InputError
from netdiff_lib.image import save_image
from netdiff_lib.inputs import ARRAY_SUFFIXES, CAPTURE_SUFFIXES, CSV_SUFFIXES, expand, load_trace_any
from netdiff_lib.nprint.decode import nothing_to_write
from netdiff_lib.schema import MAX_PACKETS, NETDIFFUSION

NAME = "render"
HELP = "traces -> NetDiffusion images (1088x1024 RGBA PNG)"
ORDER = 11


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="captures, .npz array files, nPrint CSV, or folders")
    add_common(p)
    add_mode(p)


def run(args: argparse.Namespace) -> int:
    files = expand(args.inputs, CAPTURE_SUFFIXES + ARRAY_SUFFIXES + CSV_SUFFIXES)

    def work(path: Path, summary: Summary) -> None:
        trace = load_trace_any(path, NETDIFFUSION, max_packets=MAX_PACKETS, capture_mode=args.mode)
        if not (trace.matrix != -1).any():  # no rows, or padding only: the image would be all padding
            raise InputError(path, nothing_to_write(len(trace), len(trace)))
        save_image(args.out / f"{path.stem}.png", trace.matrix)
        summary.packets += len(trace)

    return finish(run_files(files, work, args, "render"))
