"""nprintML 1.1.2, unchanged, runs with `netdiff nprint` as its `nprint`: every nPrint file it saves is
byte-identical to nPrint 1.2.1's (fingerprints of the project's own captures in tests/data).

Slow: the first run installs nprintML and its dependencies into a Python 3.8 virtual environment (cached
under ~/.cache/netdiff); skipped where no Python 3.8 exists.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import nprintml

pytestmark = pytest.mark.slow


def test_nprintml_runs_on_netdiff_nprint(tmp_path: Path) -> None:
    python = nprintml.find_python38()
    if python is None:
        pytest.skip("no Python 3.8 (pyenv's 3.8.x, python3.8 on PATH or $NPRINTML_PYTHON): nprintML needs < 3.9")
    try:
        script = nprintml.ensure_venv(python, nprintml.DEFAULT_VENV)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not install nprintML 1.1.2 from PyPI ({exc})")
    report = nprintml.run(script, tmp_path, captures=2, limit=30)
    assert report["captures"] == 10 and report["nprint_files"] == 10, report
    assert report["identical"] == 10 and not report["differ"], report
    assert report["features_written"], report  # the Label step read every file netdiff wrote
