"""Flow metering cost per pcap: nfstream as the evaluation runs it (:class:`netdiff_lib.evaluate.flows.FlowMeter`).

Every pcap of a folder (default ``samples/captures``) is metered once per run (a fresh meter, no cache); the
baseline, measured in the same run on the same files, is the codec's encode (:func:`encode_pcap`, what every
evaluation does to each pcap anyway).  Reported per pcap: wall-clock ms and CPU ms of this process plus its
children (nfstream meters in a forked process), the best of ``--repeat`` runs.

    python benchmarks/flows.py [FOLDER] [--repeat 3] [--max-packets 1024] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netdiff_lib.evaluate.flows import FlowMeter  # noqa: E402
from netdiff_lib.nprint import encode_pcap  # noqa: E402
from netdiff_lib.schema import NETDIFFUSION  # noqa: E402


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(files: list[Path], work: Callable[[Path], object], repeat: int) -> dict[str, float]:
    """Best wall-clock and CPU ms per file over ``repeat`` runs."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), _cpu()
        for f in files:
            work(f)
        best_wall = min(best_wall, (time.perf_counter() - wall) / len(files) * 1e3)
        best_cpu = min(best_cpu, (_cpu() - cpu) / len(files) * 1e3)
    return {"wall_ms_per_pcap": round(best_wall, 1), "cpu_ms_per_pcap": round(best_cpu, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(ROOT / "samples" / "captures"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-packets", type=int, default=1024)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    files = sorted(f for f in Path(args.folder).rglob("*") if f.suffix in (".pcap", ".pcapng"))
    if not files:
        raise SystemExit(f"no pcaps under {args.folder}")
    with tempfile.TemporaryDirectory() as tmp:
        def meter(f: Path) -> object:
            return FlowMeter(Path(tmp), args.max_packets).records(str(f))

        out = {"pcaps": len(files), "folder": args.folder,
               "baseline_encode": timed(files, lambda f: encode_pcap(f, NETDIFFUSION, max_packets=args.max_packets),
                                        args.repeat),
               "nfstream": timed(files, meter, args.repeat)}
        out["flows"] = sum(len(meter(f)) for f in files)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
