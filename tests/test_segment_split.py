"""One capture cut into traces by several workers (netdiff_lib.segment.split): the union of the workers' traces
and their counts equal one pass over the whole capture, in every mode, flows straddling a cut included (packets
beyond --max-packets after a worker stops reading are not counted)."""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_segment_fast import _index, _long_capture

from netdiff_lib.pcap import PcapFile
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.segment import SegmentStats, parse_traces, segment_capture
from netdiff_lib.segment.spec import BEYOND
from netdiff_lib.segment.split import part_range, record_boundary, segment_part

MODES = ["flow", "host", "window:7.5", "host+window:20"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, object]:
    path = tmp_path_factory.mktemp("split") / "long.pcap"
    packets = _long_capture(path, seed=5)
    return path, packets, _index(packets, seed=6)


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, ns) of every record, walked here from the file's start."""
    data, out, p = path.read_bytes(), [], 24
    while p + 16 <= len(data):
        sec, frac, cap, _ = struct.unpack_from("<IIII", data, p)
        out.append((p, sec * 10**9 + frac))
        p += 16 + cap
    return out


def _key(t: object) -> tuple:
    return t.label, t.meta["trace"], tuple(t.ts_ns.tolist()), t.matrix.tobytes(), tuple(t.index or ())


def test_cuts_fall_on_record_boundaries(capture: tuple) -> None:
    path, _, _ = capture
    records = dict(_records(path))
    pcap = PcapFile(path)
    for offset in range(24, pcap.size, 4999):
        pos, ts = record_boundary(pcap, offset)
        assert pos == min(p for p in [*records, pcap.size] if p >= offset) and ts == records.get(pos)
    ranges = [part_range(pcap, k, 7) for k in range(7)]
    assert ranges[0][0] == 24 and ranges[-1][1] == pcap.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges)) and len(set(ranges)) == 7


@pytest.mark.parametrize(("mode", "packed"), [*((m, False) for m in MODES), ("flow", True), ("host+window:20", True)])
def test_workers_together_give_the_one_pass_traces(capture: tuple, mode: str, packed: bool) -> None:
    """(``packed``: the workers give a trace store's packed rows, as the pipeline's encode step asks.)"""
    path, _, index = capture
    spec = parse_traces(mode, 3.0)
    pcap = PcapFile(path)
    records, straddle = _records(path), 0
    for max_packets, labels in ((None, None), (4, index)):
        kw = {"max_packets": max_packets, "label": "x", "labels": labels, "index": 0}
        whole_stats = SegmentStats()
        whole = sorted(_key(t) for t in segment_capture(path, spec, NETDIFFUSION, stats=whole_stats, **kw))
        for parts in (2, 3, 7):
            stats, got = SegmentStats(), []
            for k in range(parts):
                start, end = part_range(pcap, k, parts)
                inside = {ts for p, ts in records if start <= p < end}
                for t in segment_part(path, spec, NETDIFFUSION, part=k, parts=parts, stats=stats, packed=packed,
                                      **kw):
                    assert int(t.ts_ns[0]) in inside  # its owner holds its first packet
                    straddle += any(int(ts) not in inside for ts in t.ts_ns)
                    got.append(_key(t))
            assert sorted(got) == whole
            beyond, whole_beyond = stats.dropped.pop(BEYOND, 0), whole_stats.dropped.pop(BEYOND, 0)
            assert (stats.packets, stats.in_traces, stats.traces, stats.dropped) == (
                whole_stats.packets, whole_stats.in_traces, whole_stats.traces, whole_stats.dropped)
            assert beyond <= whole_beyond  # those after a worker stops reading are not counted
            whole_stats.dropped[BEYOND] = whole_beyond
            assert Counter(got) == Counter(whole)  # each trace given by one worker once
    assert straddle > 0  # traces that cross a cut are there


@pytest.mark.parametrize("mode", ["flow", "host+window:20", "window:7.5"])
def test_workers_give_batches_of_their_packed_traces(capture: tuple, mode: str) -> None:
    """``batched=True`` (the pipeline's encode step): each worker's traces a batch at a time, the same packed
    traces (rows, times, labels, meta, order) and counts as one at a time."""
    path, _, index = capture
    spec = parse_traces(mode, 3.0)
    for k in range(3):
        out = []
        for batched in (False, True):
            stats = SegmentStats()
            got = list(segment_part(path, spec, NETDIFFUSION, part=k, parts=3, stats=stats, packed=True,
                                    batched=batched, max_packets=4, labels=index, batch_size=53))
            out.append(([t for b in got for t in b.traces()] if batched else got, stats))
        (want, want_stats), (have, have_stats) = out
        assert len(want) > 0 and [(t.label, t.meta) for t in have] == [(t.label, t.meta) for t in want]
        for a, b in zip(have, want, strict=True):
            assert np.array_equal(a.counts, b.counts) and np.array_equal(a.data, b.data)
            assert np.array_equal(a.ts_ns, b.ts_ns)
        assert vars(have_stats) == vars(want_stats)


def test_counts_near_cuts_follow_the_traces_owner(tmp_path: Path) -> None:
    """Long flows that straddle the cuts and fill up: packets in traces counted once, by the trace's owner."""
    path = tmp_path / "long_flows.pcap"
    _long_capture(path, seed=7, parts=40)
    spec = parse_traces("flow", 60.0)  # 5-tuples come back: traces longer than the look-back
    whole = SegmentStats()
    want = sorted(_key(t) for t in segment_capture(path, spec, NETDIFFUSION, max_packets=3, label="x", stats=whole))
    stats = SegmentStats()
    got = sorted(_key(t) for k in range(4) for t in segment_part(path, spec, NETDIFFUSION, part=k, parts=4,
                                                                  max_packets=3, label="x", stats=stats))
    assert got == want and (stats.packets, stats.in_traces, stats.traces) == (whole.packets, whole.in_traces,
                                                                               whole.traces)
    assert 0 < stats.dropped[BEYOND] <= whole.dropped[BEYOND]
