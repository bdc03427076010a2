"""Evaluation from pcaps: field values against scapy as an oracle, and ``netdiff evaluate``/``split`` end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.cli import main
from netdiff_lib.evaluate.fields import PROTOCOLS, bin_port, trace_field_values
from netdiff_lib.nprint.encode import encode_pcap

scapy_all = pytest.importorskip("scapy.all")
Ether, IP, IPv6, TCP, UDP, ICMP, Raw = (scapy_all.Ether, scapy_all.IP, scapy_all.IPv6, scapy_all.TCP, scapy_all.UDP,
                                        scapy_all.ICMP, scapy_all.Raw)
IOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "iot-sentinel"


def write_pcap(path: Path, packets: list, start: float = 1_700_000_000.0, gap: float = 0.01) -> Path:
    for i, p in enumerate(packets):
        p.time = start + i * gap
    path.parent.mkdir(parents=True, exist_ok=True)
    scapy_all.wrpcap(str(path), packets)
    return path


def test_fields_match_scapy(tmp_path):
    opts = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 2))]
    pkts = [
        Ether() / IP(ttl=77, tos=0x28, flags="DF")
        / TCP(sport=1234, dport=8883, flags="SA", window=5000, options=opts),
        Ether() / IP(ttl=64) / UDP(sport=53, dport=33333) / Raw(b"x" * 40),
        Ether() / IP(ttl=128, flags="MF", frag=0) / ICMP(type=3, code=1),
        Ether() / IPv6(hlim=200, tc=5, fl=0x12345) / UDP(sport=547, dport=546) / Raw(b"y" * 10),
    ]
    built = [Ether(bytes(p)) for p in pkts]  # let scapy fill lengths and offsets
    trace = encode_pcap(write_pcap(tmp_path / "a.pcap", pkts), label="a").trace
    v = trace_field_values(trace)
    tcp, udp, ip6 = built[0][TCP], built[1][UDP], built[3][IPv6]
    assert v["ipv4_ttl"].tolist() == [77, 64, 128] and v["ipv4_tos"].tolist() == [0x28, 0, 0]
    assert v["ipv4_flags"].tolist() == [int(built[0][IP].flags), 0, int(built[2][IP].flags)] == [2, 0, 1]
    assert v["ipv4_tl"].tolist() == [(p[IP].len // 16) * 16 for p in built[:3]]
    assert v["ipv4_proto"].tolist() == [6, 17, 1]
    assert v["tcp_sprt"].tolist() == [bin_port(tcp.sport)] and v["tcp_dprt"].tolist() == [bin_port(tcp.dport)]
    assert v["tcp_doff"].tolist() == [tcp.dataofs] and v["tcp_flags"].tolist() == [int(tcp.flags)]
    assert v["tcp_wsize"].tolist() == [(5000 // 256) * 256]
    kinds = {"MSS": 2, "NOP": 1, "WScale": 3, "SAckOK": 4, "Timestamp": 8, "EOL": 0}
    assert v["tcp_opt_signature"].tolist() == [",".join(str(kinds[o[0]]) for o in tcp.options)]
    assert v["udp_sport"].tolist() == [53, 547] and v["udp_dport"].tolist() == [bin_port(33333), 546]
    assert v["udp_len"].tolist() == [(udp.len // 16) * 16, (built[3][UDP].len // 16) * 16]
    assert v["icmp_type"].tolist() == [3] and v["icmp_code"].tolist() == [1]
    assert v["ipv6_hl"].tolist() == [200] and v["ipv6_tc"].tolist() == [5] and v["ipv6_nh"].tolist() == [17]
    assert v["ipv6_fl"].tolist() == [0x12000] and v["ipv6_len"].tolist() == [(ip6.plen // 16) * 16]
    assert [PROTOCOLS[c] for c in v["protocol_mix"]] == ["ipv4/tcp", "ipv4/udp", "ipv4/icmp", "ipv6/udp"]
    assert v["log_iat"].tolist() == [int(np.floor(10 * np.log10(1 + 10_000)))] * 3


def class_pcaps(root: Path, label: str, n: int, seed: int) -> None:
    """``n`` small captures of a class: ``cam`` (TCP to 554) or ``plug`` (UDP to 9999)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        k = int(rng.integers(5, 15))
        if label == "cam":
            pkts = [Ether() / IP(ttl=64) / TCP(sport=int(rng.integers(40000, 60000)), dport=554, flags="PA")
                    / Raw(b"a" * int(rng.integers(1, 400))) for _ in range(k)]
        else:
            pkts = [Ether() / IP(ttl=255) / UDP(sport=9999, dport=9999) / Raw(b"b" * int(rng.integers(1, 100)))
                    for _ in range(k)]
        write_pcap(root / label / f"{label}-{seed}-{i}.pcap", pkts, gap=float(rng.uniform(0.001, 0.5)))


@pytest.fixture(scope="module")
def pcap_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    for name, n, seed in (("train", 5, 0), ("test", 3, 10)):
        class_pcaps(root / name, "cam", n, seed)
        class_pcaps(root / name, "plug", n, seed + 1)
    return root


def test_cli_evaluate_end_to_end(pcap_sets, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["evaluate", "--real-train", str(pcap_sets / "train"), "--real-test", str(pcap_sets / "test"),
               "--synthetic", str(pcap_sets / "train"), "--out", str(out), "--k-packets", "4", "--quiet"])
    assert rc == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["inputs"]["real_train"]["traces"] == 10
    assert doc["inputs"]["real_test"]["classes"] == {"cam": 3, "plug": 3}
    assert doc["summary"]["synthetic"]["exact_copy_rate"] == 1.0  # the "generator" copied its training set
    assert doc["summary"]["reference"]["rf_accuracy"] == 1.0 and doc["summary"]["synthetic"]["dt_accuracy"] == 1.0
    assert doc["summary"]["synthetic"]["fidelity_jsd_macro"] == doc["summary"]["reference"]["fidelity_jsd_macro"]
    assert set(doc["compliance"]) == {"reference", "synthetic"}
    assert all("available" in c for c in doc["compliance"].values())
    assert (out / "report.md").is_file() and (out / "report.html").stat().st_size > 10_000
    assert capsys.readouterr().out == ""
    if importlib.util.find_spec("nfstream"):  # flows measured: cam packets each have a port pair of their own
        assert doc["flows"]["available"], doc["flows"]
        cam = doc["flows"]["sets"]["real_test"]["per_class"]["cam"]
        assert cam["one_packet_share"] == 1.0 and cam["midstream_share"] == 1.0
        assert doc["flows"]["sets"]["real_test"]["per_class"]["plug"]["flows_per_trace"] == 1.0
        assert doc["summary"]["synthetic"]["flow_rf_ratio"] == 1.0  # synthetic = real-train
        assert "flow CDFs" in (out / "report.html").read_text()


def test_cli_evaluate_prints_the_run_summary_table(pcap_sets, tmp_path, capsys):
    """Not a JSON dump: the evaluation rows of netdiff run's summary, the numbers of report.json."""
    from netdiff_lib.stages.summary import evaluation_lines

    out = tmp_path / "report"
    rc = main(["evaluate", "--real-train", str(pcap_sets / "train"), "--real-test", str(pcap_sets / "test"),
               "--synthetic", str(pcap_sets / "train"), "-o", str(out), "--k-packets", "4", "--no-compliance",
               "--no-plots"])
    printed = capsys.readouterr().out
    assert rc == 0 and not printed.lstrip().startswith("{")
    summary = json.loads((out / "report.json").read_text())["summary"]
    assert printed.splitlines() == [*evaluation_lines(summary), f"report      {out / 'report.html'}"]
    assert "real-train vs real-test" in printed and "synthetic vs real-test" in printed


def test_cli_evaluate_reports_missing_input(tmp_path, capsys):
    rc = main(["evaluate", "--real-train", str(tmp_path / "nope"), "--real-test", str(tmp_path), "--out",
               str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "nope" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


def test_cli_split_links_stratified_folders(pcap_sets, tmp_path):
    out = tmp_path / "split"
    assert main(["split", str(pcap_sets / "train"), "--out", str(out), "--seed", "0", "-q"]) == 0
    doc = json.loads((out / "split.json").read_text())
    assert len(doc["train"]) == 8 and len(doc["test"]) == 2
    assert sorted(e["label"] for e in doc["test"]) == ["cam", "plug"]
    for entry in doc["train"] + doc["test"]:
        path = Path(entry["path"])
        assert path.is_symlink() and path.resolve() == Path(entry["uri"]).resolve()
        assert path.parent.name == entry["label"]
    again = tmp_path / "again"
    main(["split", str(pcap_sets / "train"), "--out", str(again), "--seed", "0", "-q"])
    assert json.loads((again / "split.json").read_text())["test"] == [
        {**e, "path": e["path"].replace(str(out), str(again))} for e in doc["test"]]
    assert main(["split", str(pcap_sets / "train"), "--out", str(out), "-q"]) == 2  # refuses to mix with old split


@pytest.mark.skipif(not IOT.is_dir(), reason="IoT Sentinel data set not present")
def test_iot_sentinel_split_is_by_file_and_stratified(tmp_path):
    from netdiff_lib.dataset import discover
    from netdiff_lib.split import split_captures

    caps = discover(str(IOT))
    train, test = split_captures(caps, 0.2, 0)
    assert {c.uri for c in train}.isdisjoint({c.uri for c in test}) and len(train) + len(test) == len(caps)
    labels = {c.label for c in caps}
    assert {c.label for c in test} == labels == {c.label for c in train}
    assert split_captures(caps, 0.2, 0) == (train, test)
