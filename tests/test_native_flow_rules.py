"""The decoding rules of :mod:`netdiff_lib.models.native.flow_rules`: one-packet flows at the class's share
(``model.conv_decode=calibrate``) and full handshakes (``model.tcp_state=handshake``).

Hand-built arrays check each rule's contract; the sample captures' own tokens check that real traffic comes
back whole; random tokens, reconstruction, nfstream and tshark check the output as the evaluation sees it.
"""

from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from sample_sets import assert_tshark_clean, handshakes, labelled_traces

from netdiff_lib.config import tiny
from netdiff_lib.errors import ConfigError
from netdiff_lib.models.native.endpoints import (
    ACK,
    FIN,
    RST,
    SYN,
    connection_flags,
    flow_ids,
    regroup,
    tcp_connections,
)
from netdiff_lib.models.native.field_tokens import FieldTokens
from netdiff_lib.models.native.flow_rules import Calibration, handshake_order, single_rates
from netdiff_lib.models.native.model import load_model_dir, save_model_dir
from netdiff_lib.models.native.sampler import generate_traces
from netdiff_lib.models.native.tokens import FieldTokenizer, read_fields
from netdiff_lib.repair import RepairConfig, reconstruct_batch
from netdiff_lib.trace import Trace
from netdiff_lib.validate import validate_pcap


@pytest.fixture(scope="module")
def traces(samples_dir: Path) -> list[Trace]:
    return labelled_traces(samples_dir, 256)


def _fit(traces: list[Trace], conv_decode: str, tcp_state: str, k: int = 8) -> FieldTokenizer:
    return FieldTokenizer.fit([t.matrix for t in traces], [t.label for t in traces], endpoints_mode="conv",
                              conversations=k, tcp_state=tcp_state, conv_decode=conv_decode)


# -- full handshakes, on hand-built connections ------------------------------------------------------------------


def _connections(shapes: list[str], opened: float = 1.0, seed: int = 0) -> dict[str, list]:
    """One trace of TCP connections, ``shapes[i]`` the sides of connection ``i``'s packets in order (``A`` the
    initiator, ``B`` the responder; ``=``: a connection whose two ports are equal), interleaved at random; the
    rules applied at opening rate ``opened``.  Per connection: (sides, packet ids, flags) before and after."""
    rng = np.random.default_rng(seed)
    flow = rng.permutation(np.repeat(np.arange(len(shapes)), [len(s) for s in shapes]))
    rank = np.array([np.sum(flow[:i] == flow[i]) for i in range(len(flow))])
    back = np.array([shapes[f][r] == "B" for f, r in zip(flow, rank, strict=True)])
    same = np.array([shapes[f][0] == "=" for f in flow])
    sport = np.where(same, 5000, np.where(back, 443, 40000 + flow))
    dport = np.where(same, 5000, np.where(back, 40000 + flow, 443))
    n = len(flow)
    flags = np.where(rank == 0, SYN, ACK | 0x008)
    conn = tcp_connections(flags, np.ones(n, bool), np.zeros(n, np.int64), np.full(n, 4), sport, dport, ["c"],
                           {"c": [opened, 0.0]}, rng)
    order, flip = handshake_order(conn, sport, dport, n)
    s2 = np.where(flip, dport[order], sport[order])
    out = connection_flags(conn, flags[order], s2, handshake=True)
    assert np.array_equal(flow[order], flow), "a packet left its connection's places"
    ids = np.arange(n)[order]
    res: dict[str, list] = {"before": [], "after": [], "flags": [], "moved": []}
    for f in range(len(shapes)):
        sel = np.flatnonzero(flow == f)
        res["before"].append("".join("B" if b else "A" for b in back[sel]))
        res["after"].append("".join("B" if s2[i] != s2[sel[0]] else "A" for i in sel))
        res["flags"].append(out[sel].tolist())
        res["moved"].append(np.searchsorted(sel, ids[sel]).tolist())  # per place: the packet's rank before
    return res


def test_an_opened_connection_starts_with_syn_synack_ack_by_the_least_change() -> None:
    shapes = ["AAABB", "ABBA", "AAA", "ABB", "AA", "ABAB", "A", "ABBBAB"]
    got = _connections(shapes)
    assert got["after"] == ["ABAAB", "ABAB", "ABA", "ABA", "AB", "ABAB", "A", "ABABBB"]
    # a stable move where the connection holds a packet of the side needed: each side keeps its packets in order
    assert got["moved"][0] == [0, 3, 1, 2, 4] and got["moved"][1] == [0, 1, 3, 2]
    assert got["moved"][7] == [0, 1, 4, 2, 3, 5]
    # a flip (direction changed in place) where it holds none: no packet changes place
    assert [got["moved"][i] for i in (2, 3, 4)] == [[0, 1, 2], [0, 1, 2], [0, 1]]
    assert got["moved"][5] == [0, 1, 2, 3] and got["moved"][6] == [0]
    for shape, flags in zip(got["after"], got["flags"], strict=True):
        assert flags[0] == SYN
        if len(shape) >= 2:
            assert flags[1] == SYN | ACK
        if len(shape) >= 3:
            assert flags[2] & (SYN | ACK) == ACK
        assert all(f & SYN == 0 for f in flags[2:])


def test_connections_not_opened_or_without_direction_stay_as_sampled() -> None:
    shut = _connections(["AAABB", "ABB", "AA"], opened=0.0)
    assert shut["after"] == shut["before"] and shut["moved"] == [[0, 1, 2, 3, 4], [0, 1, 2], [0, 1]]
    assert all(f & SYN == 0 for flags in shut["flags"] for f in flags)
    same = _connections(["====", "AAB"])
    assert same["moved"][0] == [0, 1, 2, 3] and same["after"][1] == "ABA"


def test_a_closing_that_the_synack_took_moves_to_a_later_packet() -> None:
    """A closed connection whose only FIN was on the responder's first packet (now the SYN-ACK) still closes."""
    n = 4
    sport, dport = np.array([40000, 40000, 443, 40000]), np.array([443, 443, 40000, 443])
    flags = np.array([SYN, ACK, ACK | FIN, ACK])
    conn = tcp_connections(flags, np.ones(n, bool), np.zeros(n, np.int64), np.full(n, 4), sport, dport, ["c"],
                           {"c": [1.0, 1.0]}, np.random.default_rng(0))
    order, flip = handshake_order(conn, sport, dport, n)
    s2 = np.where(flip, dport[order], sport[order])
    out = connection_flags(conn, flags[order], s2, handshake=True)
    assert out[:3].tolist() == [SYN, SYN | ACK, ACK] and out[3] & FIN and not out[3] & (SYN | RST)
    assert connection_flags(conn, flags, sport)[2] == SYN | ACK  # enforce alone loses it (as before)


# -- one-packet flows at the class's share, on hand-built conversations -----------------------------------------


def _conversations(traces: int, sizes: list[int], udp: list[bool], fixed: list[bool] | None = None) -> tuple:
    """``traces`` traces, each with conversations of ``sizes`` packets (UDP where ``udp``; both ports service
    values where ``fixed``, else an ephemeral client port), their packets laid out one conversation after the
    other."""
    fixed = fixed or [False] * len(sizes)
    per = np.repeat(np.arange(len(sizes)), sizes)
    m = len(per)
    trace = np.repeat(np.arange(traces), m)
    conv = trace * len(sizes) + np.tile(per, traces)
    kind = 16 + np.where(np.array(udp)[np.tile(per, traces)], 2, 1)
    srv = np.full(len(conv), 3)
    cli = np.where(np.array(fixed)[np.tile(per, traces)], 3, 9)  # 9: the ephemeral token (first_slot)
    return conv, np.zeros(len(conv), np.int64), trace, kind, srv, cli


def _lone_share(conv: np.ndarray, kind: np.ndarray, srv: np.ndarray, cli: np.ndarray, trace: np.ndarray,
                transport: int) -> float:
    """Share of one-packet flows of a transport once ports are decoded (fixed port pairs shared per trace)."""
    key = np.where(cli == 9, conv + (1 << 40), (trace * 64 + kind) * 100 + srv * 10 + cli)
    sel = kind % 4 == transport
    _, sizes = np.unique(key[sel], return_counts=True)
    return float((sizes == 1).mean())


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 1.0])
def test_calibrate_keeps_one_packet_flows_at_the_class_share_per_transport(share: float) -> None:
    # per trace: TCP 4 of 3 packets + 4 lone (50 % lone), UDP 6 of 2 packets + 2 lone (25 % lone)
    sizes = [3] * 4 + [1] * 4 + [2] * 6 + [1] * 2
    udp = [False] * 8 + [True] * 8
    conv, role, trace, kind, srv, cli = _conversations(400, sizes, udp)
    cal = Calibration(np.tile([share, share / 2], (400, 1)), np.zeros(400, np.int64), 9, np.random.default_rng(1))
    out, _ = regroup(conv, role, trace, kind, srv, cli, calibrate=cal)
    assert np.array_equal(np.unique(np.c_[out, kind], axis=0)[:, 0], np.unique(out))  # one transport each
    tcp, udp_share = _lone_share(out, kind, srv, cli, trace, 1), _lone_share(out, kind, srv, cli, trace, 2)
    assert tcp == pytest.approx(min(share, 0.5), abs=0.02)
    assert udp_share == pytest.approx(min(share / 2, 0.25), abs=0.02)
    if share == 0.0:  # as merge
        assert np.array_equal(out, regroup(conv, role, trace, kind, srv, cli, singles=True)[0])
    if share == 1.0:  # as regroup
        assert np.array_equal(out, regroup(conv, role, trace, kind, srv, cli)[0])


def test_calibrate_counts_flows_as_the_decoded_ports_make_them() -> None:
    """Lone conversations on a fixed port pair (NTP 123-123) that another conversation of the trace shares are
    no one-packet flow: they are neither counted nor moved."""
    sizes, udp = [2, 1, 1, 2, 1], [True] * 5
    conv, role, trace, kind, srv, cli = _conversations(300, sizes, udp, fixed=[True, True, True, False, False])
    assert _lone_share(conv, kind, srv, cli, trace, 2) == pytest.approx(1 / 3)
    cal = Calibration(np.tile([0.0, 0.2], (300, 1)), np.zeros(300, np.int64), 9, np.random.default_rng(2))
    out, _ = regroup(conv, role, trace, kind, srv, cli, calibrate=cal)
    assert _lone_share(out, kind, srv, cli, trace, 2) == pytest.approx(0.2, abs=0.03)
    fixed_lone = np.isin(np.arange(len(conv)) % 7, (2, 3))
    assert (np.bincount(out)[out[fixed_lone]] == 1).all()  # they stayed alone


def test_single_rates_per_class_and_transport() -> None:
    # trace 0 (class a): TCP flows of 1, 1, 3 packets; UDP 2, 2; trace 1 (class b): UDP 1, 2, 2, 2 and no TCP
    spec = [(0, 1, 1000, 1), (0, 1, 1001, 1), (0, 1, 1002, 3), (0, 2, 1003, 2), (0, 2, 1004, 2),
            (1, 2, 1005, 1), (1, 2, 1006, 2), (1, 2, 1007, 2), (1, 2, 1008, 2)]
    rows = [(t, l4, p) for t, l4, p, k in spec for _ in range(k)]
    trace, l4, port = (np.array(x) for x in zip(*rows, strict=True))
    rates = single_rates(trace, np.full(len(trace), 4), l4, port, np.full(len(trace), 53), ["a", "b"])
    assert rates["a"] == pytest.approx([2 / 3, 0.0]) and rates["b"] == pytest.approx([2 / 3, 0.25])  # b: pooled TCP
    assert rates[""] == pytest.approx([2 / 3, 1 / 6])


# -- real tokens, random tokens, model folders ------------------------------------------------------------------


def _flows(matrix: np.ndarray, trace_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = read_fields(matrix)
    s, d = f.values["sport"], f.values["dport"]
    flow = flow_ids(trace_of, f.l3, f.l4, s, d)
    first = np.zeros(int(flow.max()) + 1, np.int64)
    first[flow[::-1]] = s[::-1]
    return flow, s == first[flow], (f.l4 == 1) | (f.l4 == 2)


@pytest.mark.parametrize(("conv_decode", "tcp_state"), [("calibrate", "enforce"), ("regroup", "handshake"),
                                                        ("calibrate", "handshake")])
def test_real_tokens_in_one_batch_come_back_whole(traces: list[Trace], conv_decode: str, tcp_state: str) -> None:
    """A batch of the training traces' own tokens holds each class's one-packet share exactly (nothing is
    moved), and their opened connections are real handshakes already (nothing is reordered)."""
    tok = _fit(traces, conv_decode, tcp_state)
    assert bool(tok.single_rates) is (conv_decode == "calibrate")
    enc = [tok.encode(t.matrix, t.iat_us()) for t in traces]
    trace_of = np.repeat(np.arange(len(traces)), [len(t.matrix) for t in traces])
    matrix, _ = tok.decode(np.concatenate([e[0] for e in enc]), np.concatenate([e[1] for e in enc]), trace_of,
                           np.random.default_rng(0), [t.label for t in traces])
    (fa, da, ported), (fb, db, _) = _flows(np.concatenate([t.matrix for t in traces]), trace_of), _flows(matrix,
                                                                                                       trace_of)
    assert np.array_equal(fa[ported], fb[ported]) and np.array_equal(da[ported], db[ported])


def test_random_tokens_give_full_handshakes_as_nfstream_counts_them_and_valid_pcaps(traces: list[Trace],
                                                                                    tmp_path: Path) -> None:
    from netdiff_lib.evaluate.flows import FlowMeter, _tcp_state

    tok = _fit(traces, "calibrate", "handshake", k=4)
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 120, size=40)
    n = int(lengths.sum())
    tokens = np.stack([rng.integers(0, s, size=n) for s in tok.sizes], axis=1)
    tokens[:, 0] = np.where(rng.random(n) < 0.6, 1 + [k[2] for k in tok.kinds].index(1), tokens[:, 0])  # TCP
    tokens[:, tok.col("conv")] = rng.integers(1, tok.sizes[tok.col("conv")], size=n)  # every packet in one
    trace_of = np.repeat(np.arange(len(lengths)), lengths)
    labels = [traces[i % len(traces)].label for i in range(len(lengths))]
    matrix, iat = tok.decode(tokens, np.full(n, -0.2), trace_of, rng, labels)
    bounds = np.r_[0, np.cumsum(lengths)]
    recs = reconstruct_batch([matrix[a:b] for a, b in pairwise(bounds)], iat_us=np.split(iat, bounds[1:-1]),
                             labels=labels, config=RepairConfig(seed=0))
    paths = [r.write(tmp_path / f"t{i}.pcap") for i, r in enumerate(recs)]
    pytest.importorskip("nfstream")
    df, failed = FlowMeter(tmp_path).table([(str(p), lab) for p, lab in zip(paths, labels, strict=True)])
    assert not failed
    tcp = df[df["protocol"] == 6]
    state = _tcp_state(tcp)
    opened = np.array([s.split("/")[0] in ("handshake", "syn") for s in state])
    big = (tcp["bidirectional_packets"].to_numpy() >= 3) & (tcp["src_port"] != tcp["dst_port"]).to_numpy()
    assert (opened & big).sum() > 50
    assert all(s.startswith("handshake") for s in state[opened & big])
    assert assert_tshark_clean(recs, tmp_path / "all.pcap") > n // 2


def test_switches_and_older_folders(traces: list[Trace], tmp_path: Path) -> None:
    """``calibrate`` and ``handshake`` are kept in tokens.json; a folder without them (``regroup``/``enforce``,
    no ``single_rates``) decodes as it did, and ``calibrate`` without fitted shares decodes as ``regroup``."""
    for bad in ("model.conv_decode=calibrated", "model.tcp_state=handshakes"):
        with pytest.raises(ConfigError):
            tiny().with_settings([bad])
    cfg = tiny().with_settings(["model.conversations=8", "model.conv_decode=calibrate", "model.tcp_state=handshake"])
    labels = sorted({t.label for t in traces})
    rep = FieldTokens.fit(cfg, traces, [t.label for t in traces])
    stats = {"lengths": {lab: [7, 30] for lab in labels}, "iat_us": {}, "traces": {}, "packets": {}}
    save_model_dir(tmp_path / "m", dict(rep.network(cfg, len(labels)).named_parameters()), cfg, rep, labels, stats)
    saved = json.loads((tmp_path / "m" / "tokens.json").read_text())
    assert (saved["conv_decode"], saved["tcp_state"]) == ("calibrate", "handshake") and saved["single_rates"]["dns"]
    tok = load_model_dir(tmp_path / "m").representation.tokenizer
    assert tok == rep.tokenizer
    rng = np.random.default_rng(9)
    tokens = np.stack([rng.integers(0, s, size=600) for s in tok.sizes], axis=1)
    trace_of, labs = np.repeat(np.arange(6), 100), [labels[i % len(labels)] for i in range(6)]

    def decode(**mode: object) -> np.ndarray:
        for k, v in mode.items():
            setattr(tok, k, v)
        return tok.decode(tokens, np.zeros(600), trace_of, np.random.default_rng(4), labs)[0]

    new = decode()
    rates = tok.single_rates
    old = decode(conv_decode="regroup", tcp_state="enforce", single_rates={})
    assert not np.array_equal(new, old)
    assert np.array_equal(decode(conv_decode="calibrate"), old)  # no fitted shares: regroup
    for key in ("single_rates",):
        del saved[key]
    saved.update(conv_decode="regroup", tcp_state="enforce")
    (tmp_path / "m" / "tokens.json").write_text(json.dumps(saved))
    older = load_model_dir(tmp_path / "m").representation.tokenizer
    assert older.single_rates == {} and np.array_equal(
        older.decode(tokens, np.zeros(600), trace_of, np.random.default_rng(4), labs)[0], old)
    assert rates and len(generate_traces(load_model_dir(tmp_path / "m"), 1, seed=0, progress=False)) == len(labels)


def test_a_tiny_model_generates_handshakes_and_valid_pcaps_with_the_rules(samples_dir: Path, tmp_path: Path) -> None:
    """Train ``tiny`` briefly with both rules, generate through the sampler (its decoding path), reconstruct, and
    validate with tshark; every opened connection of three packets or more starts SYN, SYN-ACK, ACK."""
    from netdiff_lib.encoded import from_captures
    from netdiff_lib.generate import write_pcaps
    from netdiff_lib.models.native.train import train

    cfg = tiny().with_settings(["model.conv_decode=calibrate", "model.tcp_state=handshake", "train.steps=30"])
    train(cfg, from_captures(str(samples_dir), 64), str(tmp_path / "m"), progress=False)
    model = load_model_dir(tmp_path / "m")
    assert model.representation.tokenizer.single_rates
    traces = generate_traces(model, 4, seed=0, progress=False)
    opened, whole = handshakes(t.matrix for t in traces)
    assert opened > 0 and whole == opened
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    paths = write_pcaps(traces, tmp_path / "out", model.layout, seed=0, progress=False)
    reports = [validate_pcap(p, "tshark") for p in paths]
    assert sum(r.packets for r in reports) > 0
    assert [(r.malformed, r.expert_errors, r.bad_checksums) for r in reports] == [(0, 0, 0)] * len(reports)
