"""Start-up: wall time of ``netdiff nprint`` on a small capture (~600 packets) against baselines of the same run.

nPrint 1.2.1 takes about 0.1 s on a 600-packet capture (issue 11; the binary is not installed here), so the
goal is ``netdiff nprint`` within 3x of that: 0.3 s.  A Python process cannot start faster than the
interpreter and numpy, so those are measured in the same run as baselines, with ``tcpdump -r`` of the same
capture (a C program reading it, like nPrint):

- ``python -c pass`` and ``python -c "import numpy"`` (the floor for any numpy command),
- ``tcpdump -r CAPTURE -nn`` (to /dev/null),
- ``python -m netdiff_lib.cli nprint -P CAPTURE -4 -t -u -i`` (and ``-R``, ``--version``), ``netdiff --help``,
- the ``netdiff`` console script beside the interpreter, when installed there (a virtual environment's).

The capture is built from the bundled samples (``samples/captures``: the packets of the sample captures in
order, re-timed one after the other) so the benchmark runs on a clone.  Each command runs ``--runs`` times in
a fresh process, stdout to /dev/null, with Python's bytecode cache (as installed code runs:
``PYTHONDONTWRITEBYTECODE`` is dropped, the warm-up run writes the cache); the table gives the best and the
median.  ``-X importtime`` of the
nprint command then says where its start-up goes (numpy, netdiff_lib, the standard library, ``site``)::

    python3 -m benchmarks.startup [--packets 600] [--runs 15] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NPRINT_WALL_S = 0.1  # nPrint 1.2.1 on a 600-packet capture (issue 11)


def build_capture(path: Path, packets: int) -> int:
    """Write ``packets`` packets of the sample captures (in file order, re-timed 1 ms apart) to ``path``."""
    sys.path.insert(0, str(REPO))
    from netdiff_lib.pcap import PcapFile, PcapWriter

    written = 0
    with PcapWriter(path) as out:
        for pcap in sorted((REPO / "samples" / "captures").glob("*/*.pcap")):
            for batch in PcapFile(pcap).batches():
                for i in range(len(batch.offsets)):
                    if written == packets:
                        return written
                    start, caplen = int(batch.offsets[i]), int(batch.caplen[i])
                    out.write(bytes(batch.data[start:start + caplen]), 1_700_000_000_000_000_000 + written * 10**6,
                              int(batch.wirelen[i]))
                    written += 1
    return written


def wall(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Best and median wall seconds of ``cmd`` over ``runs`` fresh processes (one warm-up run first)."""
    times = []
    for k in range(runs + 1):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env, cwd=REPO)
        if k:
            times.append(time.perf_counter() - t)
    return {"best_s": round(min(times), 4), "median_s": round(statistics.median(times), 4)}


def import_breakdown(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Milliseconds of import time (self time summed by top-level package) of ``cmd`` under ``-X importtime``."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True, env=env, cwd=REPO)
    by_top: Counter[str] = Counter()
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            by_top[m[2].split(".")[0]] += int(m[1])
    total = sum(by_top.values())
    top = {"numpy": by_top.pop("numpy", 0), "netdiff_lib": by_top.pop("netdiff_lib", 0)}
    heavy = sorted(k for k in by_top if k in ("torch", "kfp", "pandas", "sklearn", "scipy", "diffusers", "minio"))
    return {"total_ms": round(total / 1000, 1), **{f"{k}_ms": round(v / 1000, 1) for k, v in top.items()},
            "other_ms": round((total - sum(top.values())) / 1000, 1), "heavy_modules": heavy}


def _cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    found = re.search(r"model name\s*:\s*(.+)", text)
    return found[1].strip() if found else platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=600)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    py = sys.executable
    # As installed code runs: with its bytecode cache (pip compiles on install; the warm-up run writes it here).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="netdiff-startup-") as tmp:
        cap = Path(tmp) / "small.pcap"
        n = build_capture(cap, args.packets)
        nprint = [py, "-m", "netdiff_lib.cli", "nprint", "-P", str(cap), "-4", "-t", "-u", "-i"]
        cmds: dict[str, list[str]] = {
            "python -c pass": [py, "-c", "pass"],
            "python -c 'import numpy'": [py, "-c", "import numpy"],
            "netdiff nprint -P CAP -4 -t -u -i": nprint,
            "netdiff nprint -P CAP -4 -t -u -i -R": [*nprint, "-R"],
            "netdiff nprint --version": [py, "-m", "netdiff_lib.cli", "nprint", "--version"],
            "netdiff --help": [py, "-m", "netdiff_lib.cli", "--help"],
        }
        if shutil.which("tcpdump"):
            cmds["tcpdump -r CAP -nn"] = ["tcpdump", "-r", str(cap), "-nn"]
        script = Path(py).parent / "netdiff"
        if script.is_file():  # the console script of this interpreter's environment (a venv's, say)
            cmds["netdiff (console script) nprint -P CAP -4 -t -u -i"] = [str(script), *nprint[3:]]
        results = {name: wall(cmd, args.runs, env) for name, cmd in cmds.items()}
        breakdown = import_breakdown(nprint, env)
    ours = results["netdiff nprint -P CAP -4 -t -u -i"]["median_s"]
    report = {
        "machine": f"{_cpu()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO).stdout.strip(),
        "packets": n, "runs": args.runs, "wall": results, "imports_of_nprint_command": breakdown,
        "nprint_reference_s": NPRINT_WALL_S,
        "x_nprint": round(ours / NPRINT_WALL_S, 2),
        "goal_3x_nprint": "met" if ours <= 3 * NPRINT_WALL_S else "missed",
        "over_numpy_floor_s": round(ours - results["python -c 'import numpy'"]["median_s"], 4),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
