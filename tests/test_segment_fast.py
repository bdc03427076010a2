"""The vectorised trace builder against today's per-packet one (tests/segment_reference.py), on long captures made
at test time: every mode, idle splits, max-packets cuts, labels (dropped or kept when missing), -O index values,
small batches (state carried across batches) and captures whose times go backwards. Traces, their order and the
counts must be the same."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import numpy as np
import pytest
from long_capture import NS, Packet, flows, merge
from segment_reference import reference_segment_capture

from netdiff_lib.labels.base import LabelIndex, addr_int, flow_key
from netdiff_lib.pcap import PcapWriter
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.segment import SegmentStats, parse_traces, segment_capture

T0 = 1_700_000_000 * NS
HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.1.7", "192.168.1.8", "8.8.8.8", "1.1.1.1", "93.184.216.34",
         "172.16.5.5"]
SAMPLES = [f"{kind}/{kind}_{i:02d}.pcap" for kind in ("dns", "http", "icmp", "ssh", "tls") for i in range(1, 11)]
MODES = ["file", "flow", "host", "window:7.5", "host+window:20"]


def _mapper(rng: random.Random) -> callable:
    """Rewrite a part's IPv4 addresses: each address it uses becomes one of HOSTS (both directions alike)."""
    table: dict[bytes, bytes] = {}

    def change(data: bytes) -> bytes:
        if data[12:14] != b"\x08\x00":
            return data
        out = bytearray(data)
        for at in (26, 30):
            old = bytes(data[at:at + 4])
            if old not in table:
                table[old] = ipaddress.IPv4Address(rng.choice(HOSTS)).packed
            out[at:at + 4] = table[old]
        return bytes(out)

    return change


def _long_capture(path: Path, seed: int, parts: int = 90) -> list[Packet]:
    rng = random.Random(seed)
    plan = [(rng.choice(SAMPLES), T0 + int(rng.uniform(0, 400) * NS), _mapper(rng)) for _ in range(parts)]
    return merge(path, plan)


def _shuffled(path: Path, packets: list[Packet], seed: int) -> None:
    """The packets in file order with one in ten moved back or forward in time by up to 8 s."""
    rng = random.Random(seed)
    with PcapWriter(path, nanosecond=True) as w:
        for p in packets:
            w.write(p.data, p.ts + (int(rng.uniform(-8, 8) * NS) if rng.random() < 0.1 else 0))


def _index(packets: list[Packet], seed: int) -> LabelIndex:
    """Labels for about half the flows (an interval over part of each, sometimes a second one overlapping it)
    and for some hosts over some hours."""
    rng = random.Random(seed)
    index = LabelIndex("test labels", "test")
    for ps in flows(packets).values():
        if rng.random() < 0.5:
            continue
        p, first, last = ps[0], ps[0].ts, ps[-1].ts
        key = flow_key(p.proto, addr_int(p.src), p.sport, addr_int(p.dst), p.dport)
        index.add_flow(key, first, first + (last - first) * 2 // 3, rng.choice(["benign", "dos"]))
        if rng.random() < 0.3:
            index.add_flow(key, (first + last) // 2, last + NS, "scan")
    for host in HOSTS[::2]:
        start = T0 + int(rng.uniform(0, 200) * NS)
        index.add_host(addr_int(host), start, start + 150 * NS, rng.choice(["camera", "benign"]))
    return index.finish()


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("fast")
    ordered = tmp / "long.pcap"
    packets = _long_capture(ordered, seed=1)
    shuffled = tmp / "shuffled.pcap"
    _shuffled(shuffled, packets, seed=2)
    return {"ordered": ordered, "shuffled": shuffled, "index": _index(packets, seed=3), "n": len(packets)}


def _both(path: Path, mode: str, **kw: object) -> tuple[tuple[list, SegmentStats], tuple[list, SegmentStats]]:
    out = []
    spec = parse_traces(mode, kw.pop("flow_timeout", 120.0))
    for build in (reference_segment_capture, segment_capture):
        stats = SegmentStats()
        out.append((list(build(path, spec, NETDIFFUSION, stats=stats, **kw)), stats))
    return out[0], out[1]


def _same(expected: tuple[list, SegmentStats], got: tuple[list, SegmentStats]) -> None:
    (want, want_stats), (have, have_stats) = expected, got
    assert [(t.label, t.meta, len(t)) for t in have] == [(t.label, t.meta, len(t)) for t in want]
    for a, b in zip(have, want, strict=True):
        assert np.array_equal(a.ts_ns, b.ts_ns) and np.array_equal(a.matrix, b.matrix)
        assert a.index == b.index and a.source == b.source
    assert (have_stats.packets, have_stats.in_traces) == (want_stats.packets, want_stats.in_traces)
    assert have_stats.traces == want_stats.traces and have_stats.dropped == want_stats.dropped


@pytest.mark.parametrize("which", ["ordered", "shuffled"])
@pytest.mark.parametrize("mode", MODES)
def test_fast_builder_gives_todays_traces(captures: dict, mode: str, which: str) -> None:
    path, index = captures[which], captures["index"]
    seen = 0
    for max_packets in (None, 4):
        for labels, unlabelled in ((None, "drop"), (index, "drop"), (index, "keep")):
            for batch_size, timeout in ((16384, 120.0), (37, 3.0)):
                want, got = _both(path, mode, flow_timeout=timeout, max_packets=max_packets, label="x",
                                  labels=labels, unlabelled=unlabelled, batch_size=batch_size,
                                  index=0 if batch_size == 37 else None)
                _same(want, got)
                seen += len(want[0])
    assert seen >= 24 and captures["n"] > 2000


@pytest.mark.parametrize("mode", MODES)
def test_batched_traces_are_the_packed_traces(captures: dict, mode: str) -> None:
    """``batched=True`` (a batch's traces as one PackedTraces, their rows held per batch meanwhile) gives the
    packed traces one at a time: same rows, times, labels, meta, order and counts."""
    seen = 0
    for which, max_packets, labels, batch_size, timeout in (("ordered", None, None, 16384, 120.0),
                                                            ("shuffled", 4, captures["index"], 37, 3.0),
                                                            ("ordered", 4, captures["index"], 37, 120.0)):
        spec = parse_traces(mode, timeout)
        out = []
        for batched in (False, True):
            stats = SegmentStats()
            got = list(segment_capture(captures[which], spec, NETDIFFUSION, stats=stats, max_packets=max_packets,
                                       label="x", labels=labels, unlabelled="keep", batch_size=batch_size,
                                       packed=True, batched=batched))
            out.append(([t for b in got for t in b.traces()] if batched else got, stats))
        (want, want_stats), (have, have_stats) = out
        assert [(t.label, t.meta, t.source) for t in have] == [(t.label, t.meta, t.source) for t in want]
        for a, b in zip(have, want, strict=True):
            assert np.array_equal(a.ts_ns, b.ts_ns) and np.array_equal(a.counts, b.counts)
            assert np.array_equal(a.data, b.data) and a.counts.dtype == b.counts.dtype
        assert vars(have_stats) == vars(want_stats)
        seen += len(want)
    assert seen >= 6


def test_fast_builder_splits_and_cuts_really_happen(captures: dict) -> None:
    """The differential runs cover what they should: idle splits, late packets, several labels."""
    (flows_120, _), _ = _both(captures["ordered"], "flow", max_packets=None, label="x")
    (flows_3, _), _ = _both(captures["ordered"], "flow", flow_timeout=3.0, max_packets=None, label="x")
    assert len(flows_3) > len(flows_120)
    (_, late), _ = _both(captures["shuffled"], "window:7.5", max_packets=None, label="x")
    assert late.dropped["earlier than a window already closed"] > 0
    (_, lab), _ = _both(captures["ordered"], "host", max_packets=None, labels=captures["index"])
    assert len(lab.traces) >= 3 and lab.dropped["unlabelled (--unlabelled drop)"] > 0


def test_index_values_follow_their_packets(captures: dict) -> None:
    """-O 0 values are the source addresses of the trace's own packets, also with many small batches (the
    per-packet builder cached them under ``id(batch)``, which Python reuses, and gave stale values)."""
    traces = list(segment_capture(captures["ordered"], parse_traces("flow", 3.0), NETDIFFUSION, max_packets=None,
                                  labels=captures["index"], batch_size=37, index=0))
    assert len(traces) > 50
    for t in traces:
        proto, pair = t.meta["trace"].split(" ", 1)
        ends = {(e.rsplit(":", 1)[0] if proto in ("tcp", "udp") else e).strip("[]") for e in pair.split(" <-> ")}
        assert set(t.index) <= ends, (t.meta, t.index)


def test_label_lookups_on_arrays_match_one_by_one() -> None:
    """_Table.find_many (the builders' label lookups) gives find's answers: latest start first, at most 64 back."""
    rng = random.Random(4)
    index = LabelIndex("random", "test")
    for key in range(40):
        for _ in range(rng.choice([1, 3, 100])):  # 100: more overlapping intervals than find looks back over
            start = rng.randrange(0, 1000)
            index.add_host(key, start, start + rng.randrange(0, 400), rng.choice("abcd"))
    index.finish()
    keys = [rng.randrange(-5, 45) for _ in range(3000)]
    times = [rng.randrange(-50, 1500) for _ in keys]
    hashed = np.array([hash(k) for k in keys], np.int64)
    got = index.hosts.find_many(hashed, np.array(times, np.int64)).tolist()
    assert got == [index.hosts.find(hash(k), t) for k, t in zip(keys, times, strict=True)]
    assert len(set(got)) > 3 and -1 in got
