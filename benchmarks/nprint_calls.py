"""nprintML's nPrint step alone: the calls it makes, with its arguments and concurrency, timed per tool.

nprintML's Net step runs ``nprint`` once per capture, ``--concurrency`` (default: the CPU count) at a time,
reading each output through a pipe; its ``generate_npts`` timing also covers the Label step's work on the
files it yields, so it does not isolate the tool.  This replays only the calls: for each of the project's 50
sample captures ``nprint --verbose --pcap_file CAP --ipv4 --count 50 --write_index 2 --tcp --udp``
(nprintML 1.1.2's argv for ``-4 -t -u -c 50 -O 2 -VVV``, as ``benchmarks.nprintml`` runs it), 2 at a time,
stdout and stderr piped and read.  Tools, alternating round by round (a busy machine slows all alike):

- ``netdiff nprint`` of this checkout (``python -m netdiff_lib.cli nprint``, byte-compiled as installed),
- the real nprint: ``--nprint PATH``, ``$NPRINT`` or ``nprint`` on PATH; "not measured" when absent,
- with ``--compare-tree DIR``, ``netdiff nprint`` of another checkout, run as it is (no byte-compiling, with
  this shell's ``PYTHONDONTWRITEBYTECODE``) -- e.g. ``git archive`` of an earlier commit.

Reports per tool the median wall seconds of a round (50 calls) and CPU seconds of its processes::

    python3 -m benchmarks.nprint_calls [--rounds 5] [--concurrency 2] [--nprint PATH] [--compare-tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.startup import find_nprint

REPO = Path(__file__).resolve().parents[1]
ARGV = ["--verbose", "--pcap_file", "{pcap}", "--ipv4", "--count", "50", "--write_index", "2", "--tcp", "--udp"]


def _call(cmd: list[str], pcap: Path, env: dict[str, str]) -> int:
    argv = [a.replace("{pcap}", str(pcap)) for a in ARGV]
    proc = subprocess.run([*cmd, *argv], capture_output=True, env=env)
    return len(proc.stdout)


def one_round(cmd: list[str], pcaps: list[Path], env: dict[str, str], concurrency: int) -> tuple[float, float, int]:
    """Wall and CPU seconds of one call per capture, ``concurrency`` at a time; bytes written."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        written = sum(pool.map(lambda p: _call(cmd, p, env), pcaps))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--nprint", help="the real nprint binary (default: $NPRINT, else nprint on PATH)")
    p.add_argument("--compare-tree", type=Path, help="another checkout whose netdiff nprint is timed alongside")
    args = p.parse_args(argv)
    pcaps = sorted((REPO / "samples" / "captures").glob("*/*.pcap"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "netdiff_lib")], check=True)
    # -P: the working directory does not go first on sys.path, so PYTHONPATH says which checkout runs
    tools = {"netdiff nprint": ["env", f"PYTHONPATH={REPO}", sys.executable, "-P", "-m", "netdiff_lib.cli", "nprint"]}
    nprint = find_nprint(args.nprint)
    if nprint:
        tools["nprint (real)"] = [nprint]
    if args.compare_tree:
        tree = args.compare_tree.resolve()
        tools[f"netdiff nprint ({tree})"] = ["env", f"PYTHONPATH={tree}", sys.executable, "-P", "-m",
                                             "netdiff_lib.cli", "nprint"]
    rounds: dict[str, list[tuple[float, float, int]]] = {name: [] for name in tools}
    for k in range(args.rounds + 1):  # round 0 warms the page cache
        for name, cmd in tools.items():
            result = one_round(cmd, pcaps, env, args.concurrency)
            if k:
                rounds[name].append(result)
    report = {
        "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "captures": len(pcaps),
        "concurrency": args.concurrency, "rounds": args.rounds, "argv": ARGV,
        "nprint": nprint or "not found: not measured",
        "tools": {name: {"wall_median_s": round(statistics.median(r[0] for r in rs), 2),
                         "wall_best_s": round(min(r[0] for r in rs), 2),
                         "cpu_median_s": round(statistics.median(r[1] for r in rs), 2),
                         "cpu_per_call_s": round(statistics.median(r[1] for r in rs) / len(pcaps), 4),
                         "stdout_bytes": rs[0][2]} for name, rs in rounds.items()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
