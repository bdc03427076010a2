"""Done-when for reconstruction: >= 1,000 adversarial matrices -> pcaps that every check accepts.

The corpus (:func:`adversarial_corpus`, also replayed by ``test_replay.py``): uniform random ternary matrices,
all -1, all 1, all 0, windows of the sample captures with flipped bits (0.1 % .. 20 %), NetDiffusion's raw
generated sample rebuilt from ``netdiffusion.md`` sections 6 and 9 (TCP-shaped real rows blurred, ipv4_ver 0000
in 92 % and IHL 0011 in 83 % of rows, extra -1s, blue padding rows), and a few full 1,024-row images.  Most
traces are short (4-64 rows) so that the whole corpus takes seconds; tshark runs once per kind on the
concatenated output.

Validity comes from tshark (checksums on) and the built-in validator; coherence from an independent checker
written here from the rules' statements (it shares no code with reconstruction): lengths, options, TCP
handshake / teardown / sequence / acknowledgement rules, IP ID counters, monotonic time, documentation
addresses and locally administered MACs.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.nprint import encode_pcap
from netdiff_lib.pcap import PcapFile
from netdiff_lib.repair import Reconstruction, RepairConfig, reconstruct_batch
from netdiff_lib.schema import NETDIFFUSION, uint_to_bits
from netdiff_lib.validate import validate_pcap

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "captures"
DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
MOD = 1 << 32


def _samples() -> list[np.ndarray]:
    files = sorted(SAMPLES.glob("*/*.pcap"))
    if not files:
        pytest.skip("no sample captures under samples/captures")
    return [m for m in (encode_pcap(f, NETDIFFUSION).trace.matrix for f in files) if len(m)]


def _netdiffusion_raw(rng: np.random.Generator, tcp_rows: np.ndarray, n: int, pad: int) -> np.ndarray:
    m = tcp_rows[rng.integers(0, len(tcp_rows), n)].copy()
    blur = rng.random(m.shape) < 0.08
    m[blur] = rng.integers(-1, 2, int(blur.sum()), dtype=np.int8)
    m[rng.random(n) < 0.92, NETDIFFUSION.span("ipv4_ver").slice] = 0
    m[rng.random(n) < 0.83, NETDIFFUSION.span("ipv4_hl").slice] = uint_to_bits(3, 4)
    m[rng.random(m.shape) < 0.03] = -1
    return np.vstack([m, np.full((pad, NETDIFFUSION.width), -1, np.int8)])


def adversarial_corpus(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(kind, matrix) pairs, 1,070 in all (see the module docstring); deterministic for a seed."""
    rng = np.random.default_rng(seed)
    real = _samples()
    rows = np.concatenate(real)
    tcp_rows = rows[(rows[:, NETDIFFUSION.span("tcp_sprt").slice] >= 0).all(axis=1)]
    width = NETDIFFUSION.width
    size = lambda: int(rng.integers(4, 65))  # noqa: E731
    out: list[tuple[str, np.ndarray]] = []
    out += [("random", rng.integers(-1, 2, (size(), width), dtype=np.int8)) for _ in range(300)]
    out += [("all-minus-one", np.full((size(), width), -1, np.int8)) for _ in range(60)]
    out += [("all-one", np.ones((size(), width), np.int8)) for _ in range(60)]
    out += [("all-zero", np.zeros((size(), width), np.int8)) for _ in range(40)]
    for _ in range(300):
        base = real[int(rng.integers(len(real)))]
        start = int(rng.integers(0, max(1, len(base) - 8)))
        m = base[start:start + size()].copy()
        flip = rng.random(m.shape) < rng.choice([0.001, 0.01, 0.05, 0.2])
        m[flip] = rng.integers(-1, 2, int(flip.sum()), dtype=np.int8)
        out.append(("flipped", m))
    out += [("netdiffusion", _netdiffusion_raw(rng, tcp_rows, size(), int(rng.integers(0, 8)))) for _ in range(300)]
    out += [("big", _netdiffusion_raw(rng, tcp_rows, 1023, 1)), ("big", _netdiffusion_raw(rng, tcp_rows, 1000, 24)),
            ("big", rng.integers(-1, 2, (1024, width), dtype=np.int8)), ("big", np.ones((1024, width), np.int8))]
    return out


def reconstruct_corpus(corpus: list[tuple[str, np.ndarray]], outdir: Path) -> list[tuple[str, Reconstruction, Path]]:
    """Reconstruct in batches and write one pcap per trace (as users do)."""
    out = []
    for start in range(0, len(corpus), 64):
        chunk = corpus[start:start + 64]
        recs = reconstruct_batch([m for _, m in chunk], NETDIFFUSION, labels=[k for k, _ in chunk],
                                 config=RepairConfig(seed=start))
        for j, ((kind, _), rec) in enumerate(zip(chunk, recs, strict=True)):
            out.append((kind, rec, rec.write(outdir / f"{kind}_{start + j}.pcap")))
    return out


def concatenate(paths: list[Path], dest: Path) -> Path:
    """One pcap holding the records of several (same link type, classic pcap)."""
    with open(dest, "wb") as fh:
        for i, p in enumerate(paths):
            data = p.read_bytes()
            fh.write(data if i == 0 else data[24:])
    return dest


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Reconstruction, Path]]:
    return reconstruct_corpus(adversarial_corpus(), tmp_path_factory.mktemp("adversarial"))


def test_corpus_has_at_least_1000_matrices_of_every_kind(outputs) -> None:
    kinds = defaultdict(int)
    for kind, _, _ in outputs:
        kinds[kind] += 1
    assert len(outputs) >= 1000 and set(kinds) >= {"random", "all-minus-one", "all-one", "flipped", "netdiffusion"}
    assert sum(len(rec) for _, rec, _ in outputs) > 25_000


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_finds_no_malformed_packet_expert_error_or_bad_checksum(outputs, tmp_path: Path) -> None:
    by_kind = defaultdict(list)
    for kind, rec, path in outputs:
        if len(rec):
            by_kind[kind].append(path)
    for kind, paths in by_kind.items():
        rep = validate_pcap(concatenate(paths, tmp_path / f"{kind}.pcap"), "tshark")
        assert rep.packets == sum(len(r) for k, r, _ in outputs if k == kind)
        assert (rep.malformed, rep.expert_errors, rep.bad_checksums) == (0, 0, 0), (kind, rep.problems[:5])


def test_builtin_validator_accepts_every_file(outputs) -> None:
    for _, rec, path in outputs[::7]:
        rep = validate_pcap(path, "builtin")
        assert rep.packets == len(rec) and rep.failed == 0, rep.problems[:3]
        assert rep.ok == (len(rec) > 0)  # an empty capture (a padding-only matrix) is not a valid one


def test_padding_only_matrices_give_empty_pcaps(outputs) -> None:
    empty = [(rec, path) for kind, rec, path in outputs if kind == "all-minus-one"]
    assert all(len(rec) == 0 and rec.report.padding_rows == rec.report.rows for rec, _ in empty)
    assert all(path.stat().st_size == 24 for _, path in empty)


def test_written_pcaps_encode_back_to_the_reported_matrix(outputs) -> None:
    for _, rec, path in outputs[::5]:
        back = encode_pcap(path, NETDIFFUSION).trace
        assert back.matrix.shape == rec.matrix.shape and (back.matrix == rec.matrix).all()
        assert (np.diff(back.ts_ns) >= 0).all()


def test_every_trace_is_coherent(outputs) -> None:
    problems = []
    for _, _, path in outputs:
        problems += [f"{path.name}: {p}" for p in check_trace(path)]
    assert not problems, problems[:10]


# ---------------------------------------------------------------------------- the independent checker

def _parse(frame: bytes) -> dict:
    """Ethernet / IPv4 / IPv6 / TCP / UDP / ICMP fields of one frame (asserting the lengths add up)."""
    p = {"dst_mac": frame[0:6], "src_mac": frame[6:12], "etype": struct.unpack_from(">H", frame, 12)[0]}
    ip = frame[14:]
    p["version"] = ip[0] >> 4
    if p["version"] == 4:
        ihl = (ip[0] & 0xF) * 4
        assert ihl >= 20 and struct.unpack_from(">H", ip, 2)[0] == len(ip), "IPv4 length"
        p.update(id=struct.unpack_from(">H", ip, 4)[0], df=bool(ip[6] & 0x40), proto=ip[9], src=ip[12:16],
                 dst=ip[16:20], ip_opts=ip[20:ihl], ttl=ip[8])
        assert not ip[6] & 0xBF and not ip[7], "fragment fields"
        l4 = ip[ihl:]
    else:
        assert struct.unpack_from(">H", ip, 4)[0] == len(ip) - 40, "IPv6 payload length"
        p.update(proto=ip[6], src=ip[8:24], dst=ip[24:40], ttl=ip[7])
        l4 = ip[40:]
    if p["proto"] == 6:
        doff = (l4[12] >> 4) * 4
        assert 20 <= doff <= len(l4), "TCP data offset"
        sport, dport, seq, ack = struct.unpack_from(">HHII", l4)
        p.update(sport=sport, dport=dport, seq=seq, ack=ack, flags=l4[13], res=l4[12] & 0x0E, opts=l4[20:doff],
                 payload=len(l4) - doff)
    elif p["proto"] == 17:
        sport, dport, length = struct.unpack_from(">HHH", l4)
        assert length == len(l4), "UDP length"
        p.update(sport=sport, dport=dport, payload=length - 8)
    else:  # ICMP: an echo conversation is its identifier (the flow rule)
        echo = l4[0] in (0, 8, 128, 129)
        ident = struct.unpack_from(">H", l4, 4)[0] + 1 if echo else 0
        p.update(sport=ident, dport=ident, icmp_type=l4[0], payload=len(l4) - 8)
    return p


def _options(opts: bytes, allowed: set[int]) -> list[int]:
    kinds, i = [], 0
    while i < len(opts):
        if opts[i] == 0:
            assert not any(opts[i + 1:]), "padding after EOL"
            break
        if opts[i] == 1:
            i += 1
            continue
        assert i + 1 < len(opts) and opts[i + 1] >= 2 and i + opts[i + 1] <= len(opts), "option length"
        kinds.append(opts[i])
        if opts[i] == 3:
            assert opts[i + 2] <= 14, "window scale"
        i += opts[i + 1]
    assert set(kinds) <= allowed and len(kinds) == len(set(kinds)), f"option kinds {kinds}"
    return kinds


def _packet_checks(p: dict) -> None:
    assert p["src_mac"][0] & 0x03 == 0x02 and p["dst_mac"][0] & 0x03 == 0x02, "MACs"
    assert p["etype"] == (0x0800 if p["version"] == 4 else 0x86DD), "ethertype"
    for a in (p["src"], p["dst"]):
        assert any(ipaddress.ip_address(bytes(a)) in n for n in DOC_NETS), "documentation address"
    assert p["ttl"] >= 1, "TTL"
    if p["version"] == 4:
        _options(p["ip_opts"], {148})
    if p["proto"] == 6:
        syn, ack = bool(p["flags"] & 0x02), bool(p["flags"] & 0x10)
        kinds = _options(p["opts"], {2, 3, 4, 5, 8})
        assert syn or not {2, 3, 4} & set(kinds), "SYN-only option"
        assert 5 not in kinds or (ack and not syn), "SACK"
        assert not p["res"] and (ack or p["ack"] == 0), "reserved bits / ack without ACK"
        assert not (syn and p["flags"] & 0x05), "SYN with FIN or RST"
    if p["proto"] in (1, 58):
        assert p["icmp_type"] != 5 and (p["icmp_type"] not in (3, 4, 11, 12) or p["proto"] == 58 or
                                        p["payload"] == 0), "ICMP body"


class _Side:
    def __init__(self, isn: int) -> None:
        self.isn, self.nxt, self.high, self.fin, self.last_ack = isn, 0, 0, False, -1

    def advance(self, p: dict, syn: bool, fin: bool) -> None:
        rel = (p["seq"] - self.isn) % MOD
        used = p["payload"] + syn + fin
        in_order = rel == self.nxt
        old = rel + used <= self.high and rel < self.nxt
        hole = 0 < rel - self.nxt <= 1 << 18
        assert in_order or old or hole or (syn and rel == 0), f"sequence {rel} vs {self.nxt}"
        assert not (self.fin and p["payload"]), "payload after FIN"
        self.nxt = max(self.nxt, rel + used)
        self.high = max(self.high, rel + used)
        self.fin |= fin


def _tcp_checks(pkts: list[dict]) -> None:
    """One TCP connection (time order): sessions, flags, sequence and acknowledgement numbers."""
    sessions: list[list[dict]] = []
    for p in pkts:
        pure_syn = p["flags"] & 0x12 == 0x02
        ended = bool(sessions) and any(q["flags"] & 0x05 for q in sessions[-1])
        if not sessions or (pure_syn and (p["seq"] != sessions[-1][0]["seq"] or ended)):
            sessions.append([])  # a new connection: a SYN with a new number, or after FIN / RST
        sessions[-1].append(p)
    for sess in sessions:
        a = (sess[0]["src"], sess[0]["sport"])
        sides: dict[bool, _Side] = {}
        fins = defaultdict(int)
        opened = bool(sess[0]["flags"] & 0x02)
        b_seen = False
        for i, p in enumerate(sess):
            is_a = (p["src"], p["sport"]) == a
            syn, fin, rst, ack = (bool(p["flags"] & f) for f in (0x02, 0x01, 0x04, 0x10))
            assert not rst or i == len(sess) - 1, "RST before the end"
            if syn:
                assert opened and ((is_a and not b_seen and not ack) or (not is_a and not b_seen and ack)), "SYN"
            if not is_a and not b_seen and opened:
                assert syn or rst, "no SYN-ACK"
                assert not ack or p["ack"] == (sides[True].isn + 1) % MOD, "SYN-ACK ack"
            b_seen |= not is_a
            side = sides.setdefault(is_a, _Side(p["seq"]))
            side.advance(p, syn, fin)
            fins[is_a] += fin
            assert fins[is_a] <= 1, "two FINs"
            peer = sides.get(not is_a)
            if ack and peer is not None:
                rel = (p["ack"] - peer.isn) % MOD
                assert rel <= peer.high and rel >= side.last_ack, f"ack {rel} (peer sent {peer.high})"
                side.last_ack = rel


def check_trace(path: Path) -> list[str]:
    """Problems of one reconstructed pcap ([] when it satisfies every rule)."""
    problems: list[str] = []
    conns: dict[tuple, list[dict]] = defaultdict(list)
    ids: dict[tuple, list[tuple[int, bool]]] = defaultdict(list)
    last_ts = -1
    for batch in PcapFile(path).batches():
        for i in range(len(batch)):
            assert batch.ts_ns[i] >= last_ts, "time goes back"
            last_ts = int(batch.ts_ns[i])
            try:
                p = _parse(batch.packet(i))
                _packet_checks(p)
            except AssertionError as exc:
                problems.append(f"packet {i}: {exc}")
                continue
            ends = sorted([(bytes(p["src"]), p["sport"]), (bytes(p["dst"]), p["dport"])])
            if p["proto"] == 6:
                conns[tuple(ends)].append(p)
            if p["version"] == 4:
                ids[(bytes(p["src"]), p["proto"], tuple(ends))].append((p["id"], p["df"]))
    for key, pkts in conns.items():
        try:
            _tcp_checks(pkts)
        except AssertionError as exc:
            problems.append(f"TCP {key}: {exc}")
    for key, seq in ids.items():
        ahead = [(x - seq[0][0]) % 65536 for x, _ in seq]
        fresh = [not df for _, df in seq]
        if any(b < a or (b == a and f) for a, b, f in zip(ahead, ahead[1:], fresh[1:], strict=False)):
            problems.append(f"IP IDs of {key} go back or repeat without DF")
    return problems
