"""Codec throughput: packets/s from a >= 200,000-packet capture to the array format and to nPrint CSV.

The capture is real loopback traffic that the benchmark records itself (TCP echo and UDP datagrams of random
sizes, as in nPrint's own published benchmark) with tcpdump when it runs as root, else a capture you pass
with ``--capture``.  Each measurement runs in a fresh subprocess on one core (``OMP_NUM_THREADS=1``,
``taskset`` where available) so that its peak memory (max RSS) is its own.  The baseline, measured in the
same run, is a straightforward per-packet Python encoder of the same layout (nPrint's spec, section 9); the
ratios are against it.  Targets (issue 2): >= 1,000,000 packets/s to the array format, >= 60,000 to CSV.

    python benchmarks/encode.py [--packets 200000] [--capture FILE] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CACHE = Path(os.environ.get("NETDIFF_BENCH_CACHE", Path(tempfile.gettempdir()) / "netdiff-bench"))


def _traffic(stop: threading.Event, tcp_port: int, udp_port: int) -> None:
    """TCP echo and UDP datagrams of random sizes on 127.0.0.1 until ``stop`` is set."""
    srv = socket.create_server(("127.0.0.1", tcp_port))

    def echo() -> None:
        conn, _ = srv.accept()
        while data := conn.recv(65536):
            conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    cli = socket.create_connection(("127.0.0.1", tcp_port))
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(0)
    while not stop.is_set():
        msg = os.urandom(rng.randint(1, 1400))
        cli.sendall(msg)
        got = 0
        while got < len(msg):
            got += len(cli.recv(65536))
        udp.sendto(os.urandom(rng.randint(1, 1400)), ("127.0.0.1", udp_port))
    cli.close()
    srv.close()


def record(path: Path, packets: int) -> Path:
    """Record ``packets`` packets of loopback traffic with tcpdump (needs root)."""
    if shutil.which("tcpdump") is None or os.geteuid() != 0:
        sys.exit("recording needs tcpdump and root; pass --capture FILE instead")
    tcp_port, udp_port = 39001, 39002
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    cmd = ["tcpdump", "-i", "lo", "-s", "262144", "-U", "--immediate-mode", "-c", str(packets), "-w", str(tmp),
           f"port {tcp_port} or port {udp_port}"]
    dump = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    while "listening on" not in (dump.stderr.readline() or "listening on"):
        pass
    stop = threading.Event()
    t = threading.Thread(target=_traffic, args=(stop, tcp_port, udp_port), daemon=True)
    t.start()
    dump.wait(timeout=600)
    stop.set()
    os.replace(tmp, path)
    return path


# (imports, timed work): the work must set ``n`` to the number of packets handled.
MEASURE = {
    "read": ("from netdiff_lib.pcap import PcapFile", "n = sum(len(b) for b in PcapFile(CAP).batches())"),
    "matrix": (
        "from netdiff_lib.nprint import encode_pcap\nfrom netdiff_lib.schema import Layout",
        "n = len(encode_pcap(CAP, Layout(('ipv4', 'tcp', 'udp', 'icmp'))).trace)",
    ),
    "array": (
        "from netdiff_lib.nprint import encode_pcap\nfrom netdiff_lib.schema import Layout\n"
        "from netdiff_lib.trace import save_trace",
        "r = encode_pcap(CAP, Layout(('ipv4', 'tcp', 'udp', 'icmp')))\n"
        "save_trace(OUT + '.npz', r.trace, compress=False)\nn = len(r.trace)",
    ),
    "array_netdiffusion": (
        "from netdiff_lib.nprint import encode_pcap\nfrom netdiff_lib.schema import NETDIFFUSION\n"
        "from netdiff_lib.trace import save_trace",
        "r = encode_pcap(CAP, NETDIFFUSION)\nsave_trace(OUT + '.npz', r.trace, compress=False)\nn = len(r.trace)",
    ),
    "csv": (
        "from netdiff_lib.cli import main",
        "main(['nprint', '-P', CAP, '-4', '-t', '-u', '-i', '-W', OUT + '.csv'])\n"
        "n = sum(1 for _ in open(OUT + '.csv', 'rb')) - 1",
    ),
    "baseline": ("from benchmarks.naive_nprint import encode", "n = encode(CAP, limit=20000)"),
}


def measure(kind: str, capture: Path, workdir: Path) -> dict:
    imports, work = MEASURE[kind]
    code = (
        f"import resource, time\n{imports}\nCAP, OUT = {str(capture)!r}, {str(workdir / kind)!r}\n"
        f"t = time.perf_counter()\n{work}\ndt = time.perf_counter() - t\n"
        "print(n, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    prefix = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    n, dt, rss = out.stdout.split()
    return {"kind": kind, "packets": int(n), "seconds": float(dt), "pps": int(n) / float(dt),
            "max_rss_mb": int(rss) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--capture", type=Path, help="use this capture instead of recording one")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (best is kept)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    capture = args.capture or CACHE / f"loopback_{args.packets}.pcap"
    if not capture.exists():
        print(f"recording {args.packets} loopback packets into {capture} ...", file=sys.stderr)
        record(capture, args.packets)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in MEASURE:
            runs = [measure(kind, capture, Path(tmp)) for _ in range(1 if kind == "baseline" else args.repeat)]
            results[kind] = max(runs, key=lambda r: r["pps"])
    base = results["baseline"]["pps"]
    print(f"capture: {capture} ({results['read']['packets']} packets)")
    print(f"{'measurement':<20} {'packets/s':>12} {'x baseline':>11} {'max RSS MB':>11}")
    for kind, r in results.items():
        print(f"{kind:<20} {r['pps']:>12,.0f} {r['pps'] / base:>11.1f} {r['max_rss_mb']:>11.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
