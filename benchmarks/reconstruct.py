"""Reconstruction throughput on one core: packets/s of ``reconstruct(...).write(...)`` against plain decoding.

Workloads (NetDiffusion layout, 1,024-row traces like NetDiffusion's images):

- ``real+noise``: windows of the sample captures (``samples/captures``) with 1 % of bits replaced by random
  ternary values (a good generator's output);
- ``netdiffusion``: the seed system's raw generated sample as ``netdiffusion.md`` describes it (real rows
  blurred, ipv4_ver 0000 in 92 % and IHL 0011 in 83 % of rows, more -1s);
- ``random``: uniform random ternary matrices (the worst case: every packet its own flow).

Three ways are timed on the same traces in the same run: the baseline, the codec's plain decode without any
repair (:func:`netdiff_lib.nprint.decode.write_trace_pcap`, what ``nprint -N`` does); ``reconstruct`` called
once per trace; and ``reconstruct_batch`` on ``--batch`` traces per call (the throughput path, e.g. for a
generator's output).  Every way writes one pcap file per trace (to a temporary folder).  Rates are input rows
per second of this process's CPU time (one thread: ``OMP_NUM_THREADS=1`` is set before numpy loads), the best
of ``--repeat`` runs, so that other load on a shared machine does not count; wall-clock rates are printed too.

    python benchmarks/reconstruct.py [--traces 40] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netdiff_lib.nprint import encode_pcap  # noqa: E402
from netdiff_lib.nprint.decode import write_trace_pcap  # noqa: E402
from netdiff_lib.repair import reconstruct, reconstruct_batch  # noqa: E402
from netdiff_lib.schema import MAX_PACKETS, NETDIFFUSION, uint_to_bits  # noqa: E402
from netdiff_lib.trace import Trace  # noqa: E402

ROWS = MAX_PACKETS
TARGET = 100_000


def real_rows() -> np.ndarray:
    files = sorted((ROOT / "samples" / "captures").glob("*/*.pcap"))
    if not files:
        raise SystemExit("no sample captures under samples/captures")
    return np.concatenate([encode_pcap(f, NETDIFFUSION).trace.matrix for f in files])


def noisy(rng: np.random.Generator, base: np.ndarray, share: float) -> np.ndarray:
    start = int(rng.integers(0, max(len(base) - ROWS, 1)))
    m = np.resize(base[start:start + ROWS], (ROWS, base.shape[1])).copy()
    flip = rng.random(m.shape) < share
    m[flip] = rng.integers(-1, 2, int(flip.sum()), dtype=np.int8)
    return m


def netdiffusion_like(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    m = noisy(rng, base, 0.08)
    ver, ihl = NETDIFFUSION.span("ipv4_ver").slice, NETDIFFUSION.span("ipv4_hl").slice
    m[rng.random(ROWS) < 0.92, ver] = 0
    m[rng.random(ROWS) < 0.83, ihl] = uint_to_bits(3, 4)
    m[rng.random(m.shape) < 0.03] = -1
    return m


def workloads(n: int, seed: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    base = real_rows()
    make = {
        "real+noise": lambda: noisy(rng, base, 0.01),
        "netdiffusion": lambda: netdiffusion_like(rng, base),
        "random": lambda: rng.integers(-1, 2, (ROWS, NETDIFFUSION.width), dtype=np.int8),
    }
    out = {}
    for name, fn in make.items():
        out[name] = [(fn(), rng.exponential(2000.0, ROWS)) for _ in range(n)]
    return out


def best_time(fn, repeat: int) -> tuple[float, float]:
    """Best (CPU seconds, wall seconds) of ``repeat`` runs; CPU time is this one thread's work."""
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall)


def bench(traces: list[tuple[np.ndarray, np.ndarray]], tmp: Path, repeat: int, batch: int) -> dict[str, float]:
    packets = sum(len(m) for m, _ in traces)

    def baseline() -> None:
        for i, (m, iat) in enumerate(traces):
            ts = np.cumsum((iat * 1000).astype(np.int64))
            write_trace_pcap(tmp / f"plain_{i}.pcap", Trace(m, NETDIFFUSION, ts))

    def one_by_one() -> None:
        for i, (m, iat) in enumerate(traces):
            reconstruct(m, NETDIFFUSION, iat_us=iat).write(tmp / f"repaired_{i}.pcap")

    def batched() -> None:
        for b in range(0, len(traces), batch):
            chunk = traces[b:b + batch]
            recs = reconstruct_batch([m for m, _ in chunk], NETDIFFUSION, iat_us=[iat for _, iat in chunk])
            for i, rec in enumerate(recs):
                rec.write(tmp / f"batched_{b + i}.pcap")

    out_packets = sum(len(reconstruct(m, NETDIFFUSION, iat_us=iat)) for m, iat in traces)
    (c_base, w_base), (c_one, w_one), (c_batch, w_batch) = (best_time(f, repeat)
                                                           for f in (baseline, one_by_one, batched))
    return {"rows": packets, "packets_out": out_packets, "decode_pps": packets / c_base,
            "reconstruct_pps": packets / c_one, "batch_pps": packets / c_batch,
            "ratio": c_base / c_one, "batch_ratio": c_base / c_batch,
            "wall_decode_pps": packets / w_base, "wall_reconstruct_pps": packets / w_one,
            "wall_batch_pps": packets / w_batch}


def report(name: str, r: dict[str, float]) -> None:
    print(f"{name:13s} plain decode {r['decode_pps']:>9,.0f}/s   reconstruct {r['reconstruct_pps']:>9,.0f}/s "
          f"(x{r['ratio']:.2f})   reconstruct_batch {r['batch_pps']:>9,.0f}/s (x{r['batch_ratio']:.2f})   "
          f"[{r['rows']} rows -> {r['packets_out']} packets]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=int, default=40, help="traces of 1,024 rows per workload")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is kept)")
    p.add_argument("--batch", type=int, default=16, help="traces per reconstruct_batch call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, traces in workloads(args.traces, args.seed).items():
            results[name] = bench(traces, Path(tmp), args.repeat, args.batch)
            report(name, results[name])
    parts = list(results.values())
    rows = sum(r["rows"] for r in parts)
    results["all"] = {"rows": rows, "packets_out": sum(r["packets_out"] for r in parts)}
    for key in ("decode_pps", "reconstruct_pps", "batch_pps", "wall_decode_pps", "wall_reconstruct_pps",
                "wall_batch_pps"):
        results["all"][key] = rows / sum(r["rows"] / r[key] for r in parts)
    total = results["all"]
    total["ratio"] = total["reconstruct_pps"] / total["decode_pps"]
    total["batch_ratio"] = total["batch_pps"] / total["decode_pps"]
    report("all", total)
    print(f"wall clock    plain decode {total['wall_decode_pps']:>9,.0f}/s   reconstruct "
          f"{total['wall_reconstruct_pps']:>9,.0f}/s   reconstruct_batch {total['wall_batch_pps']:>9,.0f}/s")
    verdict = "PASS" if total["batch_pps"] >= TARGET else "BELOW TARGET"
    print(f"reconstruction throughput {total['batch_pps']:,.0f} packets/s on one core "
          f"(target {TARGET:,}): {verdict}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
