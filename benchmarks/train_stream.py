"""Native training from a large trace source: streamed batches against the packed in-memory path, in one run.

A source of ``--traces`` traces (20,000 by default) is made from the real sample captures' traces: trace ``i``
repeats the rows of sample trace ``i mod 50`` end to end from a seeded cut point, to a length drawn from a
log-normal (median ``--median`` packets, at most ``--cap``), with the sample's own inter-arrival gaps.  Real
rows, not random bytes; nothing of it is held until it is read.  Each mode trains ``--steps`` steps of the
preset (``tiny`` by default) in a fresh process:

* ``memory``: the traces read into a list (``TrainingData(traces)``, today's path) and packed (``data.stream=off``);
* ``stream``: ``TrainingData(dataset=source)`` (the fingerprint computed streaming) and ``data.stream=on`` with
  ``--workers`` reader processes; also on a tenth of the traces, to show that its memory does not grow with them
  (the fit sample, ``data.sample_per_class`` traces per class, is the same size in both when every class has that
  many).

It prints one JSON object: per mode the peak RSS of the training process (and of its reader processes), the
set-up time (reading the data, the fingerprint, the fit, packing), the steps/s of the loop, and the packets::

    OMP_NUM_THREADS=1 python benchmarks/train_stream.py --traces 20000 --steps 40 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "captures"


class CutSource:
    """``n`` traces of real rows cut from ``samples`` (see the module docstring); a :class:`TraceSource`."""

    def __init__(self, samples: list[Any], n: int, median: int, cap: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.samples, self.layout = samples, samples[0].layout
        self.lengths = np.clip(rng.lognormal(np.log(median), 0.8, n), 1, cap).astype(np.int64)
        self.starts = rng.integers(0, 1 << 30, n)
        self.labels = [str(samples[i % len(samples)].label) for i in range(n)]
        self.sources = [f"{self.labels[i]}/capture-{i // 100}" for i in range(n)]  # 100 traces per "capture"

    def __len__(self) -> int:
        return len(self.lengths)

    def read(self, indices: Any) -> list[Any]:
        from netdiff_lib.trace import Trace

        out = []
        for i in (int(k) for k in indices):
            s = self.samples[i % len(self.samples)]
            rows = (self.starts[i] + np.arange(self.lengths[i])) % len(s)
            gaps = np.diff(s.ts_ns, prepend=s.ts_ns[0])[rows]
            gaps[0] = 0
            out.append(Trace(s.matrix[rows], s.layout, np.cumsum(gaps) + int(s.ts_ns[0]), s.label, self.sources[i]))
        return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    from netdiff_lib.config import preset
    from netdiff_lib.encoded import from_captures
    from netdiff_lib.models.base import TrainingData
    from netdiff_lib.models.native.train import train
    from netdiff_lib.schema import MAX_PACKETS

    t0 = time.perf_counter()
    samples = from_captures(str(SAMPLES), MAX_PACKETS).traces
    src = CutSource(samples, args.traces, args.median, args.cap)
    if args.child == "memory":
        data = TrainingData(src.read(range(len(src))), source="synthetic", max_packets=args.cap)
    else:
        data = TrainingData(dataset=src, source="synthetic", max_packets=args.cap)
    cfg = preset(args.config).with_settings([f"data.stream={'off' if args.child == 'memory' else 'on'}",
                                             f"data.workers={args.workers}"])
    cfg = cfg.with_overrides(steps=args.steps, checkpoint_every=args.steps, log_every=args.steps)
    with tempfile.TemporaryDirectory(prefix="netdiff-bench-") as out:
        train(cfg, data, out, progress=False)
        card = json.loads(Path(out, "model_card.json").read_text())
    wall = time.perf_counter() - t0
    loop = card["training"]["elapsed_s"]
    return {"mode": args.child, "traces": len(src), "packets": int(src.lengths.sum()),
            "trained_packets": card["data"]["packets"], "streamed": card["data"]["streamed"],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_readers_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "setup_s": round(wall - loop, 2), "steps": card["training"]["steps"],
            "steps_per_s": round(card["training"]["steps"] / max(loop, 1e-9), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=int, default=20_000)
    ap.add_argument("--median", type=int, default=40, help="median trace length (packets)")
    ap.add_argument("--cap", type=int, default=1024, help="longest trace (packets)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--workers", type=int, default=1, help="reader processes of the streamed run")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--child", choices=("memory", "stream"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    runs = []
    for mode, n in (("stream", args.traces // 10), ("stream", args.traces), ("memory", args.traces)):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", mode, "--traces", str(n)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
        if done.returncode:
            sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {"config": args.config, "runs": runs}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
