"""``netdiff validate``: are these pcaps protocol-correct?  Exit status 1 when any packet fails.

Per file: packets, malformed packets, packets with expert errors, packets with bad checksums (headers), and
packets whose application layer is malformed (tshark with checksum validation when installed, the built-in
validator otherwise, which judges headers only); see :mod:`netdiff_lib.validate` for what counts.

Checksum offload (``--checksums``, default ``offload``): a capture taken on the sending host (loopback, or a card
that computes checksums) holds TCP/UDP checksums that the card fills in later; packets whose only fault is such a
checksum (the field holds the pseudo-header sum the kernel leaves for the card) are reported apart and do not
fail the file.  ``strict`` counts every bad checksum as a failure; ``off`` reports every packet that fails only on
checksums apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap
from pathlib import Path

from netdiff_lib.atomic import atomic_open
from netdiff_lib.inputs import CAPTURE_SUFFIXES, expand
from netdiff_lib.validate import CHECKSUM_POLICIES, SCOPES, FileReport, validate_pcap

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
    p.add_argument("--checksums", choices=CHECKSUM_POLICIES, default="offload",
                   help="offload (default): packets whose only fault is a TCP/UDP checksum left to the network card "
                        "(captured on the sending host) are reported apart, not as failures; strict: every bad "
                        "checksum fails; off: every packet failing only on checksums is reported apart")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the per-file reports as JSON")
    p.add_argument("--problems", type=int, default=5, metavar="N", help="print up to N problems per file")


def _offload_note(reports: list[FileReport], checksums: str) -> str | None:
    """Why packets with bad checksums did or did not count (None when no packet fails only on checksums)."""
    only = sum(r.checksum_only for r in reports)
    apart = sum(r.failed - r.failures(checksums) for r in reports)
    offload = sum(r.offload for r in reports)
    if not only:
        return None
    if checksums == "strict":
        return (f"note: {only} failing packets fail only on checksums, {offload} of them with the checksum left to "
                "the network card (checksum offload: captured on the sending host); --checksums offload reports "
                "those apart instead of as failures.")
    head = (f"note: {apart} packets fail only on TCP/UDP checksums left to the network card: the capture was taken "
            "on the sending host (loopback, or a card with checksum offload), so the card, not the kernel, fills "
            "them in; they are reported apart, not as failures (--checksums strict counts them)."
            if checksums == "offload" else f"note: {apart} packets fail only on checksums (--checksums off).")
    rest = only - apart
    return head + (f" {rest} other packets fail only on checksums that are not offload." if rest else "")


def run(args: argparse.Namespace) -> int:
    files = expand(args.pcaps, CAPTURE_SUFFIXES)
    reports = []
    for path in files:
        rep = validate_pcap(path, args.tool, args.scope)
        reports.append(rep)
        print(rep.summary(args.checksums))
        for prob in rep.problems[:args.problems] if rep.failures(args.checksums) else ():
            print(f"  frame {prob.frame}: {prob.kind}: {prob.detail}")
    bad = sum(not r.passes(args.checksums) for r in reports)
    if len(reports) > 1:
        print(f"{len(reports)} files, {bad} failed, {sum(r.packets for r in reports)} packets, "
              f"{sum(r.failures(args.checksums) for r in reports)} failed packets")
    note = _offload_note(reports, args.checksums)
    if note:
        print(textwrap.fill(note, 110, subsequent_indent="  "))
    if args.json is not None:
        with atomic_open(args.json, "w") as fh:
            json.dump([dataclasses.asdict(r) for r in reports], fh, indent=1)
    return 1 if bad else 0
