"""``netdiff validate``: are these pcaps protocol-correct?  Exit status 1 when any packet fails.

Per file: packets, malformed packets, packets with expert errors, packets with bad checksums (headers), and
packets whose application layer is malformed (tshark with checksum validation when installed, the built-in
validator otherwise, which judges headers only); see :mod:`netdiff_lib.validate` for what counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from netdiff_lib.atomic import atomic_open
from netdiff_lib.inputs import CAPTURE_SUFFIXES, expand
from netdiff_lib.validate import SCOPES, validate_pcap

NAME = "validate"
HELP = "check pcaps: malformed packets, expert errors, bad checksums (tshark, else built-in)"
ORDER = 14
TOOLS = ("auto", "tshark", "builtin")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pcaps", nargs="+", type=Path, help="pcap/pcapng files or folders")
    p.add_argument("--tool", choices=TOOLS, default="auto", help="validator (default: tshark when installed)")
    p.add_argument("--scope", choices=SCOPES, default="layers",
                   help="layers: headers and application layers reported apart (default); headers: payloads as raw "
                        "data; full: every dissector runs")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the per-file reports as JSON")
    p.add_argument("--problems", type=int, default=5, metavar="N", help="print up to N problems per file")


def run(args: argparse.Namespace) -> int:
    files = expand(args.pcaps, CAPTURE_SUFFIXES)
    reports = []
    for path in files:
        rep = validate_pcap(path, args.tool, args.scope)
        reports.append(rep)
        print(rep.summary())
        for prob in rep.problems[:args.problems]:
            print(f"  frame {prob.frame}: {prob.kind}: {prob.detail}")
    bad = sum(not r.ok for r in reports)
    if len(reports) > 1:
        print(f"{len(reports)} files, {bad} failed, {sum(r.packets for r in reports)} packets, "
              f"{sum(r.failed for r in reports)} failed packets")
    if args.json is not None:
        with atomic_open(args.json, "w") as fh:
            json.dump([dataclasses.asdict(r) for r in reports], fh, indent=1)
    return 1 if bad else 0
