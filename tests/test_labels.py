"""Label files (``--labels``) of CIC-IDS2017/2018, UNSW-NB15, IoT-23 and plain host CSVs, with their quirks, written
at test time for the flows of long captures merged from the project's samples."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from long_capture import NS, Packet, flows, merge, rewrite_v4

from benchmarks.labelfiles import ADT, CIC17_HEADER, cic17_time, zeek_head
from netdiff_lib.cli import main
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.labels import UNLABELLED, detect, read_labels
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.segment import SegmentStats, parse_traces, segment_capture
from netdiff_lib.segment.spec import UNLABELLED_DROPPED


def _ns(dt: datetime) -> int:
    return int(dt.timestamp()) * NS


def _labelled(path: Path, labels: Path, mode: str = "flow", **kw: object) -> tuple[Counter, SegmentStats]:
    """Packets per label of the traces of ``path`` under ``labels``."""
    stats = SegmentStats()
    index = read_labels(labels, kw.pop("tz", "auto"), kw.pop("keep_going", False))
    traces = segment_capture(path, parse_traces(mode), NETDIFFUSION, max_packets=None, labels=index, stats=stats,
                             **kw)
    out: Counter = Counter()
    for t in traces:
        out[t.label] += len(t)
    return out, stats


def _expected(packets: list[Packet], label_of_part: dict[int, str]) -> Counter:
    return Counter(label_of_part[p.part] for p in packets if p.part in label_of_part)


def _span(ps: list[Packet]) -> tuple[int, int]:
    return ps[0].ts, ps[-1].ts


# -- CIC-IDS2017 ------------------------------------------------------------------------------------------------

@pytest.fixture
def cic17(tmp_path: Path) -> tuple[Path, Path, list[Packet], dict[int, str]]:
    day = datetime(2017, 7, 3, 8, 55, 10, tzinfo=ADT)
    parts = [("dns/dns_01.pcap", _ns(day)), ("http/http_02.pcap", _ns(day.replace(hour=13, minute=15))),
             ("tls/tls_01.pcap", _ns(day.replace(hour=9, minute=20))), ("icmp/icmp_01.pcap", _ns(day) + 30 * NS)]
    cap = tmp_path / "Monday-WorkingHours.pcap"
    packets = merge(cap, parts)
    labels = {0: "BENIGN", 1: "DoS Hulk", 2: "Web Attack \u2013 Brute Force"}  # cp1252 0x96; icmp: no row
    rows = [CIC17_HEADER]
    for ps in flows(packets).values():
        part = ps[0].part
        if part not in labels:
            continue
        first, last = _span(ps)
        p = ps[0]
        ts = cic17_time(first, "seconds" if part == 2 else "minutes")
        fid = f"{p.src}-{p.dst}-{p.sport}-{p.dport}-{p.proto}"
        rows.append(f"{fid},{p.src},{p.sport},{p.dst},{p.dport},{p.proto},{ts},{(last - first) // 1000},"
                    f"{len(ps)},{labels[part]}")
    rows[2:2] = [CIC17_HEADER]  # a header row repeated inside the file
    rows += [",,,,,,,,,"] * 3  # the blank rows 2017's files end with
    csv = tmp_path / "Monday-WorkingHours.pcap_ISCX.csv"
    csv.write_bytes(("\r\n".join(rows) + "\r\n").encode("cp1252"))
    return cap, csv, packets, labels


def test_cic2017_labels_flows_with_its_quirks(cic17: tuple) -> None:
    cap, csv, packets, labels = cic17
    assert detect(csv) == "CICFlowMeter CSV"
    got, stats = _labelled(cap, csv)
    assert got == _expected(packets, labels) and "Web Attack \u2013 Brute Force" in got
    assert stats.dropped[UNLABELLED_DROPPED] == sum(p.part == 3 for p in packets)
    index = read_labels(csv)
    assert index.skipped == Counter({"blank rows": 3, "repeated header rows": 1})


def test_cic2017_times_are_atlantic_unless_told(cic17: tuple) -> None:
    cap, csv, packets, labels = cic17
    got, _ = _labelled(cap, csv, tz="UTC")  # three hours off: nothing matches
    assert got == Counter()
    got, _ = _labelled(cap, csv, tz="-03:00")
    assert got == _expected(packets, labels)


def test_cic2017_encode_cli_unlabelled_keep(cic17: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cap, csv, _, _ = cic17
    out = tmp_path / "out"
    assert main(["encode", str(cap), "-o", str(out), "-q", "--traces", "flow", "--labels", str(csv),
                 "--unlabelled", "keep", "--format", "npz"]) == 0
    err = capsys.readouterr().err
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["BENIGN", "DoS_Hulk", "Web_Attack_Brute_Force", UNLABELLED]
    assert f"  {UNLABELLED}: 1" in err and "labels: CICFlowMeter CSV" in err


def test_cic_without_addresses_is_refused(tmp_path: Path) -> None:
    ml = tmp_path / "Monday-WorkingHours.pcap_ISCX.csv"  # MachineLearningCVE: no addresses
    ml.write_text(" Destination Port, Flow Duration, Total Fwd Packets, Timestamp, Label\n"
                  "80,10,2,3/7/2017 8:55,BENIGN\n")
    with pytest.raises(InputError, match="cannot be mapped to packets"):
        read_labels(ml)


# -- CSE-CIC-IDS2018 --------------------------------------------------------------------------------------------

def test_cic2018_labels_with_day_first_and_iso_times(tmp_path: Path) -> None:
    day = datetime(2018, 2, 20, 8, 31, 1, tzinfo=UTC)
    cap = tmp_path / "capture.pcap"
    packets = merge(cap, [("ssh/ssh_01.pcap", _ns(day)), ("dns/dns_02.pcap", _ns(day) + 90 * NS)])
    labels = {0: "SSH-Bruteforce", 1: "Benign"}
    rows = ["Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,Tot Fwd Pkts,Label"]
    for i, ps in enumerate(flows(packets).values()):
        first, last = _span(ps)
        p, t = ps[0], datetime.fromtimestamp(ps[0].ts // NS, UTC)
        stamp = t.strftime("%d/%m/%Y %H:%M:%S") if i % 2 else t.strftime("%Y-%m-%d %H:%M:%S")
        rows.append(f"x,{p.src},{p.sport},{p.dst},{p.dport},{p.proto},{stamp},{(last - first) // 1000 + 1},"
                    f"{len(ps)},{labels[p.part]}")
    csv = tmp_path / "Tuesday-20-02-2018_TrafficForML_CICFlowMeter.csv"
    csv.write_text("\n".join(rows) + "\n")
    got, stats = _labelled(cap, csv)
    assert got == _expected(packets, labels) and stats.in_traces == len(packets)


# -- UNSW-NB15 ---------------------------------------------------------------------------------------------------

def _unsw_row(p: Packet, first: int, last: int, cat: str, label: int, proto: str | None = None) -> str:
    cells = ["0"] * 49
    cells[0:5] = [p.src, hex(p.sport) if p.sport % 2 else str(p.sport), p.dst, str(p.dport), proto or
                  {6: "tcp", 17: "udp", 1: "icmp"}[p.proto]]
    cells[28], cells[29] = str(first // NS), str(-(-last // NS))
    cells[47], cells[48] = cat, str(label)
    return ",".join(cells)


def test_unsw_nb15_raw_csv_without_header(tmp_path: Path) -> None:
    cap = tmp_path / "unsw.pcap"
    t0 = 1_424_242_190 * NS
    v4 = [("dns/dns_01.pcap", t0), ("http/http_02.pcap", t0 + 20 * NS), ("ssh/ssh_01.pcap", t0 + 40 * NS)]
    packets = merge(cap, v4)
    cats = {0: (" Fuzzers ", 1, "Fuzzers"), 1: ("", 0, "Normal"), 2: ("Backdoors", 1, "Backdoor")}
    rows = [_unsw_row(ps[0], *_span(ps), *cats[ps[0].part][:2]) for ps in flows(packets).values()]
    rows.insert(1, _unsw_row(packets[0], 0, NS, "", 0, proto="unas"))  # a protocol no packet has
    csv = tmp_path / "UNSW-NB15_1.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert detect(csv) == "UNSW-NB15 CSV"
    got, _ = _labelled(cap, csv)
    assert got == _expected(packets, {k: v[2] for k, v in cats.items()})
    assert read_labels(csv).skipped["rows of other protocols"] == 1


def test_unsw_training_set_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "UNSW_NB15_training-set.csv"
    csv.write_text("id,dur,proto,service,state,spkts,dpkts,attack_cat,label\n1,0.1,tcp,-,FIN,6,4,Normal,0\n")
    with pytest.raises(InputError, match=r"training/testing set.*cannot be mapped to packets"):
        read_labels(csv)


# -- IoT-23 (Zeek conn.log.labeled) ------------------------------------------------------------------------------

def _zeek_log(path: Path, rows: list[str]) -> None:
    path.write_text("\n".join([*zeek_head(), *rows, "#close\t2019-01-10-13-50-00"]) + "\n")


def _zeek_row(p: Packet, first: int, last: int, label: str, detailed: str, ports: tuple[int, int] | None = None,
              duration: bool = True) -> str:
    sport, dport = ports or (p.sport, p.dport)
    cells = [f"{first / NS:.6f}", "CUmrqr4svHuSXJy5z7", p.src, str(sport), p.dst, str(dport),
             {6: "tcp", 17: "udp", 1: "icmp"}[p.proto], "-", f"{(last - first) / NS:.6f}" if duration else "-"]
    cells += ["-"] * (20 - len(cells))
    return "\t".join(cells) + f"\t(empty)   {label}   {detailed}"


def test_iot23_conn_log_labeled_with_space_separated_columns(tmp_path: Path) -> None:
    cap = tmp_path / "2018-10-02-13-12-30-192.168.100.103.pcap"
    t0 = 1_538_487_150 * NS
    packets = merge(cap, [("dns/dns_01.pcap", t0), ("icmp/icmp_01.pcap", t0 + 10 * NS),
                          ("http/http_01.pcap", t0 + 20 * NS)])
    rows, expected = [], {0: "Benign", 1: "PartOfAHorizontalPortScan", 2: "C&C-HeartBeat"}
    for ps in flows(packets).values():
        part = ps[0].part
        if part == 1:  # ICMP: Zeek writes type and code where ports go
            rows.append(_zeek_row(ps[0], *_span(ps), "Malicious", expected[1], ports=(8, 0)))
        else:
            rows.append(_zeek_row(ps[0], *_span(ps), *(("Benign", "-") if part == 0 else ("Malicious",
                                                                                          expected[2]))))
    log = tmp_path / "conn.log.labeled"
    _zeek_log(log, rows)
    assert detect(log) == "Zeek conn.log"
    got, _ = _labelled(cap, log)
    assert got == _expected(packets, expected)


# -- host CSV ----------------------------------------------------------------------------------------------------

def test_host_csv_labels_local_hosts(tmp_path: Path) -> None:
    cap = tmp_path / "hosts.pcap"
    t0 = 1_600_000_000 * NS
    packets = merge(cap, [("dns/dns_01.pcap", t0, lambda d: rewrite_v4(d, "10.0.0.1", "10.0.0.1")),
                          ("http/http_01.pcap", t0 + 100 * NS, lambda d: rewrite_v4(d, "10.0.0.2", "10.0.0.2")),
                          ("ssh/ssh_01.pcap", t0 + 200 * NS, lambda d: rewrite_v4(d, "10.0.0.2", "10.0.0.2"))])
    iso = datetime.fromtimestamp(t0 // NS + 150, UTC).isoformat()
    csv = tmp_path / "hosts.csv"
    csv.write_text(f"host,start,end,label\n10.0.0.1,,,camera\n10.0.0.2,{t0 // NS + 50},{iso},infected\n\n"
                   f"10.0.0.2,{iso},,camera\n")
    got, _ = _labelled(cap, csv, mode="host")
    assert got == _expected(packets, {0: "camera", 1: "infected", 2: "camera"})


# -- bad rows ----------------------------------------------------------------------------------------------------

def test_bad_rows_name_file_and_line_or_are_counted(cic17: tuple, tmp_path: Path) -> None:
    cap, csv, packets, labels = cic17
    lines = csv.read_bytes().split(b"\r\n")
    lines.insert(3, b"x,10.0.0.300,1,10.0.0.1,2,6,3/7/2017 8:55,1,1,BENIGN")
    lines.insert(5, b"x,10.0.0.3,1,10.0.0.1,2,6,yesterday,1,1,BENIGN")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\r\n".join(lines))
    with pytest.raises(InputError, match=r"bad\.csv: line 4: bad value: .*10\.0\.0\.300"):
        read_labels(bad)
    index = read_labels(bad, keep_going=True)
    assert index.bad == Counter({"bad value": 2}) and "line 6" in index.describe()
    got, _ = _labelled(cap, bad, keep_going=True)
    assert got == _expected(packets, labels)


def test_bad_zeek_and_unsw_rows(tmp_path: Path) -> None:
    log = tmp_path / "conn.log.labeled"
    _zeek_log(log, ["1538487150.0\tC1\t10.0.0.1\t1\t10.0.0.2\t2\ttcp"])
    with pytest.raises(InputError, match=r"line 9: 7 fields, expected 23"):
        read_labels(log)
    csv = tmp_path / "UNSW-NB15_2.csv"
    good = ",".join(["59.166.0.0", "1390", "149.171.126.6", "53", "udp"] + ["0"] * 42 + ["", "0"])
    csv.write_text(good + "\n" + good.rsplit(",", 1)[0] + "\n")
    with pytest.raises(InputError, match=r"UNSW-NB15_2\.csv: line 2: 48 columns, expected 49"):
        read_labels(csv)


def test_encode_cli_reports_a_bad_label_file_on_one_line(cic17: tuple, tmp_path: Path) -> None:
    cap, _, _, _ = cic17
    bad = tmp_path / "labels.csv"
    bad.write_text(CIC17_HEADER + "\nx,1.2.3.4,1,5.6.7.8,2,6,3/7/2017 8:55,-,1\n")
    proc = subprocess.run([sys.executable, "-m", "netdiff_lib.cli", "encode", str(cap), "-o", str(tmp_path / "o"),
                           "--traces", "flow", "--labels", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and f"{bad}: line 2: too few columns" in proc.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.npz"))


def test_unknown_label_file(tmp_path: Path) -> None:
    odd = tmp_path / "odd.txt"
    odd.write_text("a;b;c\n1;2;3\n")
    with pytest.raises(InputError, match="not a label file netdiff knows"):
        read_labels(odd)


def test_several_label_files_are_one_index(cic17: tuple, tmp_path: Path) -> None:
    """CIC-IDS2017's Friday capture has three CSVs: each --labels file adds its flows."""
    cap, csv, packets, labels = cic17
    lines = csv.read_bytes().split(b"\r\n")
    rows = [ln for ln in lines[1:] if ln and not ln.startswith(b",") and not ln.startswith(b"Flow ID")]
    first, second = tmp_path / "Friday-a.pcap_ISCX.csv", tmp_path / "Friday-b.pcap_ISCX.csv"
    first.write_bytes(b"\r\n".join([lines[0], *rows[:2]]))
    second.write_bytes(b"\r\n".join([lines[0], *rows[2:]]))
    one, _ = _labelled(cap, first)
    assert one != _expected(packets, labels)
    out = tmp_path / "out"
    assert main(["encode", str(cap), "-o", str(out), "-q", "--traces", "flow", "--labels", str(first),
                 "--labels", str(second), "--format", "npz"]) == 0
    from netdiff_lib.trace import load_trace

    got: Counter = Counter()
    for f in out.rglob("*.npz"):
        t = load_trace(f)
        got[t.label] += len(t)
    assert got == _expected(packets, labels)


def test_pipeline_encode_step_reads_label_files(cic17: tuple, tmp_path: Path) -> None:
    from netdiff_lib.encoded import iter_encoded
    from netdiff_lib.stages import encode_shard

    cap, csv, packets, labels = cic17
    root = tmp_path / "in" / "cic"
    root.mkdir(parents=True)
    cap.rename(root / "monday.pcap")
    summary = encode_shard(str(root.parent), tmp_path / "enc", {"index": 0, "count": 1}, test_fraction=0.5,
                           seed=0, max_packets=1024,
                           traces={"traces": "flow", "labels_uri": f"{csv}", "unlabelled": "drop"})
    got: Counter = Counter()
    for split in ("train", "test"):
        for _, t in iter_encoded([tmp_path / "enc"], split):
            got[t.label] += len(t)
    assert got == _expected(packets, labels) and sum(summary["traces"]["per_class"].values()) > 3


def test_ctu13_binetflow(tmp_path: Path) -> None:
    cap = tmp_path / "botnet-capture-20110810-neris.pcap"
    t0 = _ns(datetime(2011, 8, 10, 9, 46, 53, tzinfo=UTC))
    packets = merge(cap, [("dns/dns_02.pcap", t0), ("icmp/icmp_01.pcap", t0 + 5 * NS),
                          ("tls/tls_02.pcap", t0 + 9 * NS)])
    raw = {0: "flow=Background-UDP-Established", 1: "flow=From-Botnet-V42-ICMP", 2: "flow=From-Botnet-V42-TCP-CC6"}
    rows = ["StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label"]
    for ps in flows(packets).values():
        p, (first, last) = ps[0], _span(ps)
        start = datetime.fromtimestamp(first / NS, UTC).strftime("%Y/%m/%d %H:%M:%S.%f")
        sport, dport = (p.sport, p.dport) if p.proto != 1 else ("0x0008", "0x0000")
        proto = {6: "tcp", 17: "udp", 1: "icmp"}[p.proto]
        rows.append(f"{start},{(last - first) / NS:.6f},{proto},{p.src},{sport},   ->,{p.dst},{dport},CON,0,0,"
                    f"{len(ps)},1,1,{raw[p.part]}")
    rows.append("2011/08/10 09:47:00.000000,0.1,arp,00:11:22:33:44:55,,   who,ff:ff:ff:ff:ff:ff,,INT,0,0,1,60,60,"
                "flow=Background")
    log = tmp_path / "capture20110810.binetflow"
    log.write_text("\n".join(rows) + "\n")
    assert detect(log) == "Argus binetflow (CTU-13)"
    got, _ = _labelled(cap, log)
    assert got == _expected(packets, {0: "Background", 1: "Botnet", 2: "Botnet-C&C"})
    assert read_labels(log).skipped["rows of other protocols"] == 1


def test_file_and_window_traces_split_by_label(cic17: tuple) -> None:
    """A trace holds one label: the whole capture gives one trace per label, a window one per label in it."""
    cap, csv, packets, labels = cic17
    index = read_labels(csv)
    whole = list(segment_capture(cap, parse_traces("file"), NETDIFFUSION, max_packets=None, labels=index))
    assert Counter({t.label: len(t) for t in whole}) == _expected(packets, labels) and len(whole) == 3
    windows = list(segment_capture(cap, parse_traces("window:3600"), NETDIFFUSION, max_packets=None,
                                   labels=index))
    assert sorted(t.label for t in windows) == sorted(labels.values())  # the three parts are hours apart


@pytest.mark.parametrize(("text", "hours", "resolution_s"), [
    ("3/7/2017 1:15", (1, 13), 60), ("03/07/2017 01:15:58", (1, 13), 1), ("03/07/2017 01:15:58 PM", (13,), 1),
    ("03/07/2017 13:15:58", (13,), 1), ("03/07/2017 12:05:00 AM", (0,), 1)])
def test_cic2017_timestamps(text: str, hours: tuple[int, ...], resolution_s: int) -> None:
    """Day first; a 12-hour clock without AM/PM gives both hours; 2017's times are ADT."""
    from netdiff_lib.labels.cic import parse_timestamp

    starts, resolution = parse_timestamp(text)
    minute, sec = int(text.split(":")[1][:2]), int(text.split(":")[2][:2]) if text.count(":") == 2 else 0
    assert starts == [_ns(datetime(2017, 7, 3, h, minute, sec, tzinfo=ADT)) for h in hours]
    assert resolution == resolution_s * NS


def test_cic2018_timestamps_are_utc_unless_told() -> None:
    from netdiff_lib.labels.cic import parse_timestamp

    day = datetime(2018, 2, 14, 8, 31, 1, tzinfo=UTC)
    assert parse_timestamp("14/02/2018 08:31:01")[0] == parse_timestamp("2018-02-14 08:31:01")[0] == [_ns(day)]
    assert parse_timestamp("2018-02-14 08:31:01", "-03:00")[0] == [_ns(day) + 3 * 3600 * NS]
    with pytest.raises(ConfigError, match="--labels-tz 'Mars/Olympus'"):
        parse_timestamp("2018-02-14 08:31:01", "Mars/Olympus")
