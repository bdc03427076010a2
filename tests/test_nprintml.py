"""nprintML 1.1.2, unchanged, runs its whole pipeline (Net, Label, Learn) with `netdiff nprint` as its
`nprint` and exits 0: every nPrint file it saves is byte-identical to nPrint 1.2.1's (fingerprints of the
project's own captures in tests/data), and AutoGluon trains models on the features and nprintML writes its
leaderboard, statistics report and graphs.

All 50 captures (10 a class; fewer leave AutoGluon too few rows a class) with `--compress`; `--limit 300`
covers AutoGluon's feature preprocessing of the ~23,600 remaining columns (~110-140 s on a busy 2-CPU machine,
counted against the limit) and leaves time for its first models; ~5 minutes in all.

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
    report = nprintml.run(script, tmp_path, captures=10, limit=300)
    assert report["captures"] == 50 and report["nprint_files"] == 50, report
    assert report["identical"] == 50 and not report["differ"], report
    assert report["features_written"], report  # the Label step read every file netdiff wrote
    assert report["nprintml_status"] == 0, (report, (tmp_path / "nprintml.log").read_text()[-4000:])
    assert "WeightedEnsemble_L2" in report["models"] and len(report["models"]) >= 2, report  # Learn: models
    assert report["leaderboard"] and report["stat_report"], report  # scored on the held-out test rows
    assert report["graphs"] == ["cfmx.pdf", "pr.pdf", "roc.pdf"], report
    assert set(report["timing_s"]) >= {"net", "label", "learn", "total"}, report  # meta.toml written at the end
