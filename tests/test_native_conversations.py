"""Conversations in the token view (model.endpoints=conv) and the TCP state rules (model.tcp_state=enforce).

Real parts: the sample captures, the tokenizer, reconstruction, tshark.  The round trip below is what a
perfect model of the tokens would give: every flow comes back whole, every packet keeps its direction, and the
reconstructed flows have the real ones' sizes and openings.
"""

from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from sample_sets import assert_tshark_clean, labelled_traces

from netdiff_lib.config import tiny
from netdiff_lib.errors import ConfigError
from netdiff_lib.models.native.endpoints import ACK, FIN, RST, SYN, enforce_tcp, flow_ids
from netdiff_lib.models.native.field_tokens import FieldTokens
from netdiff_lib.models.native.model import load_model_dir, save_model_dir
from netdiff_lib.models.native.sampler import generate_traces
from netdiff_lib.models.native.tokens import FieldTokenizer, read_fields
from netdiff_lib.repair import RepairConfig, reconstruct_batch
from netdiff_lib.trace import Trace


@pytest.fixture(scope="module")
def traces(samples_dir: Path) -> list[Trace]:
    return labelled_traces(samples_dir, 256)


def _fit(traces: list[Trace], endpoints: str = "conv", tcp_state: str = "off", k: int = 8,
         conv_decode: str = "index") -> FieldTokenizer:
    return FieldTokenizer.fit([t.matrix for t in traces], [t.label for t in traces], endpoints_mode=endpoints,
                              conversations=k, tcp_state=tcp_state, conv_decode=conv_decode)


def _flows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flow id, is initiator -> responder, is TCP/UDP) per packet, by ports (reconstruction's grouping)."""
    f = read_fields(matrix)
    s, d = f.values["sport"], f.values["dport"]
    flow = flow_ids(np.zeros(len(matrix)), f.l3, f.l4, s, d)
    first = np.zeros(int(flow.max()) + 1 if len(flow) else 0, np.int64)
    first[flow[::-1]] = s[::-1]  # the source port of each flow's first packet
    return flow, s == first[flow], (f.l4 == 1) | (f.l4 == 2)


def _one_trace(traces: list[Trace], label: str) -> Trace:
    """All captures of one class as one trace (more flows than the slots and conversation indices)."""
    parts = [t for t in traces if t.label == label]
    return Trace(np.concatenate([t.matrix for t in parts]), parts[0].layout, label=label,
                 ts_ns=np.cumsum(np.concatenate([np.maximum(t.iat_us(), 0) for t in parts])).astype(np.int64) * 1000)


@pytest.mark.parametrize("conv_decode", ["index", "regroup"])
def test_round_trip_keeps_every_flow_whole_and_every_direction(traces: list[Trace], conv_decode: str) -> None:
    tok = _fit(traces, conv_decode=conv_decode)
    rng = np.random.default_rng(0)
    for t in [*traces, _one_trace(traces, "dns")]:
        tokens, iat = tok.encode(t.matrix, t.iat_us())
        matrix, _ = tok.decode(tokens, iat, rng=rng, labels=[t.label])
        (fa, da, ported), (fb, db, _) = _flows(t.matrix), _flows(matrix)
        assert np.array_equal(fa[ported], fb[ported]) and np.array_equal(da[ported], db[ported]), t.label


def test_ports_merge_flows_past_the_slots_where_conversations_do_not(traces: list[Trace]) -> None:
    """Today's slots: the 33rd distinct ephemeral port of a trace shares the last slot (flows merge); a
    conversation index is reused once its conversation has ended, so a long trace keeps every flow."""
    t = _one_trace(traces, "dns")
    fa, _, ported = _flows(t.matrix)
    assert len(np.unique(fa[ported])) > 33
    for endpoints, kept in (("ports", False), ("conv", True)):
        tok = FieldTokenizer.fit([x.matrix for x in traces], [x.label for x in traces], endpoints_mode=endpoints)
        matrix, _ = tok.decode(*tok.encode(t.matrix, t.iat_us()), rng=np.random.default_rng(1), labels=["dns"])
        assert np.array_equal(fa[ported], _flows(matrix)[0][ported]) is kept, endpoints


def _flow_figures(matrices: list[np.ndarray], iats: list[np.ndarray], labels: list[str]) -> tuple[float, ...]:
    """(flows, one-packet share, median packets per flow, share of TCP flows opening with SYN) after
    reconstruction, by reconstruction's own flow grouping."""
    recs = reconstruct_batch(matrices, iat_us=iats, labels=labels, config=RepairConfig(seed=0))
    sizes, opened = [], []
    for r in recs:
        flow, _, ported = _flows(r.matrix)
        f = read_fields(r.matrix)
        counts = np.bincount(flow[ported])
        sizes += counts[counts > 0].tolist()
        first = np.unique(flow[ported & (f.l4 == 1)], return_index=True)[1]
        opened += ((f.values["tcp_flags"][ported & (f.l4 == 1)][first] & SYN) > 0).tolist()
    s = np.asarray(sizes)
    return len(s), float((s == 1).mean()), float(np.median(s)), float(np.mean(opened))


@pytest.mark.parametrize("tcp_state", ["off", "enforce", "handshake"])
def test_a_perfect_model_of_conversations_gives_the_real_flow_figures(traces: list[Trace], tcp_state: str) -> None:
    tok = _fit(traces, tcp_state=tcp_state)
    rng = np.random.default_rng(2)
    mats, iats, labels = [t.matrix for t in traces], [t.iat_us() for t in traces], [t.label for t in traces]
    out = [tok.decode(*tok.encode(m, i), rng=rng, labels=[lab]) for m, i, lab in zip(mats, iats, labels, strict=True)]
    real = _flow_figures(mats, iats, labels)
    assert real[0] > 50 and real[3] > 0.9
    assert _flow_figures([o[0] for o in out], [o[1] for o in out], labels) == pytest.approx(real, abs=0.02)


def test_random_tokens_still_decode_to_whole_flows_and_valid_pcaps(traces: list[Trace], tmp_path: Path) -> None:
    tok = _fit(traces, tcp_state="enforce", k=4)
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 120, size=40)
    n = int(lengths.sum())
    tokens = np.stack([rng.integers(0, s, size=n) for s in tok.sizes], axis=1)
    trace_of = np.repeat(np.arange(len(lengths)), lengths)
    labels = [traces[i % len(traces)].label for i in range(len(lengths))]
    matrix, iat = tok.decode(tokens, rng.normal(size=n), trace_of, rng, labels)
    bounds = np.r_[0, np.cumsum(lengths)]
    mats = [matrix[a:b] for a, b in pairwise(bounds)]
    col = tok.col("conv")
    for m, (a, b) in zip(mats, pairwise(bounds), strict=True):
        f = read_fields(m)
        ported = (f.l3 != 0) & ((f.l4 == 1) | (f.l4 == 2))
        c = tokens[a:b, col] - 1
        k, role = c // 3, c % 3
        epoch = np.array([np.sum((k[: i + 1] == k[i]) & (role[: i + 1] == 0)) for i in range(len(k))])
        pair = np.minimum(f.values["sport"], f.values["dport"]) * 65536 + np.maximum(f.values["sport"],
                                                                                    f.values["dport"])
        for key in set(zip(k[ported].tolist(), epoch[ported].tolist(), strict=True)):
            sel = ported & (k == key[0]) & (epoch == key[1])
            assert len(np.unique(pair[sel])) == 1
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    recs = reconstruct_batch(mats, iat_us=np.split(iat, bounds[1:-1]), labels=labels, config=RepairConfig(seed=0))
    assert assert_tshark_clean(recs, tmp_path / "all.pcap") > n // 2


def _interleaved(traces: list[Trace], a: str, b: str) -> list[Trace]:
    """Traces of class ``a``'s and ``b``'s captures with their packets interleaved (both transports at once)."""
    out = []
    for x, y in zip([t for t in traces if t.label == a], [t for t in traces if t.label == b], strict=False):
        order = np.argsort(np.r_[np.arange(len(x.matrix)), (np.arange(len(y.matrix)) + 0.5) * len(x.matrix)
                                 / len(y.matrix)], kind="stable")
        out.append(Trace(np.concatenate([x.matrix, y.matrix])[order], x.layout, label=a,
                         ts_ns=np.arange(len(order), dtype=np.int64) * 1_000_000))
    return out


def _strays(tok: FieldTokenizer, tokens: np.ndarray) -> list[tuple[int, int]]:
    """(packet, conv token) pairs that move a packet (not an opening) into the conversation of another transport
    current at it, where the packet of its own kind and port tokens nearest to it is of its own conversation."""
    col = tok.col("conv")
    kind = np.array([(0, -1, 0), *tok.kinds])[tokens[:, 0], 2]
    c = tokens[:, col] - 1
    sig = [tuple(r) for r in np.c_[kind, tokens[:, col + 1 : col + 3]]]
    epochs = [np.sum((c[: i + 1] // 3 == c[i] // 3) & (c[: i + 1] % 3 == 0)) for i in range(len(c))]
    conv = np.array(epochs) * 1000 + c // 3  # the index's conversation (index decoding) of each packet
    out = []
    for i in np.flatnonzero((c >= 0) & (c % 3 != 0)):
        same = [j for j in np.flatnonzero(c >= 0) if j != i and sig[j] == sig[i]]
        near = sorted(same, key=lambda j: abs(j - i))[:2]
        if not near or conv[near[0]] != conv[i] or (len(near) > 1 and abs(near[1] - i) == abs(near[0] - i)
                                                     and conv[near[1]] != conv[i]):
            continue
        other = [j for j in range(i) if c[j] >= 0 and kind[j] != kind[i]]
        if not other:
            continue
        k = c[other[-1]] // 3
        epoch = (conv == conv[other[-1]]) & (c >= 0)
        if not ((c[other[-1] + 1 : i] // 3 == k) & (c[other[-1] + 1 : i] % 3 == 0)).any() and \
                (kind[epoch] != kind[i]).sum() > 1:
            out.append((int(i), int(1 + 3 * k + c[i] % 3)))
    return out


def test_regroup_gives_a_stray_packet_back_to_the_conversation_of_its_transport(traces: list[Trace]) -> None:
    """A TCP packet the model put into a UDP conversation (or the reverse) gets that conversation's ports with
    ``index`` decoding, and leaves its own flow (two flows where there was one); ``regroup`` gives it back."""
    moved = 0
    tok = _fit(traces)
    for t in _interleaved(traces, "http", "dns"):
        tokens, iat = tok.encode(t.matrix, t.iat_us())
        tok.conv_decode = "index"
        want, direction, ported = _flows(tok.decode(tokens, iat, rng=np.random.default_rng(0), labels=[t.label])[0])
        for i, token in _strays(tok, tokens)[:4]:
            bad = tokens.copy()
            bad[i, tok.col("conv")] = token
            got = {}
            for mode in ("index", "regroup"):
                tok.conv_decode = mode
                flow, back, _ = _flows(tok.decode(bad, iat, rng=np.random.default_rng(0), labels=[t.label])[0])
                got[mode] = np.array_equal(flow[ported], want[ported]) and np.array_equal(back, direction)
            assert got == {"index": False, "regroup": True}, (t.label, i)
            moved += 1
    assert moved >= 5


def test_regroup_never_shares_a_port_pair_between_transports(traces: list[Trace]) -> None:
    tok = _fit(traces, k=4)
    rng = np.random.default_rng(5)
    lengths = rng.integers(20, 120, size=20)
    n = int(lengths.sum())
    tokens = np.stack([rng.integers(0, s, size=n) for s in tok.sizes], axis=1)
    trace_of = np.repeat(np.arange(len(lengths)), lengths)
    mixed = {}
    for mode in ("index", "regroup"):
        tok.conv_decode = mode
        matrix, _ = tok.decode(tokens, np.zeros(n), trace_of, np.random.default_rng(6), ["dns"] * len(lengths))
        f = read_fields(matrix)
        fixed = [0, *tok.port_vocab.values]  # service values, and 0 (the absent token, which random tokens hold)
        one = ~(np.isin(f.values["sport"], fixed) & np.isin(f.values["dport"], fixed))  # an ephemeral port
        ported = (f.l3 != 0) & ((f.l4 == 1) | (f.l4 == 2)) & one
        pair = flow_ids(trace_of[ported], np.zeros(ported.sum()), np.zeros(ported.sum()), f.values["sport"][ported],
                        f.values["dport"][ported])
        kinds = np.unique(np.stack([pair, f.l3[ported] * 4 + f.l4[ported]], 1), axis=0)
        mixed[mode] = len(kinds) - len(np.unique(pair))
    assert mixed["index"] > 20 and mixed["regroup"] == 0


def test_merge_leaves_fewer_one_packet_conversations(traces: list[Trace]) -> None:
    tok = _fit(traces, k=4)
    rng = np.random.default_rng(7)
    lengths = rng.integers(20, 120, size=20)
    n = int(lengths.sum())
    tokens = np.stack([rng.integers(0, s, size=n) for s in tok.sizes], axis=1)
    trace_of = np.repeat(np.arange(len(lengths)), lengths)
    ones = {}
    for mode in ("regroup", "merge"):
        tok.conv_decode = mode
        matrix, _ = tok.decode(tokens, np.zeros(n), trace_of, np.random.default_rng(8), ["dns"] * len(lengths))
        f = read_fields(matrix)
        ported = (f.l3 != 0) & ((f.l4 == 1) | (f.l4 == 2))
        flow = flow_ids(trace_of[ported], f.l3[ported], f.l4[ported], f.values["sport"][ported],
                        f.values["dport"][ported])
        ones[mode] = int((np.bincount(flow) == 1).sum())
    assert ones["merge"] < ones["regroup"] / 2


def _tcp_flows(n_flows: int, per_flow: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Interleaved TCP flows of one trace: client port 40000 + i to 443, packets alternating direction."""
    flow = rng.permutation(np.repeat(np.arange(n_flows), per_flow))
    rank = np.array([np.sum(flow[:i] == flow[i]) for i in range(len(flow))])
    back = rank % 2 == 1
    sport, dport = np.where(back, 443, 40000 + flow), np.where(back, 40000 + flow, 443)
    flags = rng.choice([ACK, ACK | 0x008, SYN, SYN | ACK, ACK | 0x001], size=len(flow))
    return flow, back, sport, dport, flags


@pytest.mark.parametrize("rate", [1.0, 0.0, 0.5])
def test_enforced_tcp_state_opens_and_closes_connections_at_the_class_rates(rate: float) -> None:
    rng = np.random.default_rng(4)
    flow, back, sport, dport, flags = _tcp_flows(400, 6, rng)
    n = len(flow)
    out = enforce_tcp(flags, np.ones(n, bool), np.zeros(n, np.int64), np.full(n, 4), sport, dport, ["c"],
                      {"c": [rate, 1.0 - rate], "": [1.0, 1.0]}, rng)
    opened, closed = [], []
    other = ~(SYN | FIN | RST | ACK)
    for f in range(400):
        sel = np.flatnonzero(flow == f)
        fl = out[sel]
        is_open = fl[0] == SYN
        opened.append(is_open)
        closed.append(bool(((fl & (FIN | RST)) > 0).any()))
        b_first = sel[back[sel]][0]
        syn_at = set(sel[(fl & SYN) > 0].tolist())
        assert syn_at == ({sel[0], b_first} if is_open else set())
        if is_open:
            assert out[b_first] == SYN | ACK
        keep = np.setdiff1d(sel, list(syn_at))
        assert np.array_equal(out[keep] & other, flags[keep] & other)  # other flags stay as sampled
    assert np.mean(opened) == pytest.approx(rate, abs=0.07)
    assert np.mean(closed) == pytest.approx(1.0 - rate, abs=0.07)


def test_switches_select_the_arms_and_fail_clearly(traces: list[Trace], tmp_path: Path) -> None:
    assert (tiny().model.endpoints, tiny().model.tcp_state) == ("conv", "handshake")  # the defaults
    base = tiny().with_settings(["model.endpoints=ports", "model.tcp_state=off"])
    conv = base.with_settings(["model.endpoints=conv", "model.conversations=8", "model.tcp_state=enforce"])
    assert (conv.model.endpoints, conv.model.conversations, conv.model.tcp_state) == ("conv", 8, "enforce")
    for bad in ("model.endpoints=pairs", "model.tcp_state=learn", "model.conversations=0"):
        with pytest.raises(ConfigError):
            base.with_settings([bad])
    rep = FieldTokens.fit(conv, traces, [t.label for t in traces])
    tok = rep.tokenizer
    assert "conv" in tok.fields and "sport" not in tok.fields and tok.sizes[tok.col("conv")] == 1 + 3 * 8
    assert set(tok.tcp_rates) >= {"", "http"} and rep.signature != FieldTokens.fit(base, traces, [
        t.label for t in traces]).signature
    tok.save(tmp_path / "tokens.json")
    assert json.loads((tmp_path / "tokens.json").read_text())["format"] == "netdiff-tokens/2"
    assert FieldTokenizer.load(tmp_path / "tokens.json") == tok


def test_a_ports_model_folder_of_the_first_design_loads_and_generates(traces: list[Trace], tmp_path: Path) -> None:
    """A folder written before conversations existed: no endpoints keys in config.json, format 1 tokens.json."""
    cfg = tiny().with_settings(["model.endpoints=ports", "model.tcp_state=off"])
    labels = sorted({t.label for t in traces})
    rep = FieldTokens.fit(cfg, traces, [t.label for t in traces])
    net = rep.network(cfg, len(labels))
    stats = {"lengths": {lab: [7, 30] for lab in labels}, "iat_us": {}, "traces": {}, "packets": {}}
    save_model_dir(tmp_path / "m", dict(net.named_parameters()), cfg, rep, labels, stats)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("endpoints", "conversations", "tcp_state"):
        del meta["config"]["model"][key]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    saved = json.loads((tmp_path / "m" / "tokens.json").read_text())
    assert saved["format"] == "netdiff-tokens/1" and "endpoints" not in saved
    model = load_model_dir(tmp_path / "m")
    assert model.representation.tokenizer.endpoints == "ports" and model.config.model.endpoints == "ports"
    out = generate_traces(model, 1, seed=0, progress=False)
    assert [len(t.matrix) in (7, 30) for t in out] == [True] * len(labels)


def test_conv_decode_switch_defaults_to_regroup_and_older_folders_keep_index(traces: list[Trace],
                                                                              tmp_path: Path) -> None:
    """``model.conv_decode``: ``regroup`` by default; a conversations folder written before it (no key in
    config.json nor tokens.json) decodes as it did (``index``)."""
    assert tiny().model.conv_decode == "regroup"
    with pytest.raises(ConfigError, match="conv_decode"):
        tiny().with_settings(["model.conv_decode=nearest"])
    cfg = tiny().with_settings(["model.conversations=8"])
    labels = sorted({t.label for t in traces})
    rep = FieldTokens.fit(cfg, traces, [t.label for t in traces])
    assert rep.tokenizer.conv_decode == "regroup"
    stats = {"lengths": {lab: [7, 30] for lab in labels}, "iat_us": {}, "traces": {}, "packets": {}}
    save_model_dir(tmp_path / "m", dict(rep.network(cfg, len(labels)).named_parameters()), cfg, rep, labels, stats)
    assert load_model_dir(tmp_path / "m").representation.tokenizer.conv_decode == "regroup"
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["config"]["model"]["conv_decode"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    saved = json.loads((tmp_path / "m" / "tokens.json").read_text())
    del saved["conv_decode"]
    (tmp_path / "m" / "tokens.json").write_text(json.dumps(saved))
    model = load_model_dir(tmp_path / "m")
    assert (model.config.model.conv_decode, model.representation.tokenizer.conv_decode) == ("index", "index")
    assert len(generate_traces(model, 1, seed=0, progress=False)) == len(labels)


def test_conv_weight_weights_the_conversation_field_in_the_loss_only(traces: list[Trace]) -> None:
    """``diffusion.conv_weight``: the conv field's cross-entropy counts w times in the loss; the logged
    cross-entropy stays the plain mean; 1 is today's loss."""
    import torch

    with pytest.raises(ConfigError, match="conv_weight"):
        tiny().with_settings(["diffusion.conv_weight=0"])
    cfg = tiny().with_settings(["model.conversations=8"])
    rep = FieldTokens.fit(cfg, traces, [t.label for t in traces])
    rows = [torch.from_numpy(rep.rows(t))[:32] for t in traces[:8]]
    x0 = torch.stack([torch.nn.functional.pad(r, (0, 0, 0, 32 - len(r))) for r in rows])
    lengths, labels = torch.tensor([len(r) for r in rows]), torch.zeros(8, dtype=torch.long)
    net = rep.network(cfg, 1)
    out = {}
    for w in (1.0, 4.0):
        c = cfg.with_settings([f"diffusion.conv_weight={w}", "diffusion.kind_share=0.01", "diffusion.iat_weight=0"])
        loss, ce = rep.loss(net, net, c, x0, labels, lengths, torch.Generator().manual_seed(0), True)
        out[w] = (float(loss.detach()), float(ce))
    assert out[1.0][0] == pytest.approx(out[1.0][1]) and out[4.0][1] == out[1.0][1]
    assert out[4.0][0] != pytest.approx(out[1.0][0])


def test_confident_order_reveals_as_many_conversation_tokens_most_probable_first() -> None:
    """``diffusion.conv_order=confident``: per trace, the count the random reveal drew, taken from the candidates
    the model is surest of."""
    import torch

    from netdiff_lib.models.native.discrete import _most_confident

    with pytest.raises(ConfigError, match="conv_order"):
        tiny().with_settings(["diffusion.conv_order=sorted"])
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((3, 50, 7), generator=gen) * 3
    candidates = torch.rand((3, 50), generator=gen) < 0.7
    drawn = candidates & (torch.rand((3, 50), generator=gen) < 0.3)
    picked = _most_confident(candidates, drawn, logits)
    conf = logits.log_softmax(-1)[..., 1:].amax(-1)
    for b in range(3):
        assert int(picked[b].sum()) == int(drawn[b].sum()) > 0 and bool((picked[b] <= candidates[b]).all())
        assert float(conf[b][picked[b]].min()) >= float(conf[b][candidates[b] & ~picked[b]].max())
