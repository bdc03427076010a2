"""Unit tests of reconstruction's rules: protocols, options, flows, TCP state, IDs, ICMP, time, addresses, report."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from netdiff_lib.errors import ConfigError
from netdiff_lib.nprint import encode_pcap
from netdiff_lib.repair import AddressPlan, IatModel, RepairConfig, RepairReport, reconstruct
from netdiff_lib.repair.addresses import assign, macs
from netdiff_lib.repair.flows import build_flows, server_port, snap_pairs
from netdiff_lib.repair.headers import HeaderBytes
from netdiff_lib.repair.ip import ip_ids
from netdiff_lib.repair.options import IPV4_OPTIONS, TCP_OPTIONS, choose_length, rewrite
from netdiff_lib.repair.protocols import decide
from netdiff_lib.repair.tcp import TcpIn, repair_tcp
from netdiff_lib.repair.timing import DEFAULT_START_NS, timestamps
from netdiff_lib.repair.udp_icmp import icmp_payload, icmp_types
from netdiff_lib.schema import NETDIFFUSION, bits_to_uint

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "captures"
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def matrix_of(packets: list, tmp_path: Path, name: str = "x.pcap") -> np.ndarray:
    path = tmp_path / name
    wrpcap(str(path), packets)
    return encode_pcap(path, NETDIFFUSION).trace.matrix


def field(matrix: np.ndarray, name: str) -> np.ndarray:
    return bits_to_uint(matrix[:, NETDIFFUSION.span(name).slice]).astype(np.int64)


def opts(*chunks: bytes) -> np.ndarray:
    raw = b"".join(chunks)
    return np.frombuffer(raw.ljust(40, b"\0"), np.uint8)[None, :]


def tlv(row: np.ndarray, length: int) -> list[tuple[int, int]]:
    """(kind, length) of each option of a well-formed area (raises on a malformed one)."""
    out, i = [], 0
    while i < length:
        kind = int(row[i])
        if kind in (0, 1):
            out.append((kind, 1))
            if kind == 0:
                assert not row[i + 1:length].any(), "non-zero padding after EOL"
                break
            i += 1
            continue
        size = int(row[i + 1])
        assert size >= 2 and i + size <= length, (kind, size, i, length)
        out.append((kind, size))
        i += size
    return out


# ---------------------------------------------------------------------------------------------- protocols

def test_decide_votes_family_transport_and_padding(tmp_path: Path) -> None:
    pkts = [E / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(), E / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(),
            E / IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(), E / IPv6() / UDP(), E / IPv6() / TCP()]
    m = matrix_of(pkts, tmp_path)
    m = np.vstack([m, np.full((2, NETDIFFUSION.width), -1, np.int8)])
    m[5, NETDIFFUSION.span("ipv4_ver").slice] = 1  # a handful of bits is still padding
    d = decide(HeaderBytes(m, NETDIFFUSION))
    assert d.keep.tolist() == [True] * 5 + [False, False]
    assert d.family[:5].tolist() == [4, 4, 4, 6, 6]
    assert d.l4[:5].tolist() == [0, 1, 2, 1, 0]
    # NetDiffusion's blurred rows: version 0000 and IHL 0011 but an IPv4/TCP shape: still IPv4/TCP.
    m2 = m[:1].copy()
    m2[:, NETDIFFUSION.span("ipv4_ver").slice] = 0
    m2[:, NETDIFFUSION.span("ipv4_hl").slice] = [0, 0, 1, 1]
    d2 = decide(HeaderBytes(m2, NETDIFFUSION))
    assert (d2.keep[0], d2.family[0], d2.l4[0]) == (True, 4, 0)


# ---------------------------------------------------------------------------------------------- options

LINUX_SYN = (b"\x02\x04\x05\xb4", b"\x04\x02", b"\x08\x0a\x00\x01\x02\x03\x00\x00\x00\x00", b"\x01",
             b"\x03\x03\x07")


def test_real_option_lists_pass_unchanged() -> None:
    syn = opts(*LINUX_SYN)
    assert (rewrite(syn, np.array([20]), TCP_OPTIONS, np.array([True]), np.array([False])) == syn).all()
    data = opts(b"\x01\x01\x08\x0a\x00\x00\x00\x05\x00\x00\x00\x09")
    assert (rewrite(data, np.array([12]), TCP_OPTIONS, np.array([False]), np.array([True])) == data).all()
    sack = opts(b"\x01\x01\x08\x0a" + bytes(8) + b"\x01\x01\x05\x0a" + bytes(8))
    assert (rewrite(sack, np.array([24]), TCP_OPTIONS, np.array([False]), np.array([True])) == sack).all()
    ra = opts(b"\x94\x04\x00\x00")
    assert (rewrite(ra, np.array([4]), IPV4_OPTIONS) == ra).all()


def test_syn_only_options_leave_non_syn_segments_and_values_are_capped() -> None:
    out = rewrite(opts(*LINUX_SYN), np.array([20]), TCP_OPTIONS, np.array([False]), np.array([True]))
    kinds = [k for k, _ in tlv(out[0], 20)]
    assert not {2, 3, 4} & set(kinds)
    ws = rewrite(opts(b"\x03\x03\x0f\x00"), np.array([4]), TCP_OPTIONS, np.array([True]), np.array([False]))
    assert ws[0, :3].tolist() == [3, 3, 14]


def test_random_option_bytes_become_well_formed_areas() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    raw = rng.integers(0, 256, (n, 40), dtype=np.uint8)
    raw[::3] = rng.choice([0, 1, 2, 3, 4, 5, 8, 10], (n // 3 + 1, 40))[: len(raw[::3])]
    length = rng.choice(np.arange(0, 41, 4), n)
    syn, ack = rng.random(n) < 0.3, rng.random(n) < 0.8
    out = rewrite(raw, length, TCP_OPTIONS, syn, ack)
    out4 = rewrite(raw, length, IPV4_OPTIONS, nop_runs=False)
    for i in range(n):
        assert not out[i, length[i]:].any() and not out4[i, length[i]:].any()
        found = tlv(out[i], int(length[i]))
        allowed = {(0, 1), (1, 1), (2, 4), (3, 3), (4, 2), (5, 10), (5, 18), (5, 26), (5, 34), (8, 10)}
        assert set(found) <= allowed
        kinds = [k for k, _ in found if k > 1]
        assert len(kinds) == len(set(kinds)), "an option kind twice"
        if not syn[i]:
            assert not {2, 3, 4} & set(kinds)
        if syn[i] or not ack[i]:
            assert 5 not in kinds
        nops, pos = 0, 0  # Wireshark's TCP count: a NOP at a 4-byte boundary after NOPs restarts it
        for kind, size in found:
            if kind == 1:
                nops = 0 if nops and pos % 4 == 0 else nops + 1
                assert nops < 4
            pos += size
        assert sum(k == 1 for k, _ in tlv(out4[i], int(length[i]))) <= 3
        assert {k for k, _ in tlv(out4[i], int(length[i]))} <= {0, 1, 148}


def test_option_length_is_the_cheapest_in_bits() -> None:
    present = np.zeros((3, 40), np.uint8)
    present[0, :12] = 8  # a real 12-byte area, data offset 8
    present[2, :40] = 5  # mostly on the wire, data offset says 5
    assert choose_length(present, np.array([8, 5, 5])).tolist() == [12, 0, 40]


# ---------------------------------------------------------------------------------------------- flows

def test_single_bit_port_errors_snap_back_and_short_real_flows_stay() -> None:
    a = np.array([50000, 443, 50000, 443, 50000 ^ 4, 443 ^ 1, 40000, 40001, 40001])
    b = np.array([443, 50000, 443, 50000, 443, 50000, 53, 53, 53])
    sa, sb = snap_pairs(a, b, np.zeros(len(a), np.int64))
    assert sa.tolist() == [50000, 443, 50000, 443, 50000, 443, 40000, 40001, 40001]
    assert sb.tolist() == b.tolist()
    other = snap_pairs(a, b, np.array([0, 0, 0, 0, 1, 1, 0, 0, 0]))  # another trace or protocol: no snapping
    assert other[0][4] == 50000 ^ 4


def test_roles_sides_and_flows() -> None:
    assert server_port(np.array([50000, 80, 5000, 123]), np.array([80, 50000, 6000, 123])).tolist() == [80, 80,
                                                                                                          5000, 123]
    fam = np.array([4, 4, 4, 4, 4, 6])
    l4 = np.array([0, 0, 1, 2, 2, 0])
    sport = np.array([50000, 443, 53, 0, 0, 50000])
    dport = np.array([443, 50000, 53000, 0, 0, 443])
    types = np.array([0, 0, 0, 8, 0, 0])
    ids = np.array([0, 0, 0, 7, 7, 0])
    fl = build_flows(fam, l4, sport, dport, types, ids << 0, snap=False)
    assert fl.flow.tolist() == [0, 0, 1, 2, 2, 3]
    assert fl.side.tolist() == [0, 1, 1, 0, 1, 0]
    assert fl.client[0] == fl.client[2] and fl.server[0] != fl.server[2]


# ---------------------------------------------------------------------------------------------- TCP

def tcp_in(side, flags, seq, ack, payload, flow=None) -> TcpIn:
    n = len(side)
    f = {k: np.array([k[0].upper() in x for x in flags]) for k in ("syn", "ack", "fin", "rst", "psh", "urg")}
    f["ack"] = np.array(["A" in x for x in flags])
    return TcpIn(flow=np.zeros(n, np.int64) if flow is None else np.array(flow), side=np.array(side),
                 seq=np.array(seq, np.int64), ackn=np.array(ack, np.int64), urp=np.zeros(n, np.int64),
                 payload=np.array(payload, np.int64), **f)


def test_a_real_connection_passes_unchanged() -> None:
    side = [0, 1, 0, 0, 1, 1, 0, 1, 0]
    flags = ["S", "SA", "A", "PA", "A", "PA", "FA", "FA", "A"]
    c, s = 1000, 9000
    seq = [c, s, c + 1, c + 1, s + 1, s + 1, c + 101, s + 51, c + 102]
    ack = [0, c + 1, s + 1, s + 1, c + 101, c + 101, s + 51, c + 102, s + 52]
    pay = [0, 0, 0, 100, 0, 50, 0, 0, 0]
    out = repair_tcp(tcp_in(side, flags, seq, ack, pay))
    assert out.seq.tolist() == seq and out.ackn.tolist() == ack and out.payload.tolist() == pay
    assert out.syn.tolist() == [f.startswith("S") for f in flags]
    assert out.fin.tolist() == ["F" in f for f in flags]


def test_noise_becomes_coherent_connections() -> None:
    rng = np.random.default_rng(3)
    n = 60
    side = rng.integers(0, 2, n)
    side[0] = 0
    flags = ["S"] + ["".join(rng.choice(list("SAFRP"), 3)) for _ in range(n - 1)]
    seq, ack = rng.integers(0, 2**32, n), rng.integers(0, 2**32, n)
    out = repair_tcp(tcp_in(side, flags, seq, ack, rng.integers(0, 1400, n)))
    assert out.session.max() >= 1  # pure SYNs after FIN/RST open new connections
    for sess in np.unique(out.session):
        idx = np.flatnonzero(out.session == sess)
        a = side[idx[0]]
        firsts = {d: idx[side[idx] == d][0] for d in (0, 1) if (side[idx] == d).any()}
        if out.syn[idx[0]]:
            assert not out.ack[idx[0]] and out.payload[idx[0]] == 0
            if 1 - a in firsts:
                b0 = firsts[1 - a]
                assert (out.syn[b0] and out.ack[b0]) or out.rst[b0]
        b_first = firsts.get(1 - a, idx[-1] + 1)
        syn_ok = set(idx[(side[idx] == a) & (idx < b_first)]) | {b_first}
        assert set(np.flatnonzero(out.syn)) & set(idx) <= syn_ok  # SYN, its retransmissions, the SYN-ACK
        retx = idx[out.syn[idx] & (side[idx] == a)]
        assert (out.seq[retx] == out.seq[idx[0]]).all() and not out.payload[retx].any()
        assert not out.rst[idx[:-1]].any()
        nxt: dict[int, int] = {}
        for i in idx:
            d = int(side[i])
            if d in nxt and not (out.syn[i] and d == a):
                assert out.seq[i] == nxt[d] % 2**32
            nxt[d] = int(out.seq[i]) + int(out.payload[i]) + int(out.syn[i]) + int(out.fin[i])
            if out.ack[i] and 1 - d in nxt:
                assert out.ackn[i] == nxt[1 - d] % 2**32  # acknowledges everything the peer sent
        for d in (0, 1):
            fins = idx[out.fin[idx] & (side[idx] == d)]
            assert len(fins) <= 1
            if len(fins):
                assert not out.payload[idx[(side[idx] == d) & (idx > fins[0])]].any()


def test_retransmissions_holes_and_flipped_bits() -> None:
    side = [0, 0, 0, 0, 0, 0]
    seq = [100, 200, 200, 300, 5300, 5400]  # 200 is sent twice; a hole before 5300
    out = repair_tcp(tcp_in(side, ["A"] * 6, seq, [7] * 6, [100, 100, 100, 100, 100, 100]))
    assert out.seq.tolist() == seq
    flipped = [100, 200, 300 ^ (1 << 12), 400, 500]
    out = repair_tcp(tcp_in([0] * 5, ["A"] * 5, flipped, [7] * 5, [100] * 5))
    assert out.seq.tolist() == [100, 200, 300, 400, 500]


def test_sessions_split_at_a_syn_after_a_reset() -> None:
    side = [0, 1, 0, 0, 1]
    out = repair_tcp(tcp_in(side, ["S", "RA", "S", "SA", "SA"], [10, 0, 50, 51, 70], [0, 11, 0, 0, 51],
                            [0, 0, 0, 0, 0]))
    assert out.session.tolist() == [0, 0, 1, 1, 1]
    assert out.rst.tolist() == [False, True, False, False, False]
    # A's packet before B's reply is a SYN retransmission (same number), B's first is the SYN-ACK.
    assert out.syn.tolist() == [True, False, True, True, True] and out.seq[3] == out.seq[2]
    assert out.ack.tolist() == [False, True, False, False, True] and out.ackn[4] == (out.seq[2] + 1) % 2**32


# ---------------------------------------------------------------------------------------------- IP IDs, ICMP

def test_ip_id_counters() -> None:
    host = np.zeros(6, np.int64)
    assert ip_ids(host, np.zeros(6, np.int64), np.zeros(6, bool)).tolist() == [0] * 6  # DF + ID 0 kept
    linux = np.array([0, 14788, 14789, 14790, 14791, 14792])
    assert ip_ids(host, linux, np.zeros(6, bool)).tolist() == linux.tolist()
    noise = np.random.default_rng(0).integers(0, 65536, 200)
    out = ip_ids(np.zeros(200, np.int64), noise, np.ones(200, bool))
    steps = np.diff(out) % 65536
    assert (steps >= 1).all() and ((out - out[0]) % 65536).max() < 65536


def test_icmp_types_and_bodies() -> None:
    fam = np.array([4, 4, 4, 6, 6, 6])
    t = icmp_types(fam, np.array([8, 5, 3, 128, 200, 135]))
    assert t[[0, 2, 3, 5]].tolist() == [8, 3, 128, 135] and t[1] != 5
    body = icmp_payload(fam, np.array([8, 3, 13, 129, 135, 143]), np.array([56, 56, 0, 9, 100, 50]),
                        np.full(6, 1400))
    assert body.tolist() == [56, 0, 12, 9, 16, 40]


# ---------------------------------------------------------------------------------------------- time, addresses

def test_iat_model_fit_sample_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    iats = [np.concatenate([[0], rng.lognormal(np.log(500), 0.3, 999)]) for _ in range(3)]
    model = IatModel.fit(iats, "dns")
    sample = model.sample(5000, np.random.default_rng(1))
    assert 300 < np.median(sample) < 800 and (sample >= 0).all()
    model.save(tmp_path / "iat.json")
    back = IatModel.load(tmp_path / "iat.json")
    assert back.label == "dns" and np.allclose(back.counts, model.counts)
    assert json.loads((tmp_path / "iat.json").read_text())["format"] == "netdiff-iat/1"


def test_timestamps_monotonic_from_times_or_model() -> None:
    ts = timestamps(5, np.array([0, 10, -3, np.nan, 1.5]), start_ns=1000)
    assert ts.tolist() == [1000, 11000, 11000, 11000, 12500]
    sampled = timestamps(500, None, IatModel.default(), seed=4)
    assert sampled[0] == DEFAULT_START_NS and (np.diff(sampled) >= 0).all()
    assert (timestamps(500, None, None, seed=4) == sampled).all()


def test_address_plans() -> None:
    fam = np.array([4, 4, 4, 6])
    client = np.array([4, 4, 4, 6])
    server = np.array([1, 2, 1, 3])
    c, s = assign(AddressPlan(), fam, client, server, np.array([53, 443, 53, 80]))
    v4 = lambda b: str(ipaddress.ip_address(bytes(b[:4])))  # noqa: E731
    assert [v4(x) for x in c[:3]] == ["192.0.2.1"] * 3
    assert [v4(x) for x in s[:3]] == ["198.51.100.1", "198.51.100.2", "198.51.100.1"]
    assert ipaddress.ip_address(bytes(s[3])) in ipaddress.ip_network("2001:db8::/32")
    plan = AddressPlan.subnets(["10.1.0.0/30"], ["2001:db8:aa::/126", "172.16.0.5"])
    c, s = assign(plan, fam, client, server, np.array([53, 443, 53, 80]))
    assert v4(c[0]) == "10.1.0.1" and v4(s[0]) == "172.16.0.5"
    assert AddressPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    mac = macs(c, fam)
    assert (mac[:, 0] == 0x02).all()
    with pytest.raises(ConfigError):
        AddressPlan(client_v4=("2001:db8::/64",))


def test_template_plan_takes_hosts_and_services() -> None:
    dns = sorted((SAMPLES / "dns").glob("*.pcap"))
    if not dns:
        pytest.skip("no sample captures")
    plan = AddressPlan.from_template(dns[0])
    assert plan.client_v4 == ("127.0.0.1",) and any(port for (fam, port), _ in plan.services)
    rec = reconstruct(encode_pcap(dns[0], NETDIFFUSION).trace.matrix, config=RepairConfig(plan=plan))
    assert all(p[26:30] == bytes([127, 0, 0, 1]) for p in rec.packets())


# ---------------------------------------------------------------------------------------------- report

def test_report_is_json_and_counts_changes(tmp_path: Path) -> None:
    m = matrix_of([E / IP(src="1.1.1.1", dst="2.2.2.2", ttl=0) / UDP(sport=40000, dport=40001) / b"abcd"], tmp_path)
    rec = reconstruct(m, label="dns", source="x")
    rep = rec.report
    assert rep.field_changed["ipv4_ttl"] == 1  # TTL 0 -> 1
    assert rep.field_changed["udp_len"] == 0 and rep.kept_fraction() < 1.0
    back = RepairReport.from_dict(json.loads(rep.to_json()))
    assert back == rep and rep.to_dict()["field_fraction"]["ipv4_ttl"] == pytest.approx(1 / 8)
    assert field(rec.matrix, "ipv4_ttl").tolist() == [1]
