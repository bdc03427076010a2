"""``netdiff decode``: nPrint matrices (array files, nPrint CSV, PNG) -> pcaps, like ``nprint -N``.

This is the codec's inverse: header bytes exactly as encoded, zero payload, addresses as encoded (zeros
where the layout has none, as in NetDiffusion images).  For generated data use ``netdiff reconstruct``,
which also repairs fields so that every packet is valid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from netdiff_lib.cli._batch import Summary, add_common, finish, run_files
from netdiff_lib.image import SNAP_RULES, used_rows
from netdiff_lib.inputs import CSV_SUFFIXES, MATRIX_SUFFIXES, expand, load_trace_any
from netdiff_lib.nprint.decode import write_trace_pcap

NAME = "decode"
HELP = "nPrint matrices (.npz, nPrint CSV, PNG) -> pcaps (no repair; see reconstruct)"
ORDER = 12


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help=".npz array files, nPrint CSV, PNG images, or folders")
    add_common(p)
    p.add_argument("--snap", choices=SNAP_RULES, default="nearest", help="colour snapping for images")


def run(args: argparse.Namespace) -> int:
    files = expand(args.inputs, MATRIX_SUFFIXES)

    def work(path: Path, summary: Summary) -> None:
        trace = load_trace_any(path, None, snap=args.snap)
        if path.suffix.lower() in CSV_SUFFIXES:  # padding rows, as images have them trimmed
            trace = trace.head(used_rows(trace.matrix))
        summary.packets += write_trace_pcap(args.out / f"{path.stem}.pcap", trace)

    return finish(run_files(files, work, args, "decode"))

