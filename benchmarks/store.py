"""Trace store: bytes per packet against the int8 matrix, compressed ``.npz`` array files and the captures, and
write / read throughput (packets/s, one core).

The captures (default: the project's samples and, when present, ``/work/shared/data/{packets,iot-sentinel}``) are
encoded once in the NetDiffusion layout, whole or cut into ``--traces`` (e.g. ``flow``); then, best of
``--repeat`` runs each, the traces are written into a store (:class:`netdiff_lib.store.StoreWriter`) and read back
in index order (:func:`netdiff_lib.store.open_store`), and every trace is also written as a compressed ``.npz``
(today's per-file format) for its size.  Run with ``OMP_NUM_THREADS=1``.

    python benchmarks/store.py [CAPTURE_OR_FOLDER ...] [--traces flow] [--repeat 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netdiff_lib.errors import InputError  # noqa: E402
from netdiff_lib.inputs import CAPTURE_SUFFIXES, expand, label_of  # noqa: E402
from netdiff_lib.schema import NETDIFFUSION  # noqa: E402
from netdiff_lib.store import StoreWriter, open_store  # noqa: E402
from netdiff_lib.trace import Trace, save_trace  # noqa: E402

DEFAULT = [ROOT / "samples" / "captures", Path("/work/shared/data/packets"), Path("/work/shared/data/iot-sentinel")]


def encode_all(paths: list[Path], traces: str) -> tuple[list[Trace], int]:
    from netdiff_lib.encoded import capture_traces
    from netdiff_lib.segment.options import make_options

    opts = make_options(traces)
    out, size = [], 0
    for f in expand(paths, CAPTURE_SUFFIXES):
        try:
            got = capture_traces(f, label_of(f), NETDIFFUSION, None, opts)
        except InputError:
            continue
        out += [t for t in got if len(t)]
        size += f.stat().st_size
    return out, size


def best(runs: int, work) -> tuple[float, float]:
    """The shortest wall time and the shortest CPU time (this process) of ``runs`` runs of ``work``: on a shared
    machine the CPU time is the one-core cost."""
    walls, cpus = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", type=Path)
    ap.add_argument("--traces", default="file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    traces, pcap_bytes = encode_all(args.inputs or [p for p in DEFAULT if p.exists()], args.traces)
    packets = sum(len(t) for t in traces)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp, "store")

        def write() -> None:
            with StoreWriter(store, NETDIFFUSION) as w:
                for t in traces:
                    w.add(t)

        def read() -> None:
            with open_store(store) as src:
                for start in range(0, len(src), 4096):
                    src.read(range(start, min(start + 4096, len(src))))

        t_write, t_read = best(args.repeat, write), best(args.repeat, read)
        store_bytes = sum(p.stat().st_size for p in store.iterdir())
        npz_bytes = 0
        for i, t in enumerate(traces):
            save_trace(Path(tmp, f"{i}.npz"), t)
            npz_bytes += Path(tmp, f"{i}.npz").stat().st_size
            Path(tmp, f"{i}.npz").unlink()
    res = {"traces_mode": args.traces, "traces": len(traces), "packets": packets,
           "bytes_per_packet": {"int8_matrix": NETDIFFUSION.width, "npz_compressed": npz_bytes / packets,
                                "pcap": pcap_bytes / packets, "store": store_bytes / packets},
           "store_vs_int8": NETDIFFUSION.width * packets / store_bytes,
           "write_pps": packets / t_write[0], "read_pps": packets / t_read[0],
           "write_pps_cpu": packets / t_write[1], "read_pps_cpu": packets / t_read[1]}
    print(f"{len(traces):,} traces ({args.traces}), {packets:,} packets")
    for k, v in res["bytes_per_packet"].items():
        print(f"  {k:<15} {v:>8.1f} bytes/packet")
    print(f"  store is {res['store_vs_int8']:.1f}x smaller than the int8 matrix")
    print(f"  write {res['write_pps']:,.0f} packets/s, read {res['read_pps']:,.0f} packets/s (wall time)")
    print(f"  write {res['write_pps_cpu']:,.0f} packets/s, read {res['read_pps_cpu']:,.0f} packets/s (CPU time)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
