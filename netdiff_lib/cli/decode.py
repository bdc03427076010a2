"""``netdiff decode``: nPrint matrices (array files, nPrint CSV, PNG) -> pcaps, like ``nprint -N``.

This is the codec's inverse: header bytes exactly as encoded, zero payload, addresses as encoded (zeros
where the layout has none, as in NetDiffusion images).  For generated data use ``netdiff reconstruct``,
which also repairs fields so that every packet is valid.  Padding rows (by reconstruction's rule,
:func:`netdiff_lib.repair.protocols.packet_rows`) and rows without a whole IP header become no packet and are
counted; an input with no packet is "nothing to write".  Array files are streamed (bounded memory).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from netdiff_lib.cli._batch import Summary, add_common, finish, run_files
from netdiff_lib.image import SNAP_RULES
from netdiff_lib.inputs import MATRIX_SUFFIXES, expand, trace_chunks
from netdiff_lib.nprint.decode import decode_to_pcap
from netdiff_lib.repair.protocols import packet_rows

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
        done = decode_to_pcap(args.out / f"{path.stem}.pcap", trace_chunks(path, args.snap), path, packet_rows)
        summary.packets += done.packets
        summary.skipped += Counter({"padding rows": done.padding, "rows without a whole IP header": done.no_header})

    return finish(run_files(files, work, args, "decode"))

