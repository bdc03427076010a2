"""``diffusion.reveal``: the order the token sampler reveals the fields in.  Real parts: the sample captures, the
tokenizer fitted on them, a tiny network, the sampler's own loop (its state recorded after every step)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sample_sets import labelled_traces

from netdiff_lib.config import Config, tiny
from netdiff_lib.errors import ConfigError
from netdiff_lib.models.native.compiled import sampling_networks
from netdiff_lib.models.native.discrete import TokenDiT, reveal_plan, sample_tokens, schedule
from netdiff_lib.models.native.field_tokens import FieldTokens
from netdiff_lib.models.native.model import load_model_dir, save_model_dir
from netdiff_lib.models.native.sampler import generate_traces
from netdiff_lib.trace import Trace

torch.set_num_threads(1)
FIRST = "diffusion.reveal=structure_first"


@pytest.fixture(scope="module")
def traces(samples_dir: Path) -> list[Trace]:
    return labelled_traces(samples_dir, 64)


def _model(traces: list[Trace], cfg: Config) -> tuple[FieldTokens, TokenDiT]:
    rep = FieldTokens.fit(cfg, traces, [t.label for t in traces])
    torch.manual_seed(0)
    net = rep.network(cfg, len({t.label for t in traces}))
    for p in net.parameters():  # adaLN-Zero starts at constant outputs: give every field real logits to draw from
        torch.nn.init.normal_(p, std=0.1)
    return rep, net.eval()


def _run(rep: FieldTokens, net: TokenDiT, cfg: Config, seed: int = 0,
         steps: int = 10) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    labels, lengths = torch.tensor([0, 1, 2, 0]), torch.tensor([64, 40, 64, 17])
    record: list[tuple[torch.Tensor, torch.Tensor]] = []
    tokens, iat = sample_tokens(net, labels, lengths, 64, steps=steps, guidance=1.0,
                                applicable=rep.applicable("cpu"), gen=torch.Generator().manual_seed(seed), cfg=cfg,
                                structure=rep.structure_columns(), record=record)
    return tokens, iat, record


def _masked(net: TokenDiT, tokens: torch.Tensor) -> torch.Tensor:
    """(fields,) count of masked tokens per field over the valid packets (the fixed lengths of :func:`_run`)."""
    valid = torch.arange(64)[None] < torch.tensor([64, 40, 64, 17])[:, None]
    return ((tokens == net.mask_ids) & valid[..., None]).sum(dim=(0, 1))


@pytest.mark.parametrize("endpoints", ["conv", "ports"])
def test_structure_first_reveals_only_the_structure_columns_before_the_rest(traces: list[Trace],
                                                                           endpoints: str) -> None:
    cfg = tiny().with_settings([FIRST, f"model.endpoints={endpoints}"])
    rep, net = _model(traces, cfg)
    names = [rep.tokenizer.fields[c] for c in rep.structure_columns()]
    assert names == (["conv", "server_port", "client_port"] if endpoints == "conv" else ["sport", "dport"])
    structure = torch.zeros(len(net.sizes), dtype=torch.bool)
    structure[rep.structure_columns()] = True
    other = ~structure
    other[0] = False  # the packet kind: stage 1, first in either order
    tokens, _, record = _run(rep, net, cfg)
    k1 = sum(1 for t, *_ in schedule(10, cfg.diffusion.kind_steps) if t > 0.5)  # 2 kind steps, 4 + 4 after them
    assert len(record) == 10 and k1 == 2
    masked = [_masked(net, tok) for tok, _ in record]
    before = _masked(net, record[k1 - 1][0])
    assert before[0] == 0 and (before[1:] > 0).all()  # the kinds all drawn, nothing else yet
    for step in range(k1, k1 + 4):  # the structure steps: the others stay masked, the IAT stays noise
        assert torch.equal(masked[step][other], before[other])
        assert torch.equal(record[step][1], record[0][1])
        assert (masked[step][structure] < masked[step - 1][structure]).all()
    assert (masked[k1 + 3][structure] == 0).all() and (masked[k1 + 3][other] > 0).all()
    for step in range(k1 + 4, 10):  # then the rest, the structure fields kept as drawn
        assert torch.equal(record[step][0][..., structure], record[k1 + 3][0][..., structure])
        assert (masked[step][other] < masked[step - 1][other]).all()
    assert not (tokens == net.mask_ids).any()  # every token revealed at the end, padding included

    random_cfg = tiny().with_settings([f"model.endpoints={endpoints}"])
    _, _, random_record = _run(rep, net, random_cfg)  # the default order: every field at once
    first = _masked(net, random_record[k1][0])
    assert (first[other] < before[other]).any() and (first[structure] > 0).all()


def test_structure_first_sampling_is_deterministic_per_seed(traces: list[Trace]) -> None:
    cfg = tiny().with_settings([FIRST])
    rep, net = _model(traces, cfg)
    tokens, iat, _ = _run(rep, net, cfg, seed=5)
    again, iat_again, _ = _run(rep, net, cfg, seed=5)
    other, _, _ = _run(rep, net, cfg, seed=6)
    assert torch.equal(tokens, again) and torch.equal(iat, iat_again) and not torch.equal(tokens, other)
    random_tokens, _, _ = _run(rep, net, tiny(), seed=5)
    assert not torch.equal(tokens, random_tokens)  # the order changes the draws


def test_reveal_plan_keeps_the_step_count_and_splits_stage_two() -> None:
    for steps in (1, 2, 3, 10, 16, 25):
        grid = schedule(steps, 0.25)
        assert reveal_plan(steps, 0.25) == [(t, s, t, s) for t, s in grid]
        plan = reveal_plan(steps, 0.25, 0.5)
        assert len(plan) == len(grid) and plan[-1][1] == 0.0 and plan[-1][3] == 0.0
        k1 = sum(1 for t, _ in grid if t > 0.5)
        if len(grid) - k1 < 2:  # one stage-2 step cannot be split: as the grid
            assert plan == [(t, s, t, s) for t, s in grid]
            continue
        first = [p for p in plan[k1:] if p[0] == 0.5 and p[1] == 0.5]
        assert len(first) == min(max(1, round((len(grid) - k1) * 0.5)), len(grid) - k1 - 1)
        assert first[0][2] == 0.5 and first[-1][3] == 0.0
    assert sum(1 for p in reveal_plan(16, 0.25, 0.75) if p[:2] == (0.5, 0.5)) == 9  # 12 stage-2 steps


@pytest.mark.parametrize(("setting", "match"), [("diffusion.reveal=conv_first", "diffusion.reveal"),
                                                ("diffusion.structure_steps=0", "diffusion.structure_steps"),
                                                ("diffusion.structure_steps=1", "diffusion.structure_steps"),
                                                ("diffusion.structure_steps=-0.5", "diffusion.structure_steps")])
def test_bad_reveal_settings_are_config_errors(setting: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        tiny().with_settings([setting])


def test_a_model_folder_samples_structure_first_through_the_sampler(traces: list[Trace], tmp_path: Path) -> None:
    cfg = tiny().with_settings([FIRST, "diffusion.structure_steps=0.75", "diffusion.conv_order=confident"])
    rep, net = _model(traces, cfg)
    labels = sorted({t.label for t in traces})
    stats = {"lengths": {lab: [5, 12, 40] for lab in labels}, "iat_us": {}, "traces": {}, "packets": {}}
    save_model_dir(tmp_path / "m", dict(net.named_parameters()), cfg, rep, labels, stats)
    model = load_model_dir(tmp_path / "m")
    assert model.config.diffusion.reveal == "structure_first" and model.config.diffusion.structure_steps == 0.75
    out = generate_traces(model, 2, seed=3, progress=False)
    again = generate_traces(model, 2, seed=3, progress=False)
    assert len(out) == 2 * len(labels)
    model.config = replace(model.config, generate=replace(model.config.generate, compile="on",
                                                          compile_backend="aot_eager"))
    compiled = generate_traces(model, 2, seed=3, progress=False)  # the compiled path: the same plan and draws
    assert sampling_networks(model)[0] is not model.net
    for a, b, c in zip(out, again, compiled, strict=True):
        assert (a.matrix == b.matrix).all() and (a.iat_us == b.iat_us).all() and (a.matrix == c.matrix).all()
        np.testing.assert_allclose(a.iat_us, c.iat_us, rtol=1e-5)


def test_the_benchmark_counts_strays_only_where_a_conversation_mixes_transports(traces: list[Trace]) -> None:
    from benchmarks.reveal_order import conversation_figures

    rep = FieldTokens.fit(tiny(), traces, [t.label for t in traces])
    tok = rep.tokenizer
    rows = [tok.rows(t.matrix, t.iat_us())[:, :-1].astype(np.int64) for t in traces]
    real = conversation_figures(rows, tok.col("conv"), list(tok.kinds), tok.conversations)
    assert real["strays"] == real["mixed"] == 0 and real["conversations_per_trace"] > 1
    kinds = {k[2]: i for i, k in enumerate(tok.kinds, start=1)}  # transport -> a kind token of it
    t = next(r for r in rows if (r[:, tok.col("conv")] > 0).sum() > 4)
    moved = t.copy()
    at = np.flatnonzero(moved[:, tok.col("conv")] > 0)[2]
    moved[at, 0] = kinds[2] if tok.kinds[moved[at, 0] - 1][2] == 1 else kinds[1]  # a TCP packet made UDP, or back
    one = conversation_figures([moved], tok.col("conv"), list(tok.kinds), tok.conversations)
    assert one["mixed"] > 0 and one["strays"] == pytest.approx(1 / (moved[:, tok.col("conv")] > 0).sum())
