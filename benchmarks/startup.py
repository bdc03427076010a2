"""Start-up: wall time of ``netdiff nprint`` against the real ``nprint`` binary, side by side in one run.

nprintML and scripts start the nPrint tool once per capture, so on small captures its cost is start-up.  This
times, on the same small capture and in the same run, alternating the commands run by run (so a busy machine
slows all of them alike):

- ``nprint -P CAPTURE -4 -t -u -i`` -- the reference binary: ``--nprint PATH``, else ``$NPRINT``, else
  ``nprint`` on PATH; where none is found it is reported as not measured (no stand-in figure),
- ``python -m netdiff_lib.cli nprint -P CAPTURE -4 -t -u -i`` (and with ``-R``), and the ``netdiff`` console
  script beside the interpreter when installed there (a virtual environment's),
- with ``--compare-tree DIR``, ``netdiff nprint`` from another checkout (``git archive`` of a commit, say):
  before and after a change, measured alike,
- the floors of any Python/numpy command: ``python -c pass``, ``python -c "import numpy"``, and
  ``tcpdump -r CAPTURE -nn`` (a C program reading the capture, as nPrint does) when installed.

Ratios are against the baseline measured in this run; CPU seconds (user + system of the child) are given
beside wall seconds, as a busy machine inflates them less.  The capture is built from the bundled samples
(``samples/captures``: their packets in order, re-timed 1 ms apart), so the benchmark runs on a clone; when
the real nprint is present the two outputs are compared byte for byte first.  Each command runs ``--runs``
times in a fresh process (after one warm-up round), stdout to /dev/null, with Python's bytecode cache (as
installed code runs: ``PYTHONDONTWRITEBYTECODE`` is dropped, the warm-up writes the cache); the report gives
best and median.  ``-X importtime`` of the netdiff command then says where its start-up goes (numpy,
netdiff_lib, the rest of the standard library, ``site``)::

    python3 -m benchmarks.startup [--packets 360] [--runs 9] [--nprint PATH] [--compare-tree DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["-4", "-t", "-u", "-i"]
NETDIFF = "netdiff nprint -P CAP -4 -t -u -i"
NPRINT = "nprint -P CAP -4 -t -u -i"
NUMPY = "python -c 'import numpy'"


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


def find_nprint(given: str | None) -> str | None:
    """The reference binary: ``given``, else ``$NPRINT``, else ``nprint`` on PATH (None: not found)."""
    for candidate in (given, os.environ.get("NPRINT"), shutil.which("nprint")):
        if candidate and os.access(candidate, os.X_OK) and not Path(candidate).is_dir():
            return candidate
    return None


def alternate(cmds: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Best and median wall seconds, and median CPU seconds (user + system, which a busy machine inflates less),
    of each command: one warm-up round, then ``runs`` rounds, each command once per round in turn (so load on
    the machine falls on all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    cpu: dict[str, list[float]] = {name: [] for name in cmds}
    for k in range(runs + 1):
        for name, cmd in cmds.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env, cwd=REPO)
            if k:
                times[name].append(time.perf_counter() - t)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {name: {"best_s": round(min(t), 4), "median_s": round(statistics.median(t), 4),
                   "cpu_median_s": round(statistics.median(cpu[name]), 4)} for name, t in times.items()}


def same_output(a: list[str], b: list[str], env: dict[str, str]) -> bool:
    out = [subprocess.run(c, capture_output=True, check=True, env=env, cwd=REPO).stdout for c in (a, b)]
    return out[0] == out[1]


def import_breakdown(cmd: list[str], env: dict[str, str]) -> dict[str, float | list[str]]:
    """Milliseconds of import time (self time summed by top-level package) of ``cmd`` under ``-X importtime``."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True, env=env, cwd=REPO)
    by_top: Counter[str] = Counter()
    site = 0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            by_top[m[4].split(".")[0]] += int(m[1])
            if m[4] == "site" and len(m[3]) == 1:
                site = int(m[2])
    total = sum(by_top.values())
    top = {"numpy": by_top.pop("numpy", 0), "netdiff_lib": by_top.pop("netdiff_lib", 0)}
    heavy = sorted(k for k in by_top if k in ("torch", "kfp", "pandas", "sklearn", "scipy", "diffusers", "minio"))
    return {"total_ms": round(total / 1000, 1), **{f"{k}_ms": round(v / 1000, 1) for k, v in top.items()},
            "site_ms": round(site / 1000, 1), "other_ms": round((total - sum(top.values()) - site) / 1000, 1),
            "heavy_modules": heavy}


def _cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    found = re.search(r"model name\s*:\s*(.+)", text)
    return found[1].strip() if found else platform.machine()


def commands(py: str, cap: Path, nprint: str | None, other: Path | None = None) -> dict[str, list[str]]:
    ours = [py, "-m", "netdiff_lib.cli", "nprint", "-P", str(cap), *FLAGS]
    cmds: dict[str, list[str]] = {}
    if nprint:
        cmds[NPRINT] = [nprint, "-P", str(cap), *FLAGS]
    cmds[NETDIFF] = ours
    if other:
        # -P: not the working directory (this checkout) first on sys.path, so PYTHONPATH picks the tree
        cmds[f"{NETDIFF} ({other})"] = ["env", f"PYTHONPATH={other}", py, "-P", *ours[1:]]
    cmds[NETDIFF + " -R"] = [*ours, "-R"]
    script = Path(py).parent / "netdiff"
    if script.is_file():  # the console script of this interpreter's environment (a venv's, say)
        cmds["netdiff (console script) nprint -P CAP -4 -t -u -i"] = [str(script), *ours[3:]]
    cmds["python -c pass"] = [py, "-c", "pass"]
    cmds[NUMPY] = [py, "-c", "import numpy"]
    if shutil.which("tcpdump"):
        cmds["tcpdump -r CAP -nn"] = ["tcpdump", "-r", str(cap), "-nn"]
    return cmds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=360)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--nprint", help="the reference nprint binary (default: $NPRINT, else nprint on PATH)")
    ap.add_argument("--compare-tree", type=Path, help="another checkout whose netdiff nprint is timed alongside")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    py = sys.executable
    # As installed code runs: with its bytecode cache (pip compiles on install; the warm-up round writes it here).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    nprint = find_nprint(args.nprint)
    with tempfile.TemporaryDirectory(prefix="netdiff-startup-") as tmp:
        cap = Path(tmp) / "small.pcap"
        n = build_capture(cap, args.packets)
        cmds = commands(py, cap, nprint, args.compare_tree and args.compare_tree.resolve())
        identical = same_output(cmds[NPRINT], cmds[NETDIFF], env) if nprint else None
        results = alternate(cmds, args.runs, env)
        breakdown = import_breakdown(cmds[NETDIFF], env)
    ours = results[NETDIFF]["median_s"]
    ref = results[NPRINT]["median_s"] if nprint else None
    report = {
        "machine": f"{_cpu()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO).stdout.strip(),
        "packets": n, "runs": args.runs, "nprint": nprint or "not found: not measured",
        "outputs_identical": identical, "wall": results, "imports_of_netdiff_nprint": breakdown,
        "x_nprint": round(ours / ref, 2) if ref else "not measured",
        "over_nprint_s": round(ours - ref, 4) if ref else "not measured",
        "over_numpy_floor_s": round(ours - results[NUMPY]["median_s"], 4),
        "cpu_over_numpy_floor_s": round(results[NETDIFF]["cpu_median_s"] - results[NUMPY]["cpu_median_s"], 4),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
