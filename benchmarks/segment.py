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

The ``store`` arm is ``netdiff encode --traces MODE --format store``'s work: capture -> traces -> a trace store
written; it runs this tree's code and, as its baseline, the code of ``--base`` (a git revision, default the merge
base with ``main``; extracted with ``git archive``) in the same run; both stores' fingerprints must agree.

    python benchmarks/segment.py [--packets 200000] [--capture FILE] [--modes flow,host] [--arms codec,store]
                                 [--json OUT.json]
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


def _store_work(mode: str) -> str:
    """Capture -> traces -> trace store (with the trace builders' packed rows, a batch's traces at once, where the
    tree has them)."""
    return ("import inspect, tempfile\nfrom netdiff_lib.segment import SegmentStats, parse_traces, segment_capture\n"
            "from netdiff_lib.store import StoreWriter\n"
            "params = inspect.signature(segment_capture).parameters\n"
            "kw = {k: True for k in ('packed', 'batched') if k in params}\n"
            "stats = SegmentStats()\nt = time.process_time()\nwith tempfile.TemporaryDirectory() as d:\n"
            "    w = StoreWriter(d + '/s', NETDIFFUSION)\n"
            f"    for tr in segment_capture(CAP, parse_traces({mode!r}), NETDIFFUSION, max_packets=1024, label='x', "
            "stats=stats, **kw):\n        w.add(tr)\n    FP = w.close()['fingerprint'][:12]\nn = stats.packets\n")


def measure(arm: str, mode: str, capture: Path, labels: Path | None, tree: Path = ROOT) -> dict:
    """One run in a fresh process: ``arm`` is new (netdiff_lib.segment), old (the per-packet builder), codec or
    store (with the code of ``tree``)."""
    if arm == "store":
        work = _store_work(mode)
    elif arm == "codec":
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
            "print(n, dt, hwm, globals().get('FP', '-'))")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tree))
    prefix = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=tree)  # python -c puts the working folder first on sys.path
    n, dt, rss, fp = out.stdout.split()
    return {"arm": arm if tree == ROOT else f"{arm}@base", "mode": mode, "packets": int(n), "seconds": float(dt),
            "pps": int(n) / float(dt), "max_rss_mb": int(rss) / 1024, "fingerprint": fp}


def run(capture: Path, labels: Path | None, repeat: int, modes: list[str], arms: list[str],
        base: Path | None) -> list[dict]:
    def best(arm: str, mode: str, tree: Path = ROOT) -> dict:
        return max((measure(arm, mode, capture, labels, tree) for _ in range(repeat)), key=lambda r: r["pps"])

    rows = [best("codec", "-")] if "codec" in arms else []
    if "codec" in arms and base is not None:
        rows.append(best("codec", "-", base))
    for mode in modes:
        if mode.endswith("+labels") and labels is None:
            continue
        if "store" in arms and not mode.endswith("+labels"):
            rows += [best("store", mode), *([best("store", mode, base)] if base is not None else [])]
            if base is not None and rows[-1]["fingerprint"] != rows[-2]["fingerprint"]:
                raise SystemExit(f"{mode}: the store differs from the baseline's ({rows[-2]['fingerprint']} vs "
                                 f"{rows[-1]['fingerprint']})")
        rows += [best(arm, mode) for arm in ("new", "old") if arm in arms]
    return rows


def base_tree(rev: str | None, tmp: Path) -> Path:
    """The code of revision ``rev`` (default: the merge base with main) extracted under ``tmp``."""
    git = ["git", "-C", str(ROOT)]
    rev = rev or subprocess.run([*git, "merge-base", "HEAD", "main"], capture_output=True, text=True,
                                check=True).stdout.strip()
    out = tmp / f"base-{rev[:12]}"
    out.mkdir()
    archive = subprocess.run([*git, "archive", rev, "netdiff_lib"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    print(f"baseline: {rev[:12]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--span", type=float, default=3600.0, help="seconds over which the sample parts are laid")
    ap.add_argument("--capture", type=Path, help="also measure this capture (no labels)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated --traces modes")
    ap.add_argument("--arms", default="codec,store,new,old", help="comma-separated arms: codec, store, new, old")
    ap.add_argument("--base", help="revision of the store and codec arms' baseline (default: merge base with main)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        arms = args.arms.split(",")
        base = base_tree(args.base, Path(tmp)) if "store" in arms else None
        built = build_capture(Path(tmp) / "many_flows.pcap", args.packets, args.hosts, args.span)
        captures = [(built, built.with_suffix(".labels.csv"))] + ([(args.capture, None)] if args.capture else [])
        for cap, labels in captures:
            rows = results[cap.name] = run(cap, labels, args.repeat, args.modes.split(","), arms, base)
            print(f"capture: {cap.name} ({rows[0]['packets']} packets)")
            print(f"{'mode':<16} {'arm':<12} {'packets/s':>10} {'x base':>6} {'max RSS MB':>11}")
            pps = {(r["mode"], r["arm"]): r["pps"] for r in rows}
            for r in rows:
                ref = (r["mode"], {"new": "old", "store": "store@base", "codec": "codec@base"}.get(r["arm"]))
                ratio = f"{r['pps'] / pps[ref]:.2f}" if ref in pps else "-"
                print(f"{r['mode']:<16} {r['arm']:<12} {r['pps']:>10,.0f} {ratio:>6} {r['max_rss_mb']:>11.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
