"""nprintML 1.1.2, unchanged, with ``netdiff nprint`` as the ``nprint`` on its PATH.

Installs nprintML from PyPI into its own Python 3.8 virtual environment (nprintML needs Python < 3.9), puts
a two-line ``nprint`` wrapper around ``python -m netdiff_lib.cli nprint`` first on PATH, runs the whole
nprintML pipeline (Net, Label, Learn) on the project's sample captures with ``--save-nprint`` and compares
every nPrint file it saved with nPrint 1.2.1's fingerprints (``tests/data/nprint-samples-cases.tsv``, flag set
``-4 -t -u -c 50 -O 2``)::

    python3 -m benchmarks.nprintml [--captures N] [--limit SECONDS] [--seed N] [--nprint PATH] [--verbosity N]

With the real nPrint binary (``--nprint PATH``, ``$NPRINT`` or ``nprint`` on PATH) the same run is repeated
with it as nprintML's ``nprint``, side by side; where there is none, the report says "not measured".

nprintML is run as a small data set calls for: all 50 captures (10 a class: its 30 % test split must hold
every class and AutoGluon drops a class with fewer than 2 training rows), ``--compress`` (nprintML drops the
columns that are the same in every row: AutoGluon's feature preprocessing, which counts against the time
limit, takes ~1 s per 200 columns here) and AutoGluon's models that need no optional library (k-nearest
neighbours, random forests, extra trees; nprintML installs no LightGBM/CatBoost/XGBoost/MXNet/fastai, and
AutoGluon skips those with an ImportError). nprintML splits train and test rows with numpy's unseeded global
generator (``train_test_split`` without ``random_state``, no option for it); with 50 rows about 9 % of
splits leave a class out of the test set and nprintML's ROC AUC then raises, so ``--seed`` (default 3: 2-4
test rows in every class, whatever order the class folders come in, as nprintML keeps rows grouped by
folder) seeds that generator before nprintML's own ``execute()`` runs, unchanged; ``--seed -1`` runs the
``nprintml`` console script as is.

Prints a JSON report: files compared and identical, nprintML's exit status, the models it trained, whether
its feature file, leaderboard, statistics report and graphs were written, and its per-step timings
(``meta.toml``) plus the wall time of the nPrint calls (first wrapper start to last nPrint file written).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "data" / "nprint-samples-cases.tsv"
FLAGS = "-4 -t -u -c 50 -O 2"  # a flag set of the fingerprint table, in nprintML's spelling below
NPRINTML_ARGS = ["-4", "-t", "-u", "-c", "50", "-O", "2"]
LEARN_ARGS = ["--compress"]  # drop constant columns before AutoGluon (see the module's docstring)
SEED = 3  # numpy's global seed for nprintML's train/test split: 2-4 test rows in each class
# nprintML's console script, with numpy's global generator seeded first (nprintML's code unchanged)
LAUNCHER = ("import sys, numpy.random; numpy.random.seed(int(sys.argv.pop(1))); sys.argv[0] = 'nprintml'; "
            "from nprintml.cli import execute; sys.exit(execute())")
PINS = ["cython<3", "numpy==1.19.5", "wheel", "setuptools<70"]  # ConfigSpace 0.4.18 builds only with Cython 2
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "netdiff" / "nprintml-1.1.2"


def find_python38() -> str | None:
    """A Python 3.8: ``$NPRINTML_PYTHON``, ``python3.8`` on PATH, or pyenv's 3.8.x."""
    candidates = [os.environ.get("NPRINTML_PYTHON"), shutil.which("python3.8"),
                  *sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / "3.8*" / "bin" / "python3.8")))]
    for c in candidates:
        if c and subprocess.run([c, "-c", "import venv"], capture_output=True).returncode == 0:
            return c
    return None


def ensure_venv(python: str, venv: Path) -> Path:
    """nprintML 1.1.2 in ``venv`` (created and installed on first use); returns its ``nprintml`` script."""
    script = venv / "bin" / "nprintml"
    if script.exists():
        return script
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--prefer-binary"]
    subprocess.run([*pip, *PINS], check=True)
    subprocess.run([*pip, "--no-build-isolation", "nprintml==1.1.2"], check=True)
    return script


def expected_hashes() -> dict[str, str]:
    rows = [line.split("\t") for line in CASES.read_text().splitlines()[1:] if line.strip()]
    return {pcap: sha for pcap, flags, _rows, sha in rows if flags == FLAGS}


def write_wrapper(folder: Path, log: Path | None = None, binary: str | None = None) -> None:
    """``nprint`` = ``python -m netdiff_lib.cli nprint`` from this checkout, or the real ``binary`` when given
    (``log``: start times, one a line).  netdiff_lib is byte-compiled first, as a pip install does: without
    its bytecode cache (``PYTHONDONTWRITEBYTECODE=1`` and no ``__pycache__``) every call would compile it."""
    wrapper = folder / "nprint"
    stamp = f'date +%s.%N >> "{log}"\n' if log else ""
    if binary:
        run = f'exec "{binary}" "$@"\n'
    else:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "netdiff_lib")], check=True)
        run = f'PYTHONPATH="{REPO}" exec "{sys.executable}" -m netdiff_lib.cli nprint "$@"\n'
    wrapper.write_text(f"#!/bin/sh\n{stamp}{run}")
    wrapper.chmod(0o755)


def read_timing(meta: Path) -> dict[str, float]:
    """Wall seconds per step from nprintML's ``meta.toml`` (``[timing]``: ``Step = [ wall, cpu,]``)."""
    if not meta.exists():
        return {}
    text = meta.read_text()
    section = text[text.index("[timing]"):] if "[timing]" in text else ""
    return {m.group(1): round(float(m.group(2)), 1)
            for m in re.finditer(r"^(\w+) = \[ *([\d.]+),", section, re.MULTILINE)}


def run(nprintml: Path, work: Path, captures: int, limit: int, seed: int | None = SEED,
        binary: str | None = None, verbosity: int = 3) -> dict:
    """Run nprintML on the first ``captures`` sample captures of each class (with the real nprint ``binary``
    when given, else ``netdiff nprint``); report what it did."""
    (work / "bin").mkdir(parents=True, exist_ok=True)
    starts = work / "nprint-starts.txt"
    write_wrapper(work / "bin", starts, binary)
    samples = REPO / "samples" / "captures"
    pcaps = [p for d in sorted(samples.iterdir()) if d.is_dir() for p in sorted(d.glob("*.pcap"))[:captures]]
    labels = work / "labels.csv"
    labels.write_text("".join(f"{p.relative_to(samples)},{p.parent.name}\n" for p in pcaps))
    out = work / "out"
    env = {**os.environ, "PATH": f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    launch = [str(nprintml)] if seed is None else [str(nprintml.parent / "python"), "-c", LAUNCHER, str(seed)]
    cmd = [*launch, "-L", str(labels), "-a", "pcap", "--pcap-dir", str(samples), *NPRINTML_ARGS,
           "--save-nprint", *LEARN_ARGS, "-o", str(out), "--limit", str(limit),
           *(["-" + "V" * verbosity] if verbosity else [])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (work / "nprintml.log").write_text(proc.stdout + proc.stderr)
    want = expected_hashes()
    same, differ = [], []
    npts = sorted((out / "nprint").rglob("*.npt"))
    for npt in npts:
        key = str((samples / npt.relative_to(out / "nprint")).with_suffix(".pcap").relative_to(REPO))
        (same if hashlib.sha256(npt.read_bytes()).hexdigest() == want.get(key) else differ).append(key)
    started = [float(t) for t in starts.read_text().split()] if starts.exists() else []
    model = out / "model"
    return {
        "captures": len(pcaps), "nprint_files": len(same) + len(differ), "identical": len(same), "differ": differ,
        "nprintml_status": proc.returncode, "features_written": any((out / "feature").glob("*")),
        "models": sorted(d.name for d in (model / "models").iterdir() if d.is_dir()) if model.is_dir() else [],
        "leaderboard": (model / "leaderboard.csv").exists(), "stat_report": (model / "stat-report.csv").exists(),
        "graphs": sorted(g.name for g in (model / "graphs").glob("*.pdf")),
        "timing_s": read_timing(out / "meta.toml"),
        "nprint_calls_wall_s": round(max(n.stat().st_mtime for n in npts) - min(started), 1)
        if npts and started else None,
        "last_lines": proc.stdout.splitlines()[-3:] + proc.stderr.splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captures", type=int, default=10, help="captures per class (default: all 10)")
    p.add_argument("--limit", type=int, default=300, help="nprintML's --limit for the Learn step (seconds)")
    p.add_argument("--seed", type=int, default=SEED,
                   help=f"numpy's global seed for nprintML's train/test split (default {SEED}; -1: unseeded)")
    p.add_argument("--nprint", default=os.environ.get("NPRINT") or shutil.which("nprint"),
                   help="the real nprint binary, run the same way after netdiff nprint (default: $NPRINT, else "
                        "nprint on PATH; absent: not measured)")
    p.add_argument("--verbosity", type=int, default=3,
                   help="nprintML's -V count (default 3: -VVV; from 2, -VV, nprintML passes --verbose to nprint, "
                        "whose -V output some nPrint builds mix into the CSV; 1: -V, without it)")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"nprintML's environment (default {DEFAULT_VENV})")
    args = p.parse_args(argv)
    python = find_python38()
    if python is None:
        print("no Python 3.8 found (set NPRINTML_PYTHON); nprintML 1.1.2 needs Python < 3.9", file=sys.stderr)
        return 2
    nprintml = ensure_venv(python, args.venv)
    with tempfile.TemporaryDirectory(prefix="nprintml-") as tmp:
        seed = None if args.seed < 0 else args.seed
        report = run(nprintml, Path(tmp) / "netdiff", args.captures, args.limit, seed, verbosity=args.verbosity)
        report["real_nprint"] = run(nprintml, Path(tmp) / "nprint", args.captures, args.limit, seed, args.nprint,
                                    args.verbosity) \
            if args.nprint else "not found: not measured"
    print(json.dumps(report, indent=2))
    ok = report["identical"] == report["nprint_files"] == report["captures"] and report["nprintml_status"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
