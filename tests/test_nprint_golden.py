"""`netdiff nprint` reproduces the reference nPrint 1.2.1 output byte for byte (golden cases in ../shared)."""

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

SHARED = Path(os.environ.get("NETDIFF_SHARED") or Path(__file__).resolve().parents[2] / "shared")
GOLDEN = SHARED / "golden" / "nprint"


def _cases() -> list:
    table = GOLDEN / "cases.tsv"
    if not table.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"golden cases not available at {GOLDEN}"))]
    rows = [line.split("\t") for line in table.read_text().splitlines()[1:] if line.strip()]
    return [pytest.param(r, id=f"{Path(r[0]).stem}[{r[1]}]") for r in rows]


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
    table = GOLDEN / "cases.tsv"
    if not table.is_file():
        pytest.skip("golden cases not available")
    pcap, flags, expected, _rows, _sha = table.read_text().splitlines()[1].split("\t")
    proc = subprocess.run(
        [sys.executable, "-m", "netdiff_lib.cli", "nprint", "-P", str(GOLDEN / pcap), *shlex.split(flags)],
        capture_output=True, check=True,
    )
    assert proc.stdout == gzip.decompress((GOLDEN / expected).read_bytes())
