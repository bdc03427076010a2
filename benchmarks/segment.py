"""Trace builders' throughput: packets/s from a capture to traces in the array format, per ``--traces`` mode.

Two captures: one with many flows and hosts that the benchmark builds from the project's recorded samples
(samples/captures, each part's IPv4 addresses rewritten to one of ``--hosts`` addresses, local and public, the parts
laid over ``--span`` seconds so flows overlap), and optionally a capture you pass (``--capture``, e.g. the
loopback capture of benchmarks/encode.py). Each measurement runs in a fresh subprocess on one core
(``OMP_NUM_THREADS=1``, ``taskset -c 0``; peak memory is the process's VmHWM); the figure is packets read /
CPU seconds of the process (``time.process_time``: on a shared, busy machine wall time mostly measures the other
processes), encoding included (the codec alone is the ``codec`` arm), best of ``--repeat`` runs. The baseline,
measured in the same run, is today's per-packet builder (tests/segment_reference.py). The ``+labels`` arm reads a
host label CSV for half the hosts. ``--traces file`` is not measured: it does no segmentation work.

    python benchmarks/segment.py [--packets 200000] [--capture FILE] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ["flow", "host", "window:10", "host+window:10", "flow+labels"]  # file: no segmentation work


def build_capture(path: Path, packets: int, hosts: int, span_s: float, seed: int = 0) -> Path:
    """Samples laid over ``span_s`` seconds with rewritten addresses until ``packets`` packets; a label CSV too."""
    from netdiff_lib.pcap import PcapFile, PcapWriter

    rng = random.Random(seed)
    samples = sorted((ROOT / "samples" / "captures").glob("*/*.pcap"))
    frames = {s: [(b.packet(i), int(b.ts_ns[i])) for b in PcapFile(s).batches() for i in range(len(b))]
              for s in samples}
    pool = [f"10.{i // 250}.{i % 250}.1" if i % 3 else f"93.{i // 250}.{i % 250}.7" for i in range(hosts)]
    out, t0, total = [], 1_700_000_000 * 10**9, 0
    while total < packets:
        part = frames[rng.choice(samples)]
        start, table = t0 + int(rng.uniform(0, span_s) * 1e9), {}
        for data, ts in part:
            if data[12:14] == b"\x08\x00":
                data = bytearray(data)
                for at in (26, 30):
                    old = bytes(data[at:at + 4])
                    table.setdefault(old, ipaddress.IPv4Address(rng.choice(pool)).packed)
                    data[at:at + 4] = table[old]
            out.append((start + ts - part[0][1], bytes(data)))
        total += len(part)
    out.sort(key=lambda p: p[0])
    with PcapWriter(path, nanosecond=True) as w:
        for ts, data in out[:packets]:
            w.write(data, ts)
    labels = path.with_suffix(".labels.csv")
    labels.write_text("host,start,end,label\n" + "".join(f"{h},,,{rng.choice(['benign', 'bot'])}\n"
                                                           for h in pool[::2]))
    return path


def measure(arm: str, mode: str, capture: Path, labels: Path | None) -> dict:
    """One run in a fresh process: ``arm`` is new (netdiff_lib.segment), old (the per-packet builder) or codec."""
    if arm == "codec":
        work = ("from netdiff_lib.nprint.encode import encode_batch\nfrom netdiff_lib.pcap import PcapFile\n"
                "t = time.process_time()\nn = 0\nfor b in PcapFile(CAP).batches(batch_size=16384):\n"
                "    n += len(b); encode_batch(b, NETDIFFUSION, 'netdiff')\n")
    else:
        use_labels = mode.endswith("+labels")
        builder = ("from netdiff_lib.segment import segment_capture as build\n" if arm == "new" else
                   f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                   "from segment_reference import reference_segment_capture as build\n")
        work = (f"import sys\n{builder}from netdiff_lib.segment import SegmentStats, parse_traces\n"
                "from netdiff_lib.labels import read_labels\n"
                f"index = read_labels({str(labels)!r}) if {use_labels} else None\n"
                "stats = SegmentStats()\nt = time.process_time()\n"
                f"for tr in build(CAP, parse_traces({mode.removesuffix('+labels')!r}), NETDIFFUSION, "
                "max_packets=1024, label='x', labels=index, stats=stats):\n    pass\nn = stats.packets\n")
    # peak RSS from VmHWM: ru_maxrss of a child keeps the parent's peak at fork (the built capture)
    code = (f"import time\nfrom netdiff_lib.schema import NETDIFFUSION\nCAP = {str(capture)!r}\n{work}"
            "dt = time.process_time() - t\n"
            "hwm = next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM'))\n"
            "print(n, dt, hwm)")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    prefix = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    n, dt, rss = out.stdout.split()
    return {"arm": arm, "mode": mode, "packets": int(n), "seconds": float(dt), "pps": int(n) / float(dt),
            "max_rss_mb": int(rss) / 1024}


def run(capture: Path, labels: Path | None, repeat: int) -> list[dict]:
    rows = [max((measure("codec", "-", capture, None) for _ in range(repeat)), key=lambda r: r["pps"])]
    for mode in MODES:
        if mode.endswith("+labels") and labels is None:
            continue
        rows.append(max((measure("new", mode, capture, labels) for _ in range(repeat)), key=lambda r: r["pps"]))
        rows.append(max((measure("old", mode, capture, labels) for _ in range(repeat)), key=lambda r: r["pps"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--span", type=float, default=3600.0, help="seconds over which the sample parts are laid")
    ap.add_argument("--capture", type=Path, help="also measure this capture (no labels)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        built = build_capture(Path(tmp) / "many_flows.pcap", args.packets, args.hosts, args.span)
        captures = [(built, built.with_suffix(".labels.csv"))] + ([(args.capture, None)] if args.capture else [])
        for cap, labels in captures:
            rows = results[cap.name] = run(cap, labels, args.repeat)
            print(f"capture: {cap.name} ({rows[0]['packets']} packets)")
            print(f"{'mode':<16} {'arm':<6} {'packets/s':>10} {'x old':>6} {'max RSS MB':>11}")
            old = {r["mode"]: r["pps"] for r in rows if r["arm"] == "old"}
            for r in rows:
                ratio = f"{r['pps'] / old[r['mode']]:.1f}" if r["mode"] in old else "-"
                print(f"{r['mode']:<16} {r['arm']:<6} {r['pps']:>10,.0f} {ratio:>6} {r['max_rss_mb']:>11.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
