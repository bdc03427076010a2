"""Trace builders (``--traces file|flow|host|window:S|host+window:S``) on long captures merged from the samples."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from long_capture import NS, flows, merge, rewrite_v4

from netdiff_lib.cli import main
from netdiff_lib.errors import ConfigError
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.segment import SegmentStats, parse_traces, segment_capture
from netdiff_lib.segment.spec import BEYOND, LATE, NO_LOCAL
from netdiff_lib.trace import load_trace

T0 = 1_700_000_000 * NS
PARTS = [("dns/dns_01.pcap", T0), ("http/http_02.pcap", T0 + 10 * NS), ("ssh/ssh_01.pcap", T0 + 20 * NS),
         ("tls/tls_01.pcap", T0 + 30 * NS), ("icmp/icmp_01.pcap", T0 + 40 * NS)]


@pytest.fixture
def long_capture(tmp_path: Path) -> tuple[Path, list]:
    path = tmp_path / "long.pcap"
    return path, merge(path, PARTS)


def _cut(path: Path, mode: str, max_packets: int | None = None, **kw: object) -> tuple[list, SegmentStats]:
    stats = SegmentStats()
    spec = parse_traces(mode, **kw)
    traces = list(segment_capture(path, spec, NETDIFFUSION.full, max_packets=max_packets, label="x", stats=stats))
    return traces, stats


@pytest.mark.parametrize("bad", ["flows", "window", "window:0", "window:-3", "flow:30", "host+window:x"])
def test_bad_trace_modes_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="--traces"):
        parse_traces(bad)
    with pytest.raises(ConfigError, match="--flow-timeout"):
        parse_traces("flow", flow_timeout=0)


def test_flow_traces_are_the_capture_flows(long_capture: tuple[Path, list]) -> None:
    path, packets = long_capture
    expected = flows(packets)
    traces, stats = _cut(path, "flow")
    assert len(traces) == len(expected) and stats.in_traces == len(packets) == stats.packets
    got = sorted(tuple(t.ts_ns.tolist()) for t in traces)
    assert got == sorted(tuple(p.ts for p in ps) for ps in expected.values())
    assert all(np.all(np.diff(t.ts_ns) >= 0) for t in traces)
    assert all(t.label == "x" and t.meta["traces"] == "flow" for t in traces)


def test_flow_idle_timeout_splits_a_flow(tmp_path: Path) -> None:
    path = tmp_path / "gap.pcap"
    packets = merge(path, [("ssh/ssh_01.pcap", T0), ("ssh/ssh_01.pcap", T0 + 300 * NS)])  # same 5-tuple again
    assert len(flows(packets)) == 1
    split, _ = _cut(path, "flow", flow_timeout=120)
    whole, _ = _cut(path, "flow", flow_timeout=1000)
    assert [len(t) for t in split] == [len(packets) // 2] * 2 and [len(t) for t in whole] == [len(packets)]


def test_max_packets_cuts_each_flow_and_counts_the_rest(long_capture: tuple[Path, list]) -> None:
    path, packets = long_capture
    sizes = [len(ps) for ps in flows(packets).values()]
    traces, stats = _cut(path, "flow", max_packets=5)
    assert sorted(len(t) for t in traces) == sorted(min(n, 5) for n in sizes)
    assert stats.dropped[BEYOND] == sum(max(n - 5, 0) for n in sizes)
    assert stats.in_traces + stats.dropped[BEYOND] == len(packets)


def test_window_traces_cut_a_flow_that_straddles_the_window_edge(tmp_path: Path) -> None:
    path = tmp_path / "straddle.pcap"
    packets = merge(path, [("ssh/ssh_01.pcap", T0)])
    span = (packets[-1].ts - packets[0].ts) / NS
    window = span / 2.5  # the one flow's packets fall in two or three windows
    traces, stats = _cut(path, f"window:{window!r}")
    edges = [(p.ts - packets[0].ts) // round(window * NS) for p in packets]
    assert [len(t) for t in traces] == [n for _, n in sorted(Counter(edges).items())] and len(traces) >= 2
    assert np.concatenate([t.ts_ns for t in traces]).tolist() == [p.ts for p in packets]
    flow_traces, _ = _cut(path, "flow")
    assert len(flow_traces) == 1 and stats.in_traces == len(packets)


def test_host_traces_follow_the_local_host_rule(tmp_path: Path) -> None:
    path = tmp_path / "hosts.pcap"

    def lan(data: bytes) -> bytes:  # ICMP between two local hosts: requests 10.0.0.1 -> 10.0.0.2
        return rewrite_v4(data, *(("10.0.0.1", "10.0.0.2") if data[34] == 8 else ("10.0.0.2", "10.0.0.1")))

    packets = merge(path, [("icmp/icmp_01.pcap", T0, lan),
                           ("dns/dns_02.pcap", T0 + NS, lambda d: rewrite_v4(d, "192.168.1.7", "192.168.1.7")),
                           ("http/http_01.pcap", T0 + 2 * NS, lambda d: rewrite_v4(d, "198.51.100.1", "8.8.8.8"))])
    n_icmp, n_dns, n_http = (sum(p.part == i for p in packets) for i in range(3))
    traces, stats = _cut(path, "host")
    by_host = {t.meta["trace"]: len(t) for t in traces}
    assert by_host == {"host 10.0.0.1": n_icmp, "host 10.0.0.2": n_icmp, "host 192.168.1.7": n_dns}
    assert stats.dropped[NO_LOCAL] == n_http and stats.in_traces == n_icmp + n_dns
    public, pstats = _cut(path, "host", local_nets=("198.51.100.0/24",))
    assert {t.meta["trace"]: len(t) for t in public} == {"host 198.51.100.1": n_http}
    assert pstats.dropped[NO_LOCAL] == n_icmp + n_dns


def test_host_window_traces(tmp_path: Path) -> None:
    path = tmp_path / "hw.pcap"
    merge(path, [("dns/dns_01.pcap", T0, lambda d: rewrite_v4(d, "10.1.1.1", "10.1.1.1")),
                 ("dns/dns_02.pcap", T0 + 100 * NS, lambda d: rewrite_v4(d, "10.1.1.1", "10.1.1.1"))])
    traces, _ = _cut(path, "host+window:50")
    assert [t.meta["trace"] for t in traces] == ["host 10.1.1.1, window 0", "host 10.1.1.1, window 2"]


def test_packets_earlier_than_a_closed_window_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "late.pcap"
    packets = merge(path, [("http/http_01.pcap", T0)])
    from netdiff_lib.pcap import PcapWriter

    with PcapWriter(path, nanosecond=True) as w:  # the last packet written first, far in the future
        w.write(packets[-1].data, packets[-1].ts + 500 * NS)
        for p in packets:
            w.write(p.data, p.ts)
    traces, stats = _cut(path, "window:10")
    assert stats.dropped[LATE] == len(packets) and [len(t) for t in traces] == [1]


def test_encode_cli_writes_traces_per_label_and_counts(long_capture: tuple[Path, list], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    path, packets = long_capture
    folder = tmp_path / "cls"
    folder.mkdir()
    path.rename(folder / "mixed_01.pcap")
    out = tmp_path / "out"
    assert main(["encode", str(folder), "-o", str(out), "-q", "--traces", "flow", "--max-packets", "8",
                 "--format", "npz"]) == 0
    err = capsys.readouterr().err
    files = sorted(out.rglob("*.npz"))
    assert len(files) == len(flows(packets)) and {f.parent.name for f in files} == {"mixed"}
    assert f"traces: {len(files)}" in err and f"  mixed: {len(files)}" in err
    beyond = sum(max(len(ps) - 8, 0) for ps in flows(packets).values())
    assert f"{BEYOND}: {beyond}" in err
    t = load_trace(files[0])
    assert t.label == "mixed" and t.layout == NETDIFFUSION and t.meta["trace"].split()[0] in ("tcp", "udp", "icmp")
    first_packets = {tuple(p.ts for p in ps[:8]) for ps in flows(packets).values()}
    assert {tuple(load_trace(f).ts_ns.tolist()) for f in files} == first_packets


def test_file_mode_says_how_many_packets_the_cut_left_out(long_capture: tuple[Path, list], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    path, packets = long_capture
    assert main(["encode", str(path), "-o", str(tmp_path / "o"), "-q", "--max-packets", "50"]) == 0
    err = capsys.readouterr().err
    assert "packets kept: 50" in err and f"{BEYOND}: {len(packets) - 50}" in err
    assert len(load_trace(tmp_path / "o" / "long.npz")) == 50


def test_netdiffusion_mode_needs_whole_files(long_capture: tuple[Path, list], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    path, _ = long_capture
    code = main(["encode", str(path), "-o", str(tmp_path / "o"), "--traces", "flow", "--mode", "netdiffusion"])
    assert code == 2 and "--mode netdiffusion" in capsys.readouterr().err


def test_encode_shard_writes_a_trace_store_per_split(tmp_path: Path) -> None:
    from netdiff_lib.stages import encode_shard, plan_inputs
    from netdiff_lib.store import open_store

    root = tmp_path / "in"
    for label, parts in (("a", PARTS[:2]), ("b", PARTS[2:])):
        (root / label).mkdir(parents=True)
        for i in range(2):
            merge(root / label / f"{label}_{i}.pcap", parts)
    plan = plan_inputs(str(root), 1, 0.5, 0)
    summary = encode_shard(str(root), tmp_path / "enc", {"index": 0, "count": 1}, test_fraction=0.5, seed=0,
                           max_packets=1024, traces={"traces": "flow", "flow_timeout": 60.0})
    assert not list((tmp_path / "enc" / "nprint").rglob("*.npz"))
    stores = {split: open_store(tmp_path / "enc" / "nprint" / split) for split in ("train", "test")}
    assert {src for st in stores.values() for src in st.sources} == {c.dest for c in plan.captures}
    assert summary["traces"]["mode"] == "flow"
    assert sum(summary["traces"]["per_class"].values()) == sum(len(st) for st in stores.values())
    assert {(split, src.split("/")[0], lab) for split, st in stores.items()
            for src, lab in zip(st.sources, st.labels, strict=True)} == {
        (c.split, c.split, c.label) for c in plan.captures}


def test_run_passes_trace_options_to_the_pipeline(tmp_path: Path) -> None:
    from netdiff_lib.cli import build_parser
    from netdiff_lib.cli.run import arguments

    args = build_parser().parse_args(["run", "--input", str(tmp_path), "-o", str(tmp_path / "o"),
                                      "--traces", "window:30", "--flow-timeout", "60", "--unlabelled", "keep"])
    given = arguments(args)
    assert (given["traces"], given["flow_timeout"], given["unlabelled"], given["labels_uri"]) == (
        "window:30", 60.0, "keep", "")


def test_csv_output_keeps_source_addresses(tmp_path: Path) -> None:
    """nPrint CSVs of flow traces carry each packet's source address in the index column, as file mode does."""
    path = tmp_path / "v6.pcap"
    packets = merge(path, [("icmp/icmp_02.pcap", T0)])
    out = tmp_path / "out"
    assert main(["encode", str(path), "-o", str(out), "-q", "--traces", "flow", "--format", "csv"]) == 0
    got = sorted(ln.split(",", 1)[0] for f in out.rglob("*.nprint") for ln in f.read_text().splitlines()[1:])
    assert got == sorted(p.src for p in packets) and "::1" in got


def test_trace_parameters_reach_the_encode_step(tmp_path: Path) -> None:
    """The pipeline's trace and label parameters, typed, wired into the encode step of the ParallelFor."""
    import yaml

    from netdiff_lib.kfp_pipelines import compile_pipeline

    spec = next(yaml.safe_load_all(compile_pipeline("netdiff", tmp_path / "p.yaml").read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    expected = {"traces": ("STRING", "file"), "flow_timeout": ("NUMBER_DOUBLE", 120.0), "local_net": ("STRING", ""),
                "labels_uri": ("STRING", ""), "labels_tz": ("STRING", "auto"), "unlabelled": ("STRING", "drop"),
                "labels_keep_going": ("BOOLEAN", False)}
    assert {k: (params[k]["parameterType"], params[k]["defaultValue"]) for k in expected} == expected
    dags = [c["dag"] for c in spec["components"].values() if "dag" in c]
    encode = next(d["tasks"]["encode"] for d in dags if "encode" in d["tasks"])
    wired = encode["inputs"]["parameters"]
    assert {k: wired[k]["componentInputParameter"] for k in expected} == {k: f"pipelinechannel--{k}" for k in expected}


def test_traces_come_out_while_the_capture_is_read(tmp_path: Path) -> None:
    """One pass with bounded state: a flow idle for longer than the timeout is written out (and its state
    dropped) before the rest of the capture is read."""
    path = tmp_path / "stream.pcap"
    packets = merge(path, [("ssh/ssh_01.pcap", T0), ("dns/dns_01.pcap", T0 + 600 * NS),
                           ("tls/tls_01.pcap", T0 + 1200 * NS)])
    stats = SegmentStats()
    seen = []
    for trace in segment_capture(path, parse_traces("flow"), NETDIFFUSION, max_packets=None, label="x",
                                 stats=stats, batch_size=8):
        seen.append((trace.meta["trace"], stats.packets))
    first_name, read_then = seen[0]
    assert first_name.startswith("tcp ") and read_then < len(packets) // 2
    assert stats.packets == len(packets) and len(seen) == len(flows(packets))


@pytest.mark.parametrize("traces", ["flow", "file"])
def test_captures_of_the_same_name_in_two_folders_keep_all_their_traces(long_capture: tuple[Path, list],
                                                                         tmp_path: Path, traces: str) -> None:
    path, packets = long_capture
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "cap.pcap").write_bytes(path.read_bytes())
    out = tmp_path / "out"
    assert main(["encode", str(tmp_path / "in"), "-o", str(out), "-q", "--traces", traces, "--format", "npz"]) == 0
    files = sorted(out.rglob("*.npz"))
    per_capture = len(flows(packets)) if traces == "flow" else 1
    assert len(files) == 2 * per_capture
    assert sum(len(load_trace(f)) for f in files) == 2 * len(packets)
