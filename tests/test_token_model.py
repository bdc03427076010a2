"""The token representation and the discrete diffusion model: tokenizer round trips on real captures, port
slots, escape bins, option templates, the network, the loss, the sampler's constraints, the model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sample_sets import labelled_traces

from netdiff_lib.config import Config, tiny
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.models.native.discrete import TokenDiT, sample_tokens, schedule, token_loss
from netdiff_lib.models.native.field_tokens import FieldTokens
from netdiff_lib.models.native.model import load_model_dir, save_model_dir
from netdiff_lib.models.native.sampler import generate_traces
from netdiff_lib.models.native.tokens import FIELDS, FieldTokenizer, read_fields
from netdiff_lib.models.native.vocab import (
    ABSENT,
    Templates,
    Vocab,
    decode_iat,
    encode_iat,
    resolve_slots,
    slot_tokens,
    template_of,
    variable_bytes,
)
from netdiff_lib.payloads.ports import registered
from netdiff_lib.trace import Trace

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def traces(samples_dir: Path) -> list[Trace]:
    return labelled_traces(samples_dir, 64)


@pytest.fixture(scope="module")
def tokenizer(traces: list[Trace]) -> FieldTokenizer:
    return FieldTokenizer.fit([t.matrix for t in traces], [t.label for t in traces])


def test_round_trip_keeps_every_exact_field(traces: list[Trace], tokenizer: FieldTokenizer) -> None:
    rng = np.random.default_rng(0)
    for t in traces:
        tokens, iat = tokenizer.encode(t.matrix, t.iat_us())
        matrix, iat_us = tokenizer.decode(tokens, iat, rng=rng, labels=[t.label])
        a, b = read_fields(t.matrix), read_fields(matrix)
        assert (a.l3 == b.l3).all() and (a.proto == b.proto).all() and (a.l4 == b.l4).all()
        app = tokenizer.applicable()[tokens[:, 0]]
        for j, f in enumerate(FIELDS):
            if f in a.values and f not in ("sport", "dport"):
                vocab = tokenizer.vocabs[f]
                exact = app[:, j] & (tokens[:, j] >= 1) & (tokens[:, j] <= len(vocab.values))
                assert (a.values[f][exact] == b.values[f][exact]).all(), f
        tcp = app[:, FIELDS.index("tcp_opts")]
        assert [x for x, k in zip(a.tcp_opts, tcp, strict=True) if k] == [x for x, k in zip(b.tcp_opts, tcp,
                                                                                              strict=True) if k]
        # the decoded trace tokenises to the same tokens: slot numbering and templates survive
        again, _ = tokenizer.encode(matrix, iat_us)
        assert (again == tokens).all()
        np.testing.assert_allclose(iat_us, np.maximum(t.iat_us(), 0), rtol=1e-4, atol=1e-3)


def test_inter_arrival_tokens_decode_inside_their_bin(traces: list[Trace]) -> None:
    tok = FieldTokenizer.fit([t.matrix for t in traces], [t.label for t in traces], iat_bins=180)
    assert tok.fields[-1] == "iat" and tok.sizes[-1] == 181 and tok.applicable()[:, -1].all()
    t = traces[0]
    tokens, iat = tok.encode(t.matrix, t.iat_us())
    _, iat_us = tok.decode(tokens, iat, rng=np.random.default_rng(0), labels=[t.label])
    real = np.log10(1 + np.maximum(t.iat_us(), 0))
    assert np.array_equal(np.floor(20 * real), np.floor(20 * np.log10(1 + iat_us)))
    assert FieldTokenizer.from_dict(tok.to_dict()).sizes == tok.sizes


def test_slots_keep_conversations_together() -> None:
    vocab = Vocab(16, (53, 80), ((1024, 65535),), slots=4)
    sport = np.array([40000, 80, 40001, 53, 40000, 50000, 50001, 50002, 50003])
    dport = np.array([80, 40000, 53, 40001, 80, 80, 80, 80, 80])
    st, dt = slot_tokens(sport, dport, np.ones(9, bool), vocab)
    first = vocab.first_slot
    assert st.tolist() == [first, 2, first + 1, 1, first, first + 2, first + 3, first + 3, first + 3]
    assert dt[1] == st[0] and dt[3] == st[2]  # replies name the requester's slot
    tok = FieldTokenizer(((4, 6, 1),), {}, Templates((), 40), Templates((), 40))
    tok.vocabs = {f: Vocab(8, (1,), ((0, 255),)) for f in FIELDS if f not in ("kind", "tcp_opts", "ip_opts")}
    tok.vocabs.update({"sport": vocab, "dport": vocab, "ip_len": Vocab(17, (60,), ((0, 65535),)),
                       "v6_flow": Vocab(20, (0,), ((0, 1 << 20),)), "ip_id": Vocab(16, (0,), ((0, 65535),))})
    tokens = np.zeros((9, len(FIELDS)), np.int64)
    tokens[:, 0] = 1
    tokens[:, FIELDS.index("sport")], tokens[:, FIELDS.index("dport")] = st, dt
    matrix, _ = tok.decode(tokens, np.zeros(9), rng=np.random.default_rng(1))
    f = read_fields(matrix)
    assert f.values["dport"][1] == f.values["sport"][0] and f.values["sport"][4] == f.values["sport"][0]
    assert f.values["dport"][3] == f.values["sport"][2] != f.values["sport"][0]
    assert f.values["sport"][1] == 80 and f.values["sport"][3] == 53
    assert not np.isin(f.values["sport"][[0, 2, 5]], [53, 80]).any()


def test_slot_ports_avoid_ports_that_tshark_dissects_by_number() -> None:
    # a made-up client port 4002 (OPSI) once took a TLS flow's payload away from its server port 8443
    vocab = Vocab(16, (8443,), ((1024, 65535),), slots=8)
    weights = np.zeros((200, 64))
    weights[:, 3] = 1.0  # every slot port in 3072..4095, where tshark has many registered ports
    tokens = np.tile(np.arange(vocab.first_slot, vocab.first_slot + 8), (200, 1))
    ports = resolve_slots(tokens, vocab, np.arange(200), weights, np.random.default_rng(0))
    assert ((ports >= 3072) & (ports < 4096)).all()
    taken = registered()
    assert 4002 in taken and np.isin(np.arange(3072, 4096), taken).sum() > 20
    assert not np.isin(ports, taken).any()


def test_escape_bins_cover_the_range_and_decode_inside_their_bin() -> None:
    values = np.r_[np.full(50, 60), np.full(30, 1500), np.arange(100, 1400, 7)]
    vocab = Vocab.fit(values, 16, n_bins=8)
    assert set(vocab.values) == {60, 1500}
    lows = [b[0] for b in vocab.bins]
    assert lows[0] == 0 and vocab.bins[-1][1] == 65535 and lows == sorted(lows)
    rare = np.array([101, 700, 1390, 40000])
    tokens = vocab.encode(rare)
    assert (tokens > len(vocab.values)).all()
    decoded = vocab.decode(np.repeat(tokens, 50), np.random.default_rng(0))
    for tok, v in zip(np.repeat(tokens, 50), decoded, strict=True):
        lo, hi = vocab.bins[tok - vocab.first_slot]
        assert lo <= v <= hi


def test_option_templates_clear_per_packet_values() -> None:
    syn = bytes.fromhex("020405b40402080a0000abcd0000000001030307")  # MSS, SACK-perm, TS, NOP, WS
    assert variable_bytes(syn).sum() == 8
    assert template_of(syn) == "020405b40402080a000000000000000001030307"
    tpl = Templates.fit([template_of(syn)] * 3, 40)
    raw, length = tpl.decode(tpl.encode([template_of(syn), "", "ffff"]), np.random.default_rng(0))
    assert length.tolist() == [20, 0, 0]
    assert raw[0, :4].tobytes() == syn[:4] and raw[0, 16:20].tobytes() == syn[16:20]


def test_tokenizer_file_round_trip_and_errors(tokenizer: FieldTokenizer, tmp_path: Path) -> None:
    tokenizer.save(tmp_path / "tokens.json")
    back = FieldTokenizer.load(tmp_path / "tokens.json")
    assert back.to_dict() == tokenizer.to_dict() and back.sizes == tokenizer.sizes
    (tmp_path / "bad.json").write_text('{"format": "netdiff-features/1"}')
    with pytest.raises(InputError, match="not a tokenizer file"):
        FieldTokenizer.load(tmp_path / "bad.json")


def _net(tokenizer: FieldTokenizer, seed: int = 0) -> TokenDiT:
    torch.manual_seed(seed)
    net = TokenDiT(tiny().model, tokenizer.sizes, 5)
    with torch.no_grad():  # a trained-looking network: zero-initialised head and adaLN made non-zero
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return net.eval()


def test_padding_does_not_leak_into_valid_positions(tokenizer: FieldTokenizer) -> None:
    net = _net(tokenizer)
    n = 16
    tokens = net.mask_ids.expand(2, n, len(FIELDS)).clone()
    iat = torch.randn(2, n)
    args = (torch.tensor([0.3, 0.3]), torch.tensor([0, 1]), torch.tensor([16, 9]))
    a_logits, a_iat = net(tokens, iat, *args)
    tokens2, iat2 = tokens.clone(), iat.clone()
    tokens2[1, 9:] = 0
    iat2[1, 9:] = 5.0
    b_logits, b_iat = net(tokens2, iat2, *args)
    torch.testing.assert_close(a_logits[1, :9], b_logits[1, :9])
    torch.testing.assert_close(a_iat[1, :9], b_iat[1, :9])


def test_loss_is_finite_and_trains(traces: list[Trace], tokenizer: FieldTokenizer) -> None:
    cfg = tiny()
    rows = [torch.from_numpy(tokenizer.rows(t.matrix[:16], t.iat_us()[:16])) for t in traces[:8]]
    x0 = torch.stack([torch.nn.functional.pad(r, (0, 0, 0, 16 - len(r))) for r in rows])
    lengths = torch.tensor([len(r) for r in rows])
    labels = torch.zeros(8, dtype=torch.long)
    net = TokenDiT(cfg.model, tokenizer.sizes, 1)
    applicable = torch.from_numpy(tokenizer.applicable())
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        gen = torch.Generator().manual_seed(step % 3)
        loss, ce = token_loss(net, net, x0, labels, lengths, cfg, applicable, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(ce))
        assert torch.isfinite(loss)
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])


def test_stage_one_loss_scores_only_the_kinds_the_sampler_draws(traces: list[Trace],
                                                               tokenizer: FieldTokenizer) -> None:
    """In stage 1 the sampler reads only the kind logits: the fields' targets must not enter the loss there."""
    rows = [torch.from_numpy(tokenizer.rows(t.matrix[:16], t.iat_us()[:16])) for t in traces[:8]]
    x0 = torch.stack([torch.nn.functional.pad(r, (0, 0, 0, 16 - len(r))) for r in rows])
    lengths, labels = torch.tensor([len(r) for r in rows]), torch.zeros(8, dtype=torch.long)
    net = _net(tokenizer)
    applicable = torch.from_numpy(tokenizer.applicable())
    other = x0.clone()  # the same packet kinds and times, other field values
    sizes = torch.tensor(tokenizer.sizes[1:], dtype=torch.float32)
    other[..., 1:-1] = torch.floor(torch.rand(other[..., 1:-1].shape, generator=torch.Generator().manual_seed(1))
                                   * sizes)

    def loss(rows: torch.Tensor, kind_share: float) -> tuple[float, float]:
        cfg = tiny().with_settings([f"diffusion.kind_share={kind_share}"])
        total, ce = token_loss(net, net, rows, labels, lengths, cfg, applicable, torch.Generator().manual_seed(0))
        return float(total.detach()), float(ce)

    stage1 = 1 - 1e-9  # every sample of the batch in stage 1
    assert loss(x0, stage1) == loss(other, stage1)
    assert loss(x0, 1e-9)[1] != loss(other, 1e-9)[1]  # stage 2 scores the fields


def test_sampler_respects_each_packets_kind(tokenizer: FieldTokenizer) -> None:
    net = _net(tokenizer)
    app = torch.from_numpy(tokenizer.applicable())
    labels, lengths = torch.tensor([0, 1, 2]), torch.tensor([20, 7, 20])
    gen = torch.Generator().manual_seed(0)
    tokens, iat = sample_tokens(net, labels, lengths, 20, steps=8, guidance=2.0, applicable=app, gen=gen,
                                cfg=tiny())
    assert (tokens < net.mask_ids).all() and (iat.abs() <= 1).all()
    on = app[tokens[..., 0]]
    assert (tokens[~on] == ABSENT).all() and (tokens[..., 1:][on[..., 1:]] != ABSENT).all()
    again, _ = sample_tokens(net, labels, lengths, 20, steps=8, guidance=2.0, applicable=app,
                             gen=torch.Generator().manual_seed(0), cfg=tiny())
    assert torch.equal(tokens, again)


def test_schedule_spends_a_quarter_on_kinds() -> None:
    steps = schedule(20, 0.25)
    assert len(steps) == 20 and steps[0][0] == 1.0 and steps[-1][1] == 0.0
    assert sum(1 for t, _ in steps if t > 0.5) == 5


def test_model_folder_round_trip_and_generation(traces: list[Trace], tmp_path: Path) -> None:
    cfg = tiny()
    labels = sorted({t.label for t in traces})
    rep = FieldTokens.fit(cfg, traces, [t.label for t in traces])
    codec = rep.tokenizer
    net = rep.network(cfg, len(labels))
    assert isinstance(net, TokenDiT)
    stats = {"lengths": {lab: [5, 12, 40] for lab in labels}, "iat_us": {}, "traces": {}, "packets": {}}
    save_model_dir(tmp_path / "m", dict(net.named_parameters()), cfg, rep, labels, stats)
    assert (tmp_path / "m" / "tokens.json").is_file()
    model = load_model_dir(tmp_path / "m")
    assert model.labels == labels and model.config == cfg and model.representation.tokenizer.sizes == codec.sizes
    out = generate_traces(model, 2, seed=3, progress=False)
    again = generate_traces(model, 2, seed=3, progress=False)
    assert [t.label for t in out] == [lab for lab in labels for _ in range(2)]
    for a, b in zip(out, again, strict=True):
        assert a.matrix.shape[1] == codec.layout.width and len(a.matrix) in (5, 12, 40)
        assert np.array_equal(a.matrix, b.matrix) and a.iat_us[0] == 0 and (a.iat_us >= 0).all()
    (tmp_path / "m" / "tokens.json").unlink()
    with pytest.raises(InputError, match=r"tokens\.json is missing"):
        load_model_dir(tmp_path / "m")


def test_settings_parse_and_fail_clearly() -> None:
    cfg = tiny().with_settings(["model.representation=tokens", "model.port_slots=0", "diffusion.guidance=2",
                                "train.buckets=8,16,64", "train.compile=true"])
    assert cfg.model.representation == "tokens" and cfg.model.port_slots == 0
    assert cfg.diffusion.guidance == 2.0 and cfg.train.buckets == (8, 16, 64) and cfg.train.compile is True
    for bad in ("model.representation=pixels", "model.nope=1", "model.port_slots=two", "guidance=2", "x"):
        with pytest.raises(ConfigError):
            tiny().with_settings([bad])
    assert Config.from_dict(tiny().to_dict()) == tiny()


def test_inter_arrival_feature_round_trip() -> None:
    us = np.array([0.0, 1.0, 37.5, 1e3, 2.5e5, 6e8, 1e10, -5.0])
    y = encode_iat(us)
    assert y[0] == -1.0 and y[5] == 1.0 and y[6] == 1.0 and y[7] == -1.0 and (np.diff(y[:6]) > 0).all()
    np.testing.assert_allclose(decode_iat(y)[:6], us[:6], rtol=1e-9, atol=1e-6)
