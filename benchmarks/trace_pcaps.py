"""Real traces cut from a long capture, written as one pcap each (``<label>/<label>_<n>.pcap``), for evaluation.

``netdiff evaluate`` takes labelled pcaps, one trace each; the traces a generator learns from a long capture are
flows or windows of it. :func:`cut` runs netdiff's own cutting (:func:`netdiff_lib.segment.segment_capture`,
``--traces flow`` or ``window:S``, with the capture's label or a label file) and keeps a seeded sample of at most
``per_class`` traces per class for each output folder (disjoint), holding only their packet times; a second pass
over the capture then finds each kept trace's own packets (same flow or window, same times) and writes them
unchanged. Window traces are matched for single-label captures (``label``), flows with labels too.

    python -m benchmarks.trace_pcaps CAPTURE --out DIR [DIR2 ...] --traces flow [--labels FILE] [--per-class N]
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.replay import FLOW_PROTOS, parse
from netdiff_lib.labels.base import addr_int, flow_key, proto_number
from netdiff_lib.pcap import PcapFile, PcapWriter
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.segment.spec import safe_name


@dataclass
class Kept:
    label: str
    key: object  # flow key or window index
    need: Counter  # packet times still to find
    packets: list[tuple[int, bytes, int]] = field(default_factory=list)  # (ts, data, wirelen)


def _flow_of(text: str) -> tuple:
    """The flow key of a flow trace's description, ``tcp 10.0.0.1:5 <-> [fe80::1]:6`` or ``icmp a <-> b``."""
    name, a, _, b = text.split(" ")
    proto = proto_number(name)

    def endpoint(e: str) -> tuple[int, int]:
        if proto not in (6, 17):
            return addr_int(e.strip("[]")), 0
        host, _, port = e.rpartition(":")
        return addr_int(host.strip("[]")), int(port)

    return flow_key(proto, *endpoint(a), *endpoint(b))


def _packet_key(data: bytes) -> tuple | None:
    try:
        proto, src, dst, sport, dport = parse(data)
    except (ValueError, struct.error, IndexError):
        return None
    if proto not in FLOW_PROTOS:  # what the encoder leaves out
        return None
    return flow_key(proto, addr_int(src), sport, addr_int(dst), dport)


def _sample(capture: Path, mode: str, parts: int, per_class: int | None, label: str | None, labels: list[str],
            seed: int, max_packets: int) -> tuple[list[list[Kept]], Counter]:
    """Reservoir samples of the capture's traces per class, split into ``parts`` disjoint lists."""
    from netdiff_lib.labels import read_label_files
    from netdiff_lib.segment import parse_traces, segment_capture

    rng = random.Random(seed)
    want = None if per_class is None else per_class * parts
    pools: dict[str, list[Kept]] = defaultdict(list)
    seen: Counter = Counter()
    index = read_label_files(labels) if labels else None
    for t in segment_capture(capture, parse_traces(mode), NETDIFFUSION, max_packets=max_packets, label=label,
                             labels=index):
        text = t.meta["trace"]
        key = _flow_of(text) if mode == "flow" else int(text.split()[1])
        item = Kept(str(t.label), key, Counter(t.ts_ns.tolist()))
        seen[item.label] += 1
        pool = pools[item.label]
        if want is None or len(pool) < want:
            pool.append(item)
        elif (j := rng.randrange(seen[item.label])) < want:
            pool[j] = item
    out: list[list[Kept]] = [[] for _ in range(parts)]
    for lab in sorted(pools):
        rng.shuffle(pools[lab])
        for i, item in enumerate(pools[lab]):
            out[i % parts].append(item)
    return out, seen


def head(capture: Path, n: int, out: Path) -> Path:
    """The first ``n`` packets of ``capture`` as the pcap ``out``."""
    with PcapWriter(out, nanosecond=True) as w:
        for b in PcapFile(capture).batches(max_packets=n):
            w.write_many([b.packet(i) for i in range(len(b))], b.ts_ns, b.wirelen)
    return out


def cut(capture: str | Path, outs: list[str | Path], mode: str = "flow", per_class: int | None = None,
        label: str | None = None, labels: list[str] | None = None, seed: int = 0,
        max_packets: int = 1024) -> dict[str, Any]:
    """Write a sample of the capture's traces (see the module doc) into the folders ``outs``; returns counts."""
    capture = Path(capture)
    if mode != "flow" and not mode.startswith("window:"):
        raise ValueError(f"--traces {mode}: flow or window:SECONDS")
    if mode != "flow" and labels:
        raise ValueError("window traces are matched for single-label captures only (label, not labels)")
    parts, seen = _sample(capture, mode, len(outs), per_class, label, labels or [], seed, max_packets)
    window_ns = None if mode == "flow" else int(float(mode.split(":")[1]) * 1e9)
    by_ts: dict[int, list[Kept]] = defaultdict(list)
    for item in (k for part in parts for k in part):
        for ts in item.need:
            by_ts[ts].append(item)
    t0 = None
    for batch in PcapFile(capture).batches():
        for i in range(len(batch)):
            ts = int(batch.ts_ns[i])
            t0 = ts if t0 is None else t0
            cands = by_ts.get(ts)
            if not cands:
                continue
            data = batch.packet(i)
            key = _packet_key(data) if window_ns is None else (ts - t0) // window_ns
            if key is None:
                continue
            for item in cands:
                if item.key == key and item.need[ts] > 0 and (window_ns is None or _packet_key(data) is not None):
                    item.need[ts] -= 1
                    item.packets.append((ts, data, int(batch.wirelen[i])))
                    break
    written, short = [], 0
    for out, part in zip(outs, parts, strict=True):
        n: Counter = Counter()
        for item in part:
            short += sum(item.need.values()) > 0
            name = safe_name(item.label)
            n[name] += 1
            path = Path(out) / name / f"{capture.stem}_{n[name]:05d}.pcap"
            path.parent.mkdir(parents=True, exist_ok=True)
            with PcapWriter(path, nanosecond=True) as w:
                for ts, data, wire in item.packets:
                    w.write(data, ts, wire)
        written.append(dict(sorted(n.items())))
    return {"capture": str(capture), "traces": mode, "traces_per_class": dict(sorted(seen.items())),
            "written": written, "unmatched_traces": short}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("capture", help="a capture, or a folder of <label>/*.pcap captures (each cut with its label)")
    p.add_argument("--out", nargs="+", required=True, help="folders to write (disjoint samples)")
    p.add_argument("--traces", default="flow", help="flow or window:SECONDS")
    p.add_argument("--per-class", type=int, help="traces per class and folder at most (default: all)")
    p.add_argument("--label", help="the capture's class (without --labels)")
    p.add_argument("--labels", action="append", help="label file(s), as netdiff encode --labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-packets", type=int, default=1024)
    p.add_argument("--head", type=int, help="cut only the first N packets of the capture")
    args = p.parse_args(argv)
    if Path(args.capture).is_dir():
        results = [cut(f, args.out, args.traces, args.per_class, f.parent.name, None, args.seed, args.max_packets)
                   for f in sorted(Path(args.capture).glob("*/*.pcap"))]
        print(json.dumps(results))
        return 0
    with tempfile.TemporaryDirectory(prefix="netdiff-cut-") as tmp:
        capture = head(Path(args.capture), args.head, Path(tmp) / "head.pcap") if args.head else args.capture
        result = cut(capture, args.out, args.traces, args.per_class, args.label, args.labels, args.seed,
                     args.max_packets)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
