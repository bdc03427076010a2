"""netdiff validate: tshark and the built-in validator on good and deliberately broken packets."""

from __future__ import annotations

import ipaddress
import json
import shutil
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from netdiff_lib.cli import main as cli_main
from netdiff_lib.nprint import encode_pcap
from netdiff_lib.pcap import PcapWriter
from netdiff_lib.repair import reconstruct
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.validate import (
    GROUP_PROTOCOL,
    GROUP_SEQUENCE,
    SEVERITY_ERROR,
    SEVERITY_WARN,
    offloaded_frames,
    parse_tshark_fields,
    validate_pcap,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "captures"
TOOLS = ["builtin"] + (["tshark"] if shutil.which("tshark") else [])
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
IP4 = {"src": "192.0.2.1", "dst": "198.51.100.1"}


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


GOOD = bytes(E / IP(**IP4) / TCP(sport=40000, dport=80, flags="A", seq=1, ack=1) / bytes(10))
BROKEN: dict[str, tuple[bytes, str]] = {  # name: (frame, the count it must raise in both validators)
    "ip checksum": (_flip(GOOD, 24), "bad_checksums"),
    "tcp checksum": (_flip(GOOD, 50), "bad_checksums"),
    "icmp checksum": (bytes(E / IP(**IP4) / ICMP(type=8, chksum=1)), "bad_checksums"),
    "icmpv6 checksum": (bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(cksum=7)),
                        "bad_checksums"),
    "udp length": (bytes(E / IP(**IP4) / UDP(sport=5000, dport=6000, len=20) / bytes(4)), "failed"),
    "ip total length": (bytes(E / IP(len=200, **IP4) / UDP(sport=5000, dport=6000) / bytes(4)), "failed"),
    "tcp data offset": (GOOD[:46] + bytes([0xF0 | GOOD[46] & 0x0F]) + GOOD[47:], "failed"),
    "ip version": (GOOD[:14] + b"\x35" + GOOD[15:], "failed"),
    "4 nops": (bytes(E / IP(**IP4) / TCP(sport=1, dport=80, flags="A", options=[("NOP", None)] * 4)),
               "expert_errors"),
    "wscale 15": (bytes(E / IP(**IP4) / TCP(sport=1, dport=80, flags="S", options=[("WScale", 15), ("NOP", None)])),
                  "expert_errors"),
    "mss without syn": (bytes(E / IP(**IP4) / TCP(sport=1, dport=80, flags="A", options=[("MSS", 1460)])),
                        "expert_errors"),
}


def write(path: Path, frames: list[bytes]) -> Path:
    with PcapWriter(path) as w:
        for i, f in enumerate(frames):
            w.write(f, (1_700_000_000 + i) * 10**9)
    return path


@pytest.mark.parametrize("tool", TOOLS)
def test_reconstructed_pcaps_pass(tool: str, tmp_path: Path) -> None:
    files = sorted(SAMPLES.glob("*/*.pcap"))[::9]
    if not files:
        pytest.skip("no sample captures")
    for f in files:
        rec = reconstruct(encode_pcap(f, NETDIFFUSION).trace.matrix)
        rep = validate_pcap(rec.write(tmp_path / f.name), tool)
        assert rep.ok and rep.packets == len(rec) and rep.tool == tool
        assert (rep.malformed, rep.expert_errors, rep.bad_checksums, rep.failed) == (0, 0, 0, 0)


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_packet_is_caught(tool: str, name: str, tmp_path: Path) -> None:
    frame, count = BROKEN[name]
    rep = validate_pcap(write(tmp_path / "x.pcap", [GOOD, frame, GOOD]), tool)
    assert rep.packets == 3 and rep.failed == 1 and not rep.ok
    assert getattr(rep, count) == 1, rep.problems
    assert {p.frame for p in rep.problems} == {2}
    assert rep.checksum_only == (count == "bad_checksums")  # a checksum alone, or a real fault


@pytest.mark.parametrize("tool", TOOLS)
def test_loopback_samples_fail_only_on_offloaded_checksums(tool: str) -> None:
    # recorded on lo: the kernel leaves TCP/UDP checksums to the (absent) card, so they "fail", and nothing else
    rep = validate_pcap(SAMPLES / "dns" / "dns_01.pcap", tool)
    assert rep.packets == rep.failed == rep.bad_checksums == rep.checksum_only == 20


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_scope_headers_ignores_zero_filled_application_payloads(tmp_path: Path) -> None:
    dns = bytes(E / IP(**IP4) / UDP(sport=40000, dport=53) / bytes(3))  # a 3-byte "DNS message" of zeros
    path = write(tmp_path / "dns.pcap", [dns])
    assert validate_pcap(path, "tshark", "headers").ok
    full = validate_pcap(path, "tshark", "full")
    assert full.malformed == 1


def test_which_expert_infos_count() -> None:
    def line(sev: int, group: int) -> str:
        return "\t".join(["1", "", str(sev), str(group), "message", "1", "", "", "", ""])
    assert parse_tshark_fields("x", line(SEVERITY_WARN, GROUP_SEQUENCE)).ok  # TCP analysis: not validity
    assert not parse_tshark_fields("x", line(SEVERITY_WARN, GROUP_PROTOCOL)).ok  # a header problem
    assert not parse_tshark_fields("x", line(SEVERITY_ERROR, GROUP_SEQUENCE)).ok  # errors always count
    notes = "\t".join(["1", "", f"{0x400000}|{0x200000}", f"{GROUP_PROTOCOL}|{GROUP_PROTOCOL}", "a|b", "1"])
    assert parse_tshark_fields("x", notes).ok
    bad = parse_tshark_fields("x", "\t".join(["1", "", "", "", "", "1", "0", "", "", ""]))
    assert bad.bad_checksums == 1 and bad.problems[0].detail == "bad tcp checksum"


def test_cli_exit_status_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = write(tmp_path / "good.pcap", [GOOD, GOOD])
    bad = write(tmp_path / "bad.pcap", [GOOD, BROKEN["tcp checksum"][0]])
    assert cli_main(["validate", str(good)]) == 0
    assert cli_main(["validate", str(good), str(bad), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "bad.pcap: FAILED" in out and "good.pcap: ok" in out
    reports = json.loads((tmp_path / "r.json").read_text())
    assert [r["failed"] for r in reports] == [0, 1] and reports[1]["bad_checksums"] == 1
    assert cli_main(["validate", "--tool", "builtin", str(tmp_path)]) == 1  # a folder: every capture in it
    assert cli_main(["validate", str(tmp_path / "missing.pcap")]) == 2


def _partial_sum(src: str, dst: str, proto: int, length: int) -> int:
    """The folded pseudo-header sum: what Linux leaves in a TCP/UDP checksum field for the card to finish."""
    raw = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    total = sum(struct.unpack(f">{len(raw) // 2}H", raw)) + proto + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


V6 = {"src": "2001:db8::1", "dst": "2001:db8::2"}
OFFLOADED = [  # sent with checksum offload: the field holds the pseudo-header sum
    bytes(E / IP(**IP4) / TCP(sport=40000, dport=80, flags="A", chksum=_partial_sum(**IP4, proto=6, length=30))
          / bytes(10)),
    bytes(E / IP(**IP4) / UDP(sport=5000, dport=53, chksum=_partial_sum(**IP4, proto=17, length=12)) / bytes(4)),
    bytes(E / IPv6(**V6) / TCP(sport=1, dport=2, flags="S", chksum=_partial_sum(**V6, proto=6, length=20))),
]


@pytest.mark.parametrize("tool", TOOLS)
def test_offloaded_checksums_are_told_apart_from_wrong_ones(tool: str, tmp_path: Path) -> None:
    path = write(tmp_path / "x.pcap", [GOOD, *OFFLOADED, BROKEN["tcp checksum"][0], BROKEN["ip checksum"][0]])
    rep = validate_pcap(path, tool)
    assert offloaded_frames(path) == {2, 3, 4}
    assert (rep.failed, rep.checksum_only, rep.offload) == (5, 5, 3)  # a flipped checksum is no offload
    assert (rep.failures("strict"), rep.failures("offload"), rep.failures("off")) == (5, 2, 0)


def test_cli_reports_checksum_offload_apart(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    samples = SAMPLES / "dns"  # recorded on loopback: every TCP/UDP checksum is left to the (absent) card
    if not samples.is_dir():
        pytest.skip("no sample captures")
    assert cli_main(["validate", str(samples)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 failed packets" in out and "checksum offload" in out
    assert "the capture was taken on the sending host" in out and "--checksums strict counts them" in out
    assert cli_main(["validate", "--checksums", "strict", str(samples)]) == 1
    assert "--checksums offload reports those apart" in " ".join(capsys.readouterr().out.split())
    wrong = write(tmp_path / "wrong.pcap", [GOOD, BROKEN["tcp checksum"][0]])  # not offload: still a failure
    assert cli_main(["validate", str(wrong)]) == 1
    assert cli_main(["validate", "--checksums", "off", str(wrong)]) == 0
