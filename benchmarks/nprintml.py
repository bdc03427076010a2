"""nprintML 1.1.2, unchanged, with ``netdiff nprint`` as the ``nprint`` on its PATH.

Installs nprintML from PyPI into its own Python 3.8 virtual environment (nprintML needs Python < 3.9), puts
a two-line ``nprint`` wrapper around ``python -m netdiff_lib.cli nprint`` first on PATH, runs nprintML on the
project's sample captures with ``--save-nprint`` and compares every nPrint file it saved with nPrint 1.2.1's
fingerprints (``tests/data/nprint-samples-cases.tsv``, flag set ``-4 -t -u -c 50 -O 2``)::

    python3 -m benchmarks.nprintml [--captures N] [--limit SECONDS]

Prints a JSON report: files compared and identical, nprintML's exit status, whether its feature file was
written, and the Net step's time (nprintML's own "nPrint tasks complete" timing).
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


def write_wrapper(folder: Path) -> None:
    """``nprint`` = ``python -m netdiff_lib.cli nprint`` from this checkout."""
    wrapper = folder / "nprint"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m netdiff_lib.cli nprint "$@"\n')
    wrapper.chmod(0o755)


def run(nprintml: Path, work: Path, captures: int, limit: int) -> dict:
    """Run nprintML on the first ``captures`` sample captures of each class; report what it did."""
    (work / "bin").mkdir(parents=True, exist_ok=True)
    write_wrapper(work / "bin")
    samples = REPO / "samples" / "captures"
    pcaps = [p for d in sorted(samples.iterdir()) if d.is_dir() for p in sorted(d.glob("*.pcap"))[:captures]]
    labels = work / "labels.csv"
    labels.write_text("".join(f"{p.relative_to(samples)},{p.parent.name}\n" for p in pcaps))
    out = work / "out"
    env = {**os.environ, "PATH": f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    cmd = [str(nprintml), "-L", str(labels), "-a", "pcap", "--pcap-dir", str(samples), *NPRINTML_ARGS,
           "--save-nprint", "-o", str(out), "--limit", str(limit), "-VVV"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    want = expected_hashes()
    same, differ = [], []
    for npt in sorted((out / "nprint").rglob("*.npt")):
        key = str((samples / npt.relative_to(out / "nprint")).with_suffix(".pcap").relative_to(REPO))
        (same if hashlib.sha256(npt.read_bytes()).hexdigest() == want.get(key) else differ).append(key)
    net = re.search(r"nPrint tasks complete: ([\d.:]+)", proc.stdout)
    return {
        "captures": len(pcaps), "nprint_files": len(same) + len(differ), "identical": len(same), "differ": differ,
        "nprintml_status": proc.returncode, "features_written": any((out / "feature").glob("*")),
        "net_step": net.group(1) if net else None,
        "last_lines": proc.stdout.splitlines()[-3:] + proc.stderr.splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captures", type=int, default=10, help="captures per class (default: all 10)")
    p.add_argument("--limit", type=int, default=300, help="nprintML's --limit for the Learn step (seconds)")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"nprintML's environment (default {DEFAULT_VENV})")
    args = p.parse_args(argv)
    python = find_python38()
    if python is None:
        print("no Python 3.8 found (set NPRINTML_PYTHON); nprintML 1.1.2 needs Python < 3.9", file=sys.stderr)
        return 2
    nprintml = ensure_venv(python, args.venv)
    with tempfile.TemporaryDirectory(prefix="nprintml-") as tmp:
        report = run(nprintml, Path(tmp), args.captures, args.limit)
    print(json.dumps(report, indent=2))
    return 0 if report["identical"] == report["nprint_files"] == report["captures"] else 1


if __name__ == "__main__":
    sys.exit(main())
