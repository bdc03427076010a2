"""``netdiff nprint``: the nPrint 1.2.1 command line, flag for flag (see netdiff_lib.nprint.compat)."""

from __future__ import annotations

import argparse
import sys

from netdiff_lib.nprint.compat import NprintJob, run_job
from netdiff_lib.nprint.csvio import CsvOptions
from netdiff_lib.schema import BLOCK_FLAGS, BLOCKS

NAME = "nprint"
HELP = "drop-in for the nPrint binary (same flags, same bytes)"
DESCRIPTION = (
    "Reads a pcap (-P) and writes nPrint CSV exactly as nPrint 1.2.1 does, to stdout or -W FILE; "
    "-N FILE -W OUT.pcap converts nPrint CSV back to a pcap. --netdiff uses netdiff's corrected parsing."
)
ORDER = 40
ADD_HELP = False
_VALUED = ("-F", "-p", "-c", "-O")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-P", dest="pcap", metavar="FILE", help="pcap or pcapng input")
    p.add_argument("-N", dest="nprint_in", metavar="FILE", help="nPrint CSV to turn back into a pcap (needs -W)")
    p.add_argument("-W", dest="out", metavar="FILE", help="output file (default: stdout)")
    for block, letter in BLOCK_FLAGS.items():
        p.add_argument(f"-{letter}", dest=f"b_{block}", action="store_true", help=f"include the {block} header")
    p.add_argument("-p", dest="payload", type=int, default=0, metavar="N", help="include N payload bytes")
    p.add_argument("-c", dest="count", type=int, default=0, metavar="N", help="stop after N packets")
    p.add_argument("-F", dest="fill", type=int, default=-1, metavar="N", help="fill value for absent bits (int8)")
    p.add_argument("-R", dest="relative", action="store_true", help="relative timestamp column (µs since previous)")
    p.add_argument("-A", dest="absolute", action="store_true", help="absolute timestamp columns tv_sec,tv_usec")
    p.add_argument("-O", dest="index", type=int, default=0, metavar="N", help="index column: 0 src_ip .. 4 flow")
    p.add_argument("-S", dest="stats", action="store_true", help="print statistics to stderr")
    p.add_argument("--netdiff", action="store_true", help="netdiff's corrected parsing instead of nPrint's quirks")
    p.add_argument("-h", "--help", action="store_true", help="show this help and the field list")


def normalise_argv(argv: list[str]) -> list[str]:
    """Glue ``-F -1`` into ``-F-1``: the ``-4``/``-6`` flags make argparse read ``-1`` as an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _VALUED and i + 1 < len(argv):
            out.append(argv[i] + argv[i + 1])
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def run(args: argparse.Namespace) -> int:
    if args.help:
        print(DESCRIPTION)
        for block in BLOCKS.values():
            fields = ", ".join(f"{f.name} ({f.bits})" for f in block.fields)
            print(f"-{BLOCK_FLAGS[block.name]} {block.name}: {fields}")
        return 0
    if not -128 <= args.fill <= 127:
        print(f"netdiff nprint: -F {args.fill} does not fit int8", file=sys.stderr)
        return 2
    job = NprintJob(
        pcap=args.pcap, nprint_in=args.nprint_in, out=args.out,
        blocks=tuple(b for b in BLOCK_FLAGS if getattr(args, f"b_{b}")), payload=args.payload,
        count=args.count or None, fill=args.fill,
        csv=CsvOptions(index=args.index, relative=args.relative, absolute=args.absolute),
        mode="netdiff" if args.netdiff else "nprint", stats=args.stats,
    )
    return run_job(job)
