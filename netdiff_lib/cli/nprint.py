"""``netdiff nprint``: the nPrint 1.2.1 command line, option for option (see netdiff_lib.nprint.options).

``netdiff nprint ARGS`` behaves as ``nprint ARGS``: the same short and long options, texts and exit codes.
``--netdiff`` (netdiff's own option) switches to netdiff's corrected parsing.  The command line module
imports only the codec, so start-up stays short (clients such as nprintML run one process per capture).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from netdiff_lib.nprint import helptext
from netdiff_lib.nprint.options import VERSION, atoi, int8, parse, usage_error
from netdiff_lib.schema import BLOCK_FLAGS

if TYPE_CHECKING:
    import argparse

NAME = "nprint"
HELP = "drop-in for the nPrint binary (same options, same bytes; netdiff nprint --help)"
DESCRIPTION = "nPrint 1.2.1's command line: netdiff nprint --help lists its options."
ORDER = 40
ADD_HELP = False
NETDIFF_FLAG = "--netdiff"
_BLOCK_OF_FLAG = {letter: block for block, letter in BLOCK_FLAGS.items()}
_EXITS: dict[str, tuple[str, int]] = {
    "h": (helptext.FILTER_HELP, 0), "?": (helptext.HELP, 0), "usage": (helptext.USAGE, 0),
    "version": (VERSION + "\n", 0),
}
_SETTERS: dict[str, Callable[[dict, str], None]] = {
    "d": lambda o, v: o.update(device=v), "f": lambda o, v: o.update(bpf=v),
    "c": lambda o, v: o.update(count=atoi(v) % (1 << 64)), "P": lambda o, v: o.update(pcap=v),
    "N": lambda o, v: o.update(nprint_in=v), "C": lambda o, v: o.update(csv_in=v),
    "W": lambda o, v: o.update(out=v), "x": lambda o, v: o.update(regex=v), "I": lambda o, v: o.update(ip_file=v),
    "F": lambda o, v: o.update(fill=int8(atoi(v))), "p": lambda o, v: o.update(payload=atoi(v)),
    "S": lambda o, v: o.update(stats=True), "V": lambda o, v: o.update(verbose=True),
    "R": lambda o, v: o.update(relative=True), "A": lambda o, v: o.update(absolute=True),
    "program-name": lambda o, v: None,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="...", help="nPrint's options (netdiff nprint --help)")  # "...": REMAINDER


def run(args: argparse.Namespace) -> int:
    return main(args.args)


def _options(argv: list[str]) -> dict | int:
    """nPrint's options as job settings, or the exit status when parsing ends the run (help, errors)."""
    opts: dict = {"blocks": [], "index": 0}
    parsed = parse(argv)
    for key, value in parsed.items:
        if key in _EXITS:
            text, status = _EXITS[key]
            sys.stdout.write(text)
            return status
        if key == "O":
            opts["index"] = atoi(value or "")
            if not 0 <= opts["index"] <= 5:
                sys.stderr.write("invald index configuration, exiting\n")
                return 3
        elif key in _BLOCK_OF_FLAG:
            opts["blocks"].append(_BLOCK_OF_FLAG[key])
        else:
            _SETTERS[key](opts, value or "")
    if parsed.error:
        sys.stderr.write(usage_error(parsed.error))
        return 64
    return opts


def main(argv: list[str]) -> int:
    """Run ``nprint ARGV``; returns nPrint's exit status."""
    from netdiff_lib.errors import NetdiffError

    mode = "netdiff" if NETDIFF_FLAG in argv else "nprint"
    opts = _options([a for a in argv if a != NETDIFF_FLAG])
    if isinstance(opts, int):
        return opts
    if opts.get("payload", 0) < 0:
        sys.stderr.write(f"netdiff nprint: -p {opts['payload']}: a payload size cannot be negative\n")
        return 1
    from netdiff_lib.nprint.compat import NprintJob, run_job
    from netdiff_lib.nprint.csvio import CsvOptions

    csv = CsvOptions(index=opts.pop("index"), relative=opts.pop("relative", False),
                     absolute=opts.pop("absolute", False))
    count = opts.pop("count", 0) or None
    job = NprintJob(blocks=tuple(opts.pop("blocks")), csv=csv, count=count, mode=mode, **opts)
    try:
        return run_job(job)
    except NetdiffError as exc:
        sys.stderr.write(f"nprint: {exc}\n")
        return 2
    except BrokenPipeError:
        return 0
