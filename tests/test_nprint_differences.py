"""Every line of docs/nprint-differences.md: nPrint's behaviour (mode "nprint") and netdiff's fix (mode "netdiff").

Packets are crafted with scapy (GPL-2.0-only: used by tests only, never by netdiff_lib).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

scapy = pytest.importorskip("scapy.all")
from scapy.all import ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop, Raw  # noqa: E402

from netdiff_lib.nprint import encode_pcap  # noqa: E402
from netdiff_lib.pcap import PcapWriter  # noqa: E402
from netdiff_lib.pcap.linktypes import (  # noqa: E402
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    RAW_IP_LINKTYPES,
)
from netdiff_lib.schema import Layout, bits_to_uint  # noqa: E402

L = Layout(("eth", "ipv4", "ipv6", "tcp", "udp", "icmp"), payload_bytes=8)
TCP_PKT = IP(src="192.0.2.1", dst="198.51.100.2") / TCP(sport=1234, dport=80, flags="PA") / Raw(b"ABCDEFGHIJ")


def _write(path: Path, frames: list[bytes], linktype: int, caplen: list[int] | None = None) -> Path:
    with PcapWriter(path, linktype=linktype) as w:
        for i, f in enumerate(frames):
            cut = caplen[i] if caplen else len(f)
            w.write(f[:cut], ts_ns=1_700_000_000_000_000_000 + i * 1000, wirelen=len(f))
    return path


def _enc(path: Path, mode: str, layout: Layout = L):
    return encode_pcap(path, layout, mode=mode)


def _field(res, name: str, layout: Layout = L) -> np.ndarray:
    return bits_to_uint(res.trace.matrix[:, layout.span(name).slice]).astype(int)


def _payload(res, layout: Layout = L) -> np.ndarray:
    return res.trace.matrix[:, layout.span("payload").slice]


def test_raw_ip_source_8_0_is_not_ethernet(tmp_path: Path) -> None:
    pkt = bytes(IP(src="8.0.1.1", dst="192.0.2.9") / UDP(sport=1, dport=2))
    f = _write(tmp_path / "raw.pcap", [pkt], LINKTYPE_RAW)
    assert len(_enc(f, "nprint").trace) == 0
    res = _enc(f, "netdiff")
    assert len(res.trace) == 1 and _field(res, "udp_dport")[0] == 2


@pytest.mark.parametrize("linktype", sorted(RAW_IP_LINKTYPES))
def test_raw_ip_link_types_are_accepted_by_both_modes(tmp_path: Path, linktype: int) -> None:
    # encode (netdiff mode) and nprint (nPrint's heuristic) accept the same raw-IP link types: 12, 14, 101,
    # 228 (LINKTYPE_IPV4) and 229 (LINKTYPE_IPV6), and read the same headers from them
    v6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=53) / Raw(b"q"))
    f = _write(tmp_path / f"raw{linktype}.pcap", [bytes(TCP_PKT), v6], linktype)
    nprint, netdiff = _enc(f, "nprint"), _enc(f, "netdiff")
    assert len(nprint.trace) == len(netdiff.trace) == 2, (dict(nprint.skipped), dict(netdiff.skipped))
    assert np.array_equal(nprint.trace.matrix, netdiff.trace.matrix)


def test_arp_with_ip_like_mac_is_not_misparsed(tmp_path: Path) -> None:
    # nPrint reads the frame as raw IPv4: byte 9 (the source MAC's 4th byte, 0x11) becomes the protocol, UDP
    arp = bytes(Ether(dst="45:00:00:11:11:11", src="02:00:00:11:00:01") / ARP())
    f = _write(tmp_path / "arp.pcap", [arp], LINKTYPE_ETHERNET)
    assert len(_enc(f, "nprint").trace) == 1  # nPrint's bogus row
    res = _enc(f, "netdiff")
    assert len(res.trace) == 0 and res.skipped["non-IP frame"] == 1


def test_vlan_tags_are_stripped(tmp_path: Path) -> None:
    plain = bytes(Ether() / TCP_PKT)
    tagged = bytes(Ether() / Dot1Q(vlan=7) / Dot1Q(vlan=9) / TCP_PKT)
    f = _write(tmp_path / "vlan.pcap", [plain, tagged], LINKTYPE_ETHERNET)
    assert len(_enc(f, "nprint").trace) == 1
    res = _enc(f, "netdiff")
    assert len(res.trace) == 2
    assert np.array_equal(res.trace.matrix[0], res.trace.matrix[1])  # inner ethertype 0x0800 in the eth block


def _sll2(ip: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\x02" * 6 + b"\0\0") + ip


@pytest.mark.parametrize("linktype", [LINKTYPE_LINUX_SLL2, LINKTYPE_NULL, LINKTYPE_LOOP])
def test_sll2_and_bsd_loopback(tmp_path: Path, linktype: int) -> None:
    ip = bytes(TCP_PKT)
    frame = {
        LINKTYPE_LINUX_SLL2: _sll2(ip),
        LINKTYPE_NULL: struct.pack("<I", 2) + ip,
        LINKTYPE_LOOP: struct.pack("!I", 2) + ip,
    }[linktype]
    f = _write(tmp_path / "l.pcap", [frame], linktype)
    assert len(_enc(f, "nprint").trace) == 0
    res = _enc(f, "netdiff")
    assert len(res.trace) == 1 and _field(res, "tcp_sprt")[0] == 1234
    assert (res.trace.matrix[0, L.block_span("eth").slice] == -1).all()


def test_ipv6_extension_headers_and_icmpv6(tmp_path: Path) -> None:
    hbh = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / TCP(sport=5, dport=6))
    icmp6 = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=7, seq=1))
    f = _write(tmp_path / "v6.pcap", [hbh, icmp6], LINKTYPE_ETHERNET)
    assert len(_enc(f, "nprint").trace) == 0
    res = _enc(f, "netdiff")
    assert len(res.trace) == 2
    assert _field(res, "tcp_dprt")[0] == 6 and _field(res, "ipv6_nh")[0] == 0  # nh kept as captured
    assert _field(res, "icmp_type")[1] == 128 and _field(res, "ipv6_nh")[1] == 58


def test_non_first_fragment_is_not_an_l4_header(tmp_path: Path) -> None:
    first, second = (IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=9, dport=9) / Raw(b"\xde\xad" * 20)).fragment(24)
    f = _write(tmp_path / "frag.pcap", [bytes(Ether() / first), bytes(Ether() / second)], LINKTYPE_ETHERNET)
    bogus = _enc(f, "nprint")
    assert _field(bogus, "udp_sport")[1] == 0xDEAD  # nPrint reads the data as a UDP header
    res = _enc(f, "netdiff")
    assert (res.trace.matrix[1, L.block_span("udp").slice] == -1).all()
    assert _field(res, "ipv4_foff")[1] == 3
    assert bits_to_uint(_payload(res)[1, :16]) == 0xDEAD  # the fragment's data is payload


def test_snap_length_truncation(tmp_path: Path) -> None:
    frame = bytes(Ether() / TCP_PKT)
    f = _write(tmp_path / "cut.pcap", [frame, frame], LINKTYPE_ETHERNET, caplen=[14 + 20 + 10, 14 + 20 + 20 + 4])
    res = _enc(f, "netdiff")
    assert res.skipped["headers cut by the snap length"] == 1
    assert len(res.trace) == 1
    pay = _payload(res)[0]
    assert bits_to_uint(pay[:32]) == int.from_bytes(b"ABCD", "big")
    assert (pay[32:] == -1).all()  # not captured: not known to be on the wire
    assert len(_enc(f, "nprint").trace) == 2  # nPrint reads past the capture


def test_tso_zero_total_length_payload(tmp_path: Path) -> None:
    pkt = IP(bytes(TCP_PKT))
    pkt.len = 0
    raw = bytes(Ether(type=0x0800)) + bytes(pkt)[:2] + b"\0\0" + bytes(pkt)[4:]
    f = _write(tmp_path / "tso.pcap", [raw], LINKTYPE_ETHERNET)
    res = _enc(f, "netdiff")
    assert bits_to_uint(_payload(res)[0, :16]) == int.from_bytes(b"AB", "big")


def test_ipv6_tcp_payload_pointer(tmp_path: Path) -> None:
    pkt = Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=1, dport=2) / Raw(b"PAYLOAD!" + b"\0" * 400)
    f = _write(tmp_path / "v6tcp.pcap", [bytes(pkt)], LINKTYPE_ETHERNET)
    good = _payload(_enc(f, "netdiff"))[0]
    assert np.packbits(good > 0).tobytes() == b"PAYLOAD!"
    assert np.packbits(_payload(_enc(f, "nprint"))[0] > 0).tobytes() != b"PAYLOAD!"


def test_bad_header_lengths_are_skipped(tmp_path: Path) -> None:
    raw = bytearray(bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / ICMP()))
    raw[14] = 0x43  # IHL 3
    f = _write(tmp_path / "ihl.pcap", [bytes(raw)], LINKTYPE_ETHERNET)
    assert _enc(f, "netdiff").skipped["malformed IP/TCP header length"] == 1
    assert len(_enc(f, "nprint").trace) == 1


def test_packet_limit_counts_rows_not_reads(tmp_path: Path) -> None:
    arp = bytes(Ether() / ARP())
    udp = bytes(Ether() / IP() / UDP())
    f = _write(tmp_path / "c.pcap", [arp, arp, udp, udp, udp], LINKTYPE_ETHERNET)
    assert len(encode_pcap(f, L, max_packets=2).trace) == 2
    import io

    from netdiff_lib.nprint.compat import NprintJob, write_csv

    buf = io.BytesIO()
    write_csv(NprintJob(pcap=str(f), blocks=("ipv4", "udp"), count=3), buf)
    assert buf.getvalue().count(b"\n") == 2  # header + one row: nPrint counts the two ARP frames
