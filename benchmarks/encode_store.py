"""``netdiff encode CAPTURE --traces flow [--labels FILE] --format store`` end to end, this tree against a baseline.

Each run is the CLI in a fresh process on one core (``taskset -c 0``, ``OMP_NUM_THREADS=1``), start-up and the
label file included; the figures are the process's CPU seconds (user + system, from ``wait4``: on a shared machine
wall time mostly measures the other processes), wall seconds and peak RSS. The baseline is the code of another
checkout (``--base``, e.g. ``git worktree add /tmp/base eb2d9cd``); the arms run alternately, best of
``--repeat`` each, and both stores must have the same fingerprint. The load average before and after is printed.

    python -m benchmarks.encode_store CAPTURE [--labels FILE] [--base /tmp/base] [--repeat 3] [--json OUT.json]

A capture's first packets (e.g. a million of a 10-million-packet one) as a pcap: ``--head N --out HEAD.pcap``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(tree: Path, capture: Path, labels: Path | None, out: Path) -> dict:
    """One ``netdiff encode`` with the code of ``tree``: CPU and wall seconds, peak RSS, the store's figures."""
    cmd = [sys.executable, "-m", "netdiff_lib.cli", "encode", str(capture), "--traces", "flow", "--format", "store",
           "-o", str(out), "-q", *(["--labels", str(labels)] if labels else [])]
    prefix = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(tree))
    start = time.perf_counter()
    proc = subprocess.Popen([*prefix, *cmd], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{tree}: netdiff encode failed:\n{err[-2000:]}")
    doc = json.loads((out / "store.json").read_text())
    shutil.rmtree(out)
    cpu = usage.ru_utime + usage.ru_stime
    return {"cpu_s": cpu, "wall_s": wall, "max_rss_mb": usage.ru_maxrss / 1024, "traces": doc["traces"],
            "packets_stored": doc["packets"], "fingerprint": doc["fingerprint"]}


def packets_read(capture: Path) -> int:
    from netdiff_lib.pcap import PcapFile

    return sum(len(b) for b in PcapFile(capture).batches())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", type=Path)
    ap.add_argument("--labels", type=Path)
    ap.add_argument("--base", type=Path, help="a checkout of the baseline's code (its root)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--head", type=int, help="only write the capture's first HEAD packets to --out and stop")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.head:
        from benchmarks.trace_pcaps import head

        head(args.capture, args.head, args.out)
        return
    n = packets_read(args.capture)
    trees = {"this tree": ROOT, **({"base": args.base.resolve()} if args.base else {})}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for name, tree in trees.items():
                runs[name].append(run_once(tree, args.capture, args.labels, Path(tmp) / f"store-{i}"))
    load.append(os.getloadavg())
    best = {name: min(r, key=lambda x: x["cpu_s"]) for name, r in runs.items()}
    if len({b["fingerprint"] for b in best.values()}) > 1:
        raise SystemExit(f"the stores differ: {[b['fingerprint'][:12] for b in best.values()]}")
    print(f"{args.capture} ({n:,} packets){' with ' + str(args.labels) if args.labels else ''}; load average "
          f"{' / '.join(f'{a:.1f}' for a in load[0])} before, {' / '.join(f'{a:.1f}' for a in load[1])} after")
    print(f"{'arm':<10} {'CPU s':>7} {'packets/CPU s':>14} {'wall s':>7} {'peak RSS MB':>12} {'traces':>9}")
    for name, b in best.items():
        b["packets_per_cpu_s"] = n / b["cpu_s"]
        print(f"{name:<10} {b['cpu_s']:>7.2f} {b['packets_per_cpu_s']:>14,.0f} {b['wall_s']:>7.1f} "
              f"{b['max_rss_mb']:>12.0f} {b['traces']:>9,}")
    if args.json:
        args.json.write_text(json.dumps({"capture": str(args.capture), "packets": n, "load": load, "runs": runs,
                                         "best": best}, indent=2))


if __name__ == "__main__":
    main()
