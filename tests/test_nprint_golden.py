"""`netdiff nprint` reproduces the reference nPrint 1.2.1 output byte for byte.

Two sets of golden cases:
- ``tests/data/nprint-samples-cases.tsv`` (committed, so parity is checked on a plain clone): for every bundled
  sample capture and five flag sets, the row count and SHA-256 of nPrint 1.2.1's standard output (copied from
  ``../shared/golden/nprint-samples/cases.tsv``; re-recording a sample invalidates its rows).
- ``../shared/golden/nprint`` (third-party and crafted captures with nPrint's full output: radiotap, out-of-order
  timestamps, IoT devices, pcapng); skipped where that folder is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from netdiff_lib.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CASES = REPO / "tests" / "data" / "nprint-samples-cases.tsv"
SHARED = Path(os.environ.get("NETDIFF_SHARED") or REPO.parent / "shared")
GOLDEN = SHARED / "golden" / "nprint"


def _rows(table: Path) -> list[list[str]]:
    return [line.split("\t") for line in table.read_text().splitlines()[1:] if line.strip()]


def _cases() -> list:
    table = GOLDEN / "cases.tsv"
    if not table.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"golden cases not available at {GOLDEN}"))]
    return [pytest.param(r, id=f"{Path(r[0]).stem}[{r[1]}]") for r in _rows(table)]


def _sample_cases() -> list:
    return [pytest.param(r, id=f"{Path(r[0]).stem}[{r[1]}]") for r in _rows(SAMPLE_CASES)]


def test_sample_table_covers_every_bundled_capture() -> None:
    listed = {r[0] for r in _rows(SAMPLE_CASES)}
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / "samples" / "captures").glob("*/*.pcap")}
    assert listed == on_disk and len(on_disk) == 50


@pytest.mark.parametrize("case", _sample_cases())
def test_sample_capture_matches_nprint_fingerprint(case: list[str], tmp_path: Path) -> None:
    pcap, flags, rows, sha = case
    out = tmp_path / "out.nprint"
    assert main(["nprint", "-P", str(REPO / pcap), *shlex.split(flags), "-W", str(out)]) == 0
    got = out.read_bytes()
    assert got.count(b"\n") - 1 == int(rows)
    assert hashlib.sha256(got).hexdigest() == sha


@pytest.mark.parametrize("case", _cases())
def test_golden_case_byte_identical(case: list[str], tmp_path: Path) -> None:
    pcap, flags, expected, rows, sha = case
    out = tmp_path / "out.nprint"
    assert main(["nprint", "-P", str(GOLDEN / pcap), *shlex.split(flags), "-W", str(out)]) == 0
    got = out.read_bytes()
    want = gzip.decompress((GOLDEN / expected).read_bytes())
    assert hashlib.sha256(want).hexdigest() == sha  # the golden file itself is intact
    assert got.count(b"\n") - 1 == int(rows)
    assert got == want


def test_stdout_is_the_default_destination() -> None:
    pcap, flags, _count, sha = _rows(SAMPLE_CASES)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "netdiff_lib.cli", "nprint", "-P", str(REPO / pcap), *shlex.split(flags)],
        capture_output=True, check=True,
    )
    assert hashlib.sha256(proc.stdout).hexdigest() == sha
