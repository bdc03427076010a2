"""Build a long capture (millions of packets) with its label files from the project's recorded traffic.

    python -m benchmarks.long_capture OUT --packets 10000000 [--source DIR]... [--rate PPS] [--seed N]

Each source folder holds labelled captures (``<label>/*.pcap``; default: samples/captures, the project's own
recorded traffic; add e.g. shared/data/iot-sentinel). The builder replays them, each replay (a *session*) a
randomly chosen capture starting at a Poisson arrival time (``--rate`` packets per second on average, so
sessions overlap as the hosts of a real network do), with its local addresses (private, loopback, link-local,
unique local) rewritten to addresses no other session has (many distinct hosts; public servers keep theirs),
ephemeral ports shifted, and every checksum fixed (:mod:`benchmarks.replay`). Sessions are merged in time order
and written as they go: memory holds the parsed source captures and the open sessions, never the output.

Written to OUT: ``capture.pcap`` (classic pcap, microseconds, Ethernet), its labels per flow by the class of
the replayed capture in two formats, ``capture.pcap_ISCX.csv`` (CIC-IDS2017 CICFlowMeter CSV; the ``--benign``
class written ``BENIGN``) and ``conn.log.labeled`` (IoT-23 Zeek conn.log; ``Benign``, else ``Malicious`` with
the class as detailed label), and ``build.json`` (counts, sizes, time, packets/s, peak RSS).
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import json
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.labelfiles import ADT, CicWriter, FlowRow, ZeekWriter
from benchmarks.replay import SAMPLES, Recording, shift_port
from netdiff_lib.pcap import PcapWriter

START = datetime(2017, 7, 3, 8, 55, tzinfo=ADT)  # CIC-IDS2017's Monday, in the lab's time
CAPTURE, CIC_CSV, ZEEK_LOG = "capture.pcap", "capture.pcap_ISCX.csv", "conn.log.labeled"
BATCH = 65536


def load_sources(dirs: list[str]) -> list[Recording]:
    """Every Ethernet capture under the folders (labels from ``<label>/`` folders, as netdiff discovers them)."""
    from netdiff_lib.dataset import discover

    out = []
    for d in dirs:
        for cap in discover(d, label_from="folder"):
            try:
                rec = Recording(Path(cap.uri), cap.label)
            except ValueError as exc:
                print(f"skipped: {exc}", file=sys.stderr)
                continue
            rec.offsets = rec.offsets // 1000 * 1000  # the output has microsecond times
            out.append(rec)
    if not out:
        raise SystemExit(f"no Ethernet captures under {', '.join(dirs)}")
    return out


@dataclass
class Session:
    """One replay: its packets (rewritten), times and position."""

    data: list[bytes]
    ts: np.ndarray
    wirelen: np.ndarray
    label: str
    pos: int = 0


class Hosts:
    """New addresses for the local addresses of each session: 10.0.0.0/8 for IPv4, the low 64 bits for IPv6."""

    def __init__(self) -> None:
        self.next = 0
        self.kept: set[bytes] = set()

    def table(self, rec: Recording) -> list[bytes]:
        out = []
        for raw, local in zip(rec.addrs, rec.local, strict=True):
            if not local:
                self.kept.add(raw)
                out.append(raw)
                continue
            h = self.next
            self.next += 1
            if len(raw) == 4:
                out.append(bytes((10, (h // 65024) % 256, (h // 254) % 256, 1 + h % 254)))
            else:
                high = b"\xfd" + b"\x00" * 7 if raw == ipaddress.IPv6Address("::1").packed else raw[:8]
                out.append(high + (h + 1).to_bytes(8, "big"))
        return out

    @property
    def count(self) -> int:
        return self.next + len(self.kept)


class Builder:
    def __init__(self, recs: list[Recording], out: Path, packets: int, rate: float, seed: int,
                 benign: str | None) -> None:
        self.recs, self.out, self.target = recs, out, packets
        self.rng = random.Random(seed)
        self.gap_ns = np.mean([len(r.data) for r in recs]) / rate * 1e9  # mean time between session starts
        self.hosts = Hosts()
        self.benign = benign if benign is not None else sorted({r.label for r in recs})[0]
        self.sessions = 0
        self.flows: Counter = Counter()
        self.packets: Counter = Counter()

    def _session(self, start: int, cic: CicWriter, zeek: ZeekWriter) -> Session:
        rec = self.recs[self.rng.randrange(len(self.recs))]
        addrs = self.hosts.table(rec)
        port = shift_port(self.rng.randrange(1 << 16))
        texts = [str(ipaddress.ip_address(a)) for a in addrs]
        for f in rec.flows:
            ports = (port(f.a[1]), port(f.b[1])) if f.proto in (6, 17) else (0, 0)
            row = FlowRow(f.proto, texts[f.a[0]], ports[0], texts[f.b[0]], ports[1], start + f.first,
                          start + f.last, tuple(f.packets), tuple(f.octets), rec.label)
            cic.write(row)
            zeek.write(row)
        self.sessions += 1
        self.flows[rec.label] += len(rec.flows)
        self.packets[rec.label] += len(rec.data)
        return Session(rec.replay(addrs, port), start + rec.offsets, rec.wirelen, rec.label)

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        heap: list[tuple[int, int, Session]] = []
        start, scheduled, written = int(START.timestamp()) * 10**9, 0, 0
        names = [self.out / n for n in (CAPTURE, CIC_CSV, ZEEK_LOG)]
        with PcapWriter(names[0]) as w, CicWriter(names[1], self.benign) as cic, \
                ZeekWriter(names[2], self.benign) as zeek:
            data: list[bytes] = []
            ts: list[int] = []
            wire: list[int] = []
            while True:
                while scheduled < self.target and (not heap or start <= heap[0][0]):
                    s = self._session(start, cic, zeek)
                    heapq.heappush(heap, (int(s.ts[0]), self.sessions, s))
                    scheduled += len(s.data)
                    start += int(self.rng.expovariate(1 / self.gap_ns)) // 1000 * 1000
                if not heap:
                    break
                t, n, s = heapq.heappop(heap)
                data.append(s.data[s.pos])
                ts.append(t)
                wire.append(int(s.wirelen[s.pos]))
                s.pos += 1
                if s.pos < len(s.data):
                    heapq.heappush(heap, (int(s.ts[s.pos]), n, s))
                if len(data) >= BATCH:
                    w.write_many(data, np.array(ts), np.array(wire))
                    written += len(data)
                    data, ts, wire = [], [], []
            w.write_many(data, np.array(ts, np.int64), np.array(wire, np.int64))
            written += len(data)
            first_ts = int(START.timestamp()) * 10**9
            last_ts = ts[-1] if ts else first_ts
        seconds = time.perf_counter() - t0
        return {"packets": written, "sessions": self.sessions, "flows": sum(self.flows.values()),
                "hosts": self.hosts.count, "classes": len(self.packets), "benign": self.benign,
                "packets_per_class": dict(sorted(self.packets.items())),
                "flows_per_class": dict(sorted(self.flows.items())),
                "capture_seconds": round((last_ts - first_ts) / 1e9, 1),
                "pcap_bytes": names[0].stat().st_size, "label_bytes": {n.name: n.stat().st_size for n in names[1:]},
                "build_seconds": round(seconds, 2), "packets_per_s": round(written / seconds),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def build(out: str | Path, packets: int, sources: list[str] | None = None, rate: float = 1000.0, seed: int = 0,
          benign: str | None = None) -> dict[str, Any]:
    """Write ``capture.pcap`` (about ``packets`` packets: whole sessions) and its label files into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    recs = load_sources(sources or [str(SAMPLES)])
    loaded = time.perf_counter() - t0
    result = Builder(recs, out, packets, rate, seed, benign).run()
    result |= {"sources": sources or [str(SAMPLES)], "source_captures": len(recs), "load_seconds": round(loaded, 2),
               "rate": rate, "seed": seed, "files": {"capture": CAPTURE, "cic_csv": CIC_CSV, "zeek_log": ZEEK_LOG}}
    (out / "build.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="folder to write capture.pcap, its label files and build.json into")
    p.add_argument("--packets", type=int, default=10_000_000, help="packets to write, at least (whole sessions)")
    p.add_argument("--source", action="append", help="folder of <label>/*.pcap captures to replay (repeatable; "
                                                     "default samples/captures)")
    p.add_argument("--rate", type=float, default=1000.0, help="packets per second of the capture, on average")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--benign", help="class written BENIGN/Benign in the label files (default: the first class)")
    args = p.parse_args(argv)
    print(json.dumps(build(args.out, args.packets, args.source, args.rate, args.seed, args.benign)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
