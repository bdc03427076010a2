"""The long-capture benchmark's builder (benchmarks/long_capture.py) at a small size: real packets, many hosts,
time order, and label files that netdiff's own readers take, labelling every flow by its replayed capture."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from benchmarks.long_capture import build
from benchmarks.replay import Recording, parse, shift_port
from benchmarks.trace_pcaps import cut
from netdiff_lib.labels import UNLABELLED, read_labels
from netdiff_lib.pcap import PcapFile, PcapWriter
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.segment import SegmentStats, parse_traces, segment_capture
from netdiff_lib.validate import validate_pcap

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("long")
    return out, build(out, 20_000, rate=2000.0, seed=3)


def _packets(path: Path) -> tuple[list[bytes], np.ndarray]:
    data, ts = [], []
    for b in PcapFile(path).batches():
        data += [b.packet(i) for i in range(len(b))]
        ts.append(b.ts_ns)
    return data, np.concatenate(ts)


def test_capture_is_long_in_time_order_with_many_hosts(built: tuple[Path, dict]) -> None:
    out, info = built
    data, ts = _packets(out / "capture.pcap")
    assert len(data) == info["packets"] >= 20_000 and info["sessions"] > 100
    assert (np.diff(ts) >= 0).all()
    addrs = {a for d in data for a in parse(d)[1:3]}
    assert len(addrs) == info["hosts"] > info["sessions"]  # every replay has hosts of its own
    spans: dict[tuple, list[int]] = {}
    for d, t in zip(data, ts.tolist(), strict=True):
        proto, src, dst, sport, dport = parse(d)
        spans.setdefault((proto, *sorted([(src, sport), (dst, dport)])), []).append(t)
    starts = sorted((v[0], v[-1]) for v in spans.values())
    overlapping = sum(b[0] < a[1] for a, b in pairwise(starts))
    assert overlapping > len(starts) // 4  # flows of different replays run at the same time


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_real_packets_with_good_checksums(built: tuple[Path, dict]) -> None:
    out, info = built
    report = validate_pcap(out / "capture.pcap", "tshark", scope="layers")
    assert report.packets == info["packets"]
    assert (report.malformed, report.expert_errors, report.bad_checksums) == (0, 0, 0)


def test_label_files_label_every_flow_by_its_class(built: tuple[Path, dict]) -> None:
    out, info = built
    benign = info["benign"]
    for name, word in (("capture.pcap_ISCX.csv", "BENIGN"), ("conn.log.labeled", "Benign")):
        index = read_labels(out / name)
        assert index.rows == info["flows"]
        stats = SegmentStats()
        traces = list(segment_capture(out / "capture.pcap", parse_traces("flow"), NETDIFFUSION, max_packets=None,
                                      labels=index, unlabelled="keep", stats=stats))
        got = Counter(t.label for t in traces)
        assert UNLABELLED not in got and stats.in_traces == info["packets"]
        assert got == Counter({word if k == benign else k: v for k, v in info["flows_per_class"].items()})
        packets = Counter()
        for t in traces:
            packets[t.label] += len(t)
        assert packets == Counter({word if k == benign else k: v for k, v in info["packets_per_class"].items()})
    assert read_labels(out / "capture.pcap_ISCX.csv").skipped == Counter({"blank rows": 3})


def test_replay_fixes_offloaded_checksums(tmp_path: Path) -> None:
    """The samples were recorded on loopback with offloaded (unfinished) TCP/UDP checksums: replays finish them."""
    src = REPO / "samples" / "captures" / "http" / "http_01.pcap"
    rec = Recording(src, "http")
    new = [bytes((10, 9, 8, i + 1)) if len(a) == 4 else a for i, a in enumerate(rec.addrs)]
    out = rec.replay(new, shift_port(1234))
    assert len(out) == len(rec.data) and {parse(d)[1] for d in out} <= {"10.9.8.1", "10.9.8.2"}
    assert {parse(d)[3] for d in out} != {parse(d)[3] for d in rec.data}  # the ephemeral port moved
    path = tmp_path / "replay.pcap"
    with PcapWriter(path) as w:
        w.write_many(out, rec.offsets + 10**18, rec.wirelen)
    assert validate_pcap(src, "builtin").bad_checksums == len(out)
    assert validate_pcap(path, "builtin").bad_checksums == 0


def test_cut_writes_the_flow_traces_netdiff_cuts(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = built
    res = cut(out / "capture.pcap", [tmp_path / "a", tmp_path / "b"], "flow", per_class=3,
              labels=[str(out / "conn.log.labeled")])
    assert res["unmatched_traces"] == 0 and all(sum(w.values()) == 3 * len(w) for w in res["written"])
    for pcap in (tmp_path / "a").rglob("*.pcap"):
        data, _ = _packets(pcap)
        keys = {(p[0], *sorted([(p[1], p[3]), (p[2], p[4])])) for p in map(parse, data)}
        assert len(keys) == 1  # one flow each


@pytest.mark.slow
def test_long_run_times_build_and_encode(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.long_run", "--work", str(tmp_path), "--packets", "3000",
                           "--train-budget", "0", "--format", "npz"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "long_run.json").read_text())
    for name in ("build", "encode_cic", "encode_zeek"):
        assert res[name]["rc"] == 0 and res[name]["peak_rss_mib"] > 10 and res[name]["seconds"] > 0
    assert res["build"]["packets"] >= 3000 and 0 < res["encode_cic"]["encoded_vs_pcap"] < 1
    assert res["encode_cic"]["files"] == res["build"]["flows"]  # one array file per labelled flow
