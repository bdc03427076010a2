"""`netdiff nprint` where nPrint 1.2.1's output depends on a detail of its code that the golden cases miss:
``-R`` rows whose time goes back by exactly one microsecond, and the snap length ``-N`` writes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from netdiff_lib.cli.nprint import main
from netdiff_lib.nprint import read_nprint_csv
from netdiff_lib.pcap import PcapFile, PcapWriter

REPO = Path(__file__).resolve().parents[1]
DNS = REPO / "samples" / "captures" / "dns" / "dns_01.pcap"
SHARED = Path(os.environ.get("NETDIFF_SHARED") or REPO.parent / "shared")
# A real capture with a packet stamped one microsecond before the one written ahead of it.
IOT_BACKWARDS = SHARED / "data" / "iot-sentinel" / "HueSwitch" / "Setup-A-1-STA.pcap"
T0 = 1_700_000_000_000_000_000


def _retimed(path: Path, gaps_us: list[int]) -> Path:
    """The DNS sample's packets, each ``gaps_us[i]`` microseconds after the one before."""
    batch = next(PcapFile(DNS).batches())
    ts = T0
    with PcapWriter(path, linktype=int(batch.linktype[0])) as w:
        for i, gap in enumerate(gaps_us):
            ts += gap * 1000
            w.write(batch.packet(i % len(batch)), ts_ns=ts)
    return path


def _lines(tmp_path: Path, pcap: Path, *flags: str) -> list[str]:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.csv"
    assert main(["-P", str(pcap), "-4", "-u", *flags, "-W", str(out)]) == 0
    return out.read_text().splitlines()


@pytest.mark.parametrize("extra", [[], ["-A"]], ids=["R", "RA"])
def test_relative_time_of_minus_one_is_left_out_as_nprint_does(tmp_path: Path, extra: list[str]) -> None:
    gaps = [0, 5, -1, 7, -2, 3]
    pcap = _retimed(tmp_path / "back.pcap", gaps)
    plain = _lines(tmp_path, pcap, *extra)
    rel = _lines(tmp_path, pcap, "-R", *extra)
    assert rel[0].split(",")[:2] == ["src_ip", "rts"]
    for i, gap in enumerate(gaps):
        index, _, rest = plain[i + 1].partition(",")
        want_rts = [] if gap == -1 else [str(gap if i else 0)]  # nPrint: rts == -1 means "no rts"
        assert rel[i + 1].split(",") == [index, *want_rts, *rest.split(",")]


def test_netdiff_mode_keeps_the_minus_one(tmp_path: Path) -> None:
    pcap = _retimed(tmp_path / "back.pcap", [0, -1, 4])
    out = tmp_path / "out.csv"
    assert main(["-P", str(pcap), "-4", "-u", "-R", "-W", str(out), "--netdiff"]) == 0
    assert [ln.split(",")[1] for ln in out.read_text().splitlines()] == ["rts", "0", "-1", "4"]


def test_rows_without_rts_read_back(tmp_path: Path) -> None:
    gaps = [0, 9, -1, 2]
    pcap = _retimed(tmp_path / "back.pcap", gaps)
    out = tmp_path / "out.csv"
    assert main(["-P", str(pcap), "-4", "-u", "-R", "-W", str(out)]) == 0
    trace = read_nprint_csv(out)
    assert (trace.ts_ns // 1000).tolist() == [0, 9, 8, 10]
    assert trace.matrix.shape == (4, trace.layout.width)


@pytest.mark.skipif(not IOT_BACKWARDS.is_file(), reason=f"{IOT_BACKWARDS} not available")
def test_real_capture_with_a_one_microsecond_step_back(tmp_path: Path) -> None:
    plain = _lines(tmp_path, IOT_BACKWARDS, "-t", "-i")
    rel = _lines(tmp_path, IOT_BACKWARDS, "-t", "-i", "-R")
    short = [i for i, (a, b) in enumerate(zip(plain, rel, strict=True)) if a == b]
    assert short  # rows nPrint writes without their rts cell
    assert all(len(rel[i].split(",")) == len(rel[0].split(",")) - 1 for i in short)
    assert all(len(ln.split(",")) == len(rel[0].split(",")) for i, ln in enumerate(rel) if i not in short)


def _ipv6_udp(payload: bytes) -> bytes:
    src, dst = bytes(15) + b"\x01", bytes(15) + b"\x02"
    udp = struct.pack(">HHHH", 5353, 53, 8 + len(payload), 0) + payload
    return struct.pack(">IHBB", 6 << 28, len(udp), 17, 64) + src + dst + udp


def test_nprint_to_pcap_prints_v6_and_skips_rows_without_ip(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture
) -> None:
    batch = next(PcapFile(DNS).batches())
    v4 = [batch.packet(i)[14:] for i in range(3)]  # the DNS sample's IPv4 packets without their Ethernet header
    pcap, csv, back = tmp_path / "mixed.pcap", tmp_path / "mixed.csv", tmp_path / "back.pcap"
    with PcapWriter(pcap, linktype=101) as w:  # raw IP
        for i, pkt in enumerate([v4[0], _ipv6_udp(b"six"), v4[1], _ipv6_udp(b"again"), v4[2]]):
            w.write(pkt, ts_ns=T0 + i * 1000)
    assert main(["-P", str(pcap), "-4", "-6", "-t", "-u", "-p", "64", "-W", str(csv)]) == 0
    lines = csv.read_text().splitlines()
    index, _, bits = lines[3].partition(",")
    lines.insert(3, index + "," + ",".join(["-1"] * len(bits.split(","))))  # a row with no IP header at all
    csv.write_text("\n".join(lines) + "\n")
    capfdbinary.readouterr()
    assert main(["-N", str(csv), "-W", str(back)]) == 0
    assert capfdbinary.readouterr().out == b"v6\n" * 2  # nPrint's printf("v6\n") per IPv6 packet
    got = next(PcapFile(back).batches())
    want = [v4[0], _ipv6_udp(b"six"), v4[1], _ipv6_udp(b"again"), v4[2]]  # the row without IP gave no packet
    assert [got.packet(i) for i in range(len(got))] == want


def test_nprint_to_pcap_writes_nprints_snap_length(tmp_path: Path) -> None:
    csv, pcap = tmp_path / "in.csv", tmp_path / "back.pcap"
    assert main(["-P", str(DNS), "-4", "-u", "-p", "600", "-W", str(csv)]) == 0
    assert main(["-N", str(csv), "-W", str(pcap)]) == 0
    magic, _maj, _min, _zone, _sig, snaplen, _link = struct.unpack("<IHHiIII", pcap.read_bytes()[:24])
    assert magic == 0xA1B2C3D4 and snaplen == 65535  # pcap_open_dead(DLT_RAW, 65535)
    assert PcapFile(pcap).snaplen == 65535
    assert len(next(PcapFile(pcap).batches())) == len(next(PcapFile(DNS).batches()))

