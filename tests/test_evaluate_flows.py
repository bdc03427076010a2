"""Flow-level evaluation with nfstream on real pcaps: the sample captures as "real", and sets built from them
at test time whose flows differ in a known way (every TCP/UDP packet moved to a port pair of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nfstream")
scapy_all = pytest.importorskip("scapy.all")

from netdiff_lib.evaluate.flowrecords import load_flow_records, save_flow_records  # noqa: E402
from netdiff_lib.evaluate.flows import NOT_INSTALLED, FlowMeter, flow_section  # noqa: E402
from netdiff_lib.evaluate.report import flow_headline, flow_tables, markdown  # noqa: E402
from netdiff_lib.evaluate.sources import TraceSet, in_memory, load_trace_set  # noqa: E402
from netdiff_lib.stages.summary import summary_text  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "captures"
LABELS = ("dns", "http", "ssh", "tls")
ROWS = {"reference": "real_train", "synthetic": "synthetic"}


def _copy_samples(root: Path, per_class: int, split_ports: bool) -> int:
    """The first ``per_class`` captures of each class under ``root``; with ``split_ports`` every TCP/UDP packet
    gets a port pair of its own (so each is a one-packet flow).  Returns the number of TCP/UDP packets."""
    count = 0
    for label in LABELS:
        for i, src in enumerate(sorted((SAMPLES / label).glob("*.pcap"))[:per_class]):
            packets = scapy_all.rdpcap(str(src))
            for k, pkt in enumerate(packets):
                for layer in (scapy_all.TCP, scapy_all.UDP):
                    if pkt.haslayer(layer) and type(pkt[layer].underlayer) in (scapy_all.IP, scapy_all.IPv6):
                        count += 1
                        if split_ports:
                            pkt[layer].sport, pkt[layer].dport = 20000 + k, 40000 + 97 * i + k
                            del pkt[layer].chksum
            (root / label).mkdir(parents=True, exist_ok=True)
            scapy_all.wrpcap(str(root / label / src.name), packets)
    return count


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowsets")
    real_packets = _copy_samples(root / "real", 3, False)
    split_packets = _copy_samples(root / "split", 3, True)
    work = root / "work"
    work.mkdir()
    load = {name: load_trace_set(name, str(root / folder), work)
            for name, folder in (("real_train", "real"), ("real_test", "real"), ("synthetic", "split"))}
    return load, work, {"real": real_packets, "split": split_packets}


@pytest.fixture(scope="module")
def section(sets):
    load, work, _ = sets
    return flow_section(load, ROWS, FlowMeter(work, 1024), seed=0)


def test_identical_sets_are_the_floor(section):
    flows, _ = section
    assert flows["available"] and flows["rows"] == ROWS
    ref = flows["distances"]["reference"]
    assert ref["mean"]["macro"]["jsd"] == 0.0 and ref["mean"]["all"]["jsd"] == 0.0
    head = flow_headline(flows, "reference")
    assert head["flow_rf_ratio"] == 1.0 and head["flow_app_jsd"] == 0.0
    assert flows["sets"]["real_train"] == flows["sets"]["real_test"]


def test_real_loopback_tcp_opens_with_handshakes_and_closes(section):
    real = section[0]["sets"]["real_test"]["all"]
    # curl, ssh, openssl and dig +tcp over loopback: every TCP connection is recorded from its SYN to its FIN
    assert real["tcp_flows"] > 0 and real["handshake_share"] == 1.0 and real["syn_open_share"] == 1.0
    assert real["midstream_share"] == 0.0 and real["closed_share"] == 1.0
    assert real["one_packet_share"] == 0.0  # every request has its reply


def test_split_ports_give_one_packet_flows(sets, section):
    flows, frames = section
    _, _, packets = sets
    split = flows["sets"]["synthetic"]["all"]
    assert split["one_packet_share"] == 1.0 and split["packets_median"] == 1.0
    assert split["tcp_udp_flows"] == packets["split"]  # one flow per TCP/UDP packet (scapy counted them)
    assert split["handshake_share"] == 0.0 and split["midstream_share"] < 1.0  # the SYNs open flows of their own
    assert split["flows_per_trace"] == packets["split"] / split["traces"]
    assert flows["sets"]["real_test"]["all"]["tcp_udp_flows"] < packets["real"]
    dist = flows["distances"]["synthetic"]
    assert dist["packets_per_flow"]["all"]["jsd"] > 0.5 and dist["flows_per_trace"]["macro"]["jsd"] > 0.5
    assert dist["mean"]["macro"]["jsd"] > flows["distances"]["reference"]["mean"]["macro"]["jsd"]
    assert set(frames) == {"real_train", "real_test", "synthetic"}
    head = flow_headline(flows, "synthetic")
    assert head["flow_one_packet_share"] == 1.0 and head["flow_rf_ratio"] < 1.0


def test_report_tables_and_run_summary(section):
    flows, _ = section
    titles = [t.title for t in flow_tables(flows)]
    assert titles[0].startswith("Flows (nfstream")
    assert "Application mix (nDPI master protocol, share of flows)" in titles
    summary = {"evaluation": {row: flow_headline(flows, row) for row in ROWS}, "pcaps": {}}
    block = summary_text(summary).split("\nflows", 1)[1].splitlines()
    assert "1-pkt flows" in block[0] and "flow F1 ratio" in block[0]
    lines = {" ".join(line.split()[:3]): line.split()[3:] for line in block[1:3]}
    assert lines["synthetic vs real-test"][:2] == ["100.0%", "0.0%"]  # one-packet flows, handshakes
    ref = lines["real-train vs real-test"]
    assert ref[:2] == ["0.0%", "100.0%"] and ref[-1] == "1.00"  # ... and the flow F1 ratio


def test_first_packets_only(sets):
    load, work, _ = sets
    path = next(f for f, label in load["real_test"].files if label == "ssh")
    full = FlowMeter(work / "a").records(path)
    (work / "b").mkdir()
    cut = FlowMeter(work / "b", 5).records(path)
    assert sum(r["bidirectional_packets"] for r in full) > 5
    assert sum(r["bidirectional_packets"] for r in cut) == 5


def test_unreadable_pcap_is_reported_not_fatal(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 7)
    good = str(sorted((SAMPLES / "http").glob("*.pcap"))[0])
    df, failed = FlowMeter(tmp_path, 1024).table([(str(bad), "x"), (good, "http")])
    assert [f["file"] for f in failed] == [str(bad)] and failed[0]["cause"]
    assert len(df) and set(df["label"]) == {"http"} and set(df["trace"]) == {0}
    both = TraceSet("real_test", [], files=[(str(bad), "http"), (good, "http")])
    flows, _ = flow_section({"real_train": both, "real_test": both}, {"reference": "real_train"}, FlowMeter(tmp_path))
    assert flows["sets"]["real_test"]["all"]["traces"] == 1 and len(flows["sets"]["real_test"]["failed"]) == 1


def test_flow_records_round_trip(sets, tmp_path):
    load, work, _ = sets
    records = FlowMeter(work).records(load["real_test"].files[0][0])
    path = save_flow_records(tmp_path / "f" / "x.json", records)
    assert load_flow_records(path) == json.loads(json.dumps(records))
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(Exception, match="netdiff-flows"):
        load_flow_records(tmp_path / "other.json")


def test_sets_without_pcaps_are_not_measured(sets):
    load, work, _ = sets
    bare = in_memory("real_test", load["real_test"].traces[:2])
    bare.files = []  # traces without their pcaps
    flows, frames = flow_section({"real_train": load["real_train"], "real_test": bare}, {"reference": "real_train"},
                                 FlowMeter(work))
    assert not flows["available"] and "no pcaps or flow records" in flows["reason"] and frames == {}
    assert flow_tables(flows)[0].rows == [[flows["reason"]]]


def test_without_nfstream_the_report_says_so(tmp_path):
    """A Python where nfstream cannot be imported: ``netdiff evaluate`` still writes its report."""
    code = ("import sys; sys.modules['nfstream'] = None; from netdiff_lib.cli import main; "
            f"sys.exit(main(['evaluate', '--real-train', {str(SAMPLES / 'dns')!r}, '--real-test', "
            f"{str(SAMPLES / 'dns')!r}, '--out', {str(tmp_path / 'r')!r}, '--no-plots', '--no-compliance', '-q']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["flows"] == {"available": False, "reason": NOT_INSTALLED}
    assert "flow_one_packet_share" not in report["summary"]["reference"]
    assert NOT_INSTALLED in markdown(report)


def test_encoded_sets_use_the_flow_records_of_encode(tmp_path):
    """The pipeline's evaluation reads encode's flow records (the captures are gone); a capture without records
    counts as unreadable, and encode outputs without any records leave the section "not measured"."""
    import shutil

    from netdiff_lib import stages
    from netdiff_lib.evaluate.sources import encoded_trace_set

    captures = tmp_path / "captures"
    for label in ("dns", "http"):
        (captures / label).mkdir(parents=True)
        for pcap in sorted((SAMPLES / label).glob("*.pcap"))[:3]:
            shutil.copy(pcap, captures / label / pcap.name)
    items, _ = stages.list_inputs(str(captures), tmp_path / "manifest.json", shards=1, test_fraction=0.2, seed=0)
    enc = tmp_path / "enc"
    stages.encode_shard(str(captures), enc, items[0], test_fraction=0.2, seed=0, max_packets=1024)
    shutil.rmtree(captures)
    records = sorted((enc / "flows" / "test").rglob("*.json"))
    assert len(records) == 2 and len(list((enc / "flows" / "train").rglob("*.json"))) == 4
    records[0].unlink()
    sets = {name: encoded_trace_set(name, [enc], split) for name, split in (("real_train", "train"),
                                                                            ("real_test", "test"))}
    flows, _ = flow_section(sets, {"reference": "real_train"}, FlowMeter(tmp_path))
    test = flows["sets"]["real_test"]
    assert flows["available"] and test["all"]["traces"] == 1 and len(test["failed"]) == 1
    assert flows["sets"]["real_train"]["all"]["traces"] == 4 and not flows["sets"]["real_train"]["failed"]
    shutil.rmtree(enc / "flows")
    sets = {name: encoded_trace_set(name, [enc], split) for name, split in (("real_train", "train"),
                                                                            ("real_test", "test"))}
    assert flow_section(sets, {"reference": "real_train"}, FlowMeter(tmp_path))[0] == {
        "available": False, "reason": "not measured: no pcaps or flow records of the real-test traces"}


def test_only_real_test_measured(sets):
    """Real-test metered, real-train without pcaps: the set's figures, no row to compare, no failure."""
    load, work, _ = sets
    bare = in_memory("real_train", load["real_train"].traces)
    bare.files = []
    flows, _ = flow_section({"real_train": bare, "real_test": load["real_test"]}, {"reference": "real_train"},
                            FlowMeter(work))
    assert flows["available"] and flows["rows"] == {} and flows["not_measured"] == ["real_train"]
    assert flow_headline(flows, "reference") == {}
    assert flow_tables(flows)[0].title.startswith("Flows (nfstream")
