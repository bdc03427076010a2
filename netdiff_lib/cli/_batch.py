"""Shared driver for per-file commands: progress bar, ``--keep-going``, and a summary with skip reasons."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from netdiff_lib.cli._options import add_out, add_quiet
from netdiff_lib.destination import check_output_dir
from netdiff_lib.errors import NetdiffError


@dataclass
class Summary:
    """What a batch command did: files done and failed, packets kept and skipped by reason."""

    files: int = 0
    failed: list[str] = field(default_factory=list)
    packets: int = 0
    skipped: Counter = field(default_factory=Counter)
    outputs: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"files: {self.files} done, {len(self.failed)} failed", f"packets kept: {self.packets}"]
        total = sum(self.skipped.values())
        out.append(f"packets skipped: {total}")
        out += [f"  {reason}: {n}" for reason, n in self.skipped.most_common()]
        out += [f"failed: {f}" for f in self.failed]
        return out


def add_common(p: argparse.ArgumentParser) -> None:
    add_out(p, "output folder", type=Path, metavar="DIR")
    p.add_argument("--keep-going", action="store_true", help="report a bad input file and go on with the rest")
    add_quiet(p, "no progress bar (the summary is still printed)")


def run_files(
    files: list[Path], work: Callable[[Path, Summary], None], args: argparse.Namespace, desc: str
) -> Summary:
    """Run ``work`` on every file; stop at the first error unless ``--keep-going``.  A bad ``--out`` fails
    before the first file."""
    check_output_dir(args.out)
    summary = Summary()
    for path in tqdm(files, desc=desc, unit="file", disable=args.quiet or None, file=sys.stderr):
        try:
            work(path, summary)
            summary.files += 1
        except NetdiffError as exc:
            if not args.keep_going:
                raise
            summary.failed.append(str(exc))
            tqdm.write(f"skipping {exc}", file=sys.stderr)
    return summary


def finish(summary: Summary) -> int:
    """Print the summary (to stderr); exit status 1 when some file failed under ``--keep-going``."""
    for line in summary.lines():
        print(line, file=sys.stderr)
    return 1 if summary.failed else 0
