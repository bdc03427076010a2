"""The native trainer's privacy gate: the holdout, the choice of checkpoint, the card, resume, the switches."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from long_capture import NS, merge
from safetensors.torch import load_file
from sample_sets import link_samples

from netdiff_lib import checkpoint
from netdiff_lib.cli import build_parser, main
from netdiff_lib.config import PrivacyConfig, tiny
from netdiff_lib.encoded import from_captures
from netdiff_lib.errors import ConfigError, TrainingError
from netdiff_lib.models import get_backend
from netdiff_lib.models.base import TrainingData, privacy_settings
from netdiff_lib.models.native.privacy import GATE_PNG, choose, split_holdout
from netdiff_lib.models.native.train import BEST, train
from netdiff_lib.schema import MAX_PACKETS
from netdiff_lib.segment.options import make_options
from netdiff_lib.stages.summary import summary_text

torch.set_num_threads(1)
CLASSES = ("dns", "http", "icmp")


@pytest.fixture(scope="module")
def data_dir(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of six captures each (links into samples/captures)."""
    return link_samples(samples_dir, tmp_path_factory.mktemp("privacy-data"), CLASSES, 6)


@pytest.fixture(scope="module")
def data(data_dir: Path) -> TrainingData:
    return from_captures(str(data_dir), MAX_PACKETS)


def _cfg(steps: int = 12, *settings: str):
    cfg = tiny().with_settings(["privacy.mode=on", "privacy.every=4", "privacy.samples_per_class=2",
                                "privacy.min_holdout=2", "train.keep_checkpoints=10", *settings])
    return cfg.with_overrides(steps=steps, checkpoint_every=4, log_every=2, warmup_steps=2)


def _card(folder: Path) -> dict:
    return json.loads((folder / "model_card.json").read_text())


def test_holdout_is_by_capture_stratified_disjoint_and_seeded(data: TrainingData) -> None:
    cfg = PrivacyConfig(holdout=0.34, min_holdout=1)
    split = split_holdout(data.traces, cfg, seed=0)
    train_src = {t.source for t in split.train}
    held_src = {t.source for t in split.held}
    assert not train_src & held_src and len(split.train) + len(split.held) == len(data.traces)
    for label in CLASSES:  # every class keeps round(0.34 x 6) = 2 captures back and trains on the other 4
        assert split.counts[label] == {"train": 4, "held_out": 2} and split.units[label] == "capture"
        assert sum(t.label == label for t in split.held) == 2
    assert [t.source for t in split_holdout(data.traces, cfg, seed=0).held] == [t.source for t in split.held]
    others = {tuple(t.source for t in split_holdout(data.traces, cfg, seed=s).held) for s in range(1, 6)}
    assert len(others | {tuple(held_src)}) > 1  # the seed chooses which captures


def test_a_class_of_one_capture_trains_on_it_and_too_few_held_out_traces_are_refused(data: TrainingData) -> None:
    one = [t for t in data.traces if t.label != "icmp"] + [next(t for t in data.traces if t.label == "icmp")]
    split = split_holdout(one, PrivacyConfig(min_holdout=1), seed=0)
    assert split.counts["icmp"] == {"train": 1, "held_out": 0}
    assert split.counts["dns"]["held_out"] == 1  # round(0.15 x 6) = 1
    with pytest.raises(ConfigError, match=r"only 2 trace\(s\) held out.*--privacy off"):
        split_holdout(one, PrivacyConfig(min_holdout=3), seed=0)


def test_one_long_capture_per_class_is_held_out_by_trace(tmp_path: Path) -> None:
    """``--traces flow`` on one long capture per class: the unit is the trace (a flow), not the file."""
    for label in ("dns", "tls"):
        (tmp_path / label).mkdir()
        merge(tmp_path / label / "long.pcap",
              [(f"{label}/{label}_{i:02d}.pcap", (i + 1) * 10 * NS) for i in range(1, 8)])
    traces = from_captures(str(tmp_path), MAX_PACKETS, traces=make_options("flow")).traces
    split = split_holdout(traces, PrivacyConfig(holdout=0.3, min_holdout=1), seed=0)
    for label in ("dns", "tls"):
        n = sum(t.label == label for t in traces)
        assert n >= 3 and split.units[label] == "trace"
        assert split.counts[label]["held_out"] == min(n - 1, max(1, round(0.3 * n)))
    assert not {id(t) for t in split.held} & {id(t) for t in split.train}


def test_choice_is_the_lowest_held_out_loss_among_gate_holding_evaluations() -> None:
    cfg = PrivacyConfig()

    def ev(step: int, ratio: float, auc: float, loss: float) -> dict[str, float]:
        return {"step": step, "dcr_ratio": ratio, "mia_auc": auc, "heldout_loss": loss}

    evals = [ev(1, 1.5, 0.50, 3.0), ev(2, 1.2, 0.55, 2.0), ev(3, 0.9, 0.50, 1.0),  # 3: closer than fresh data
             ev(4, 1.1, 0.65, 0.5), ev(5, math.nan, 0.5, 0.1), ev(6, 1.0, 0.60, 2.0)]  # 4: members given away
    assert choose(evals, cfg) == 1  # never 2, 3 or 4 however low their loss; step 6 (on the limits) ties later
    assert choose(evals[2:5], cfg) is None
    assert choose(evals[5:], cfg) == 0  # the limits themselves hold


@pytest.fixture(scope="module")
def gated(data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder trained with the gate on (limits that every evaluation holds: the choice is by loss)."""
    out = tmp_path_factory.mktemp("gated") / "model"
    train(_cfg(12, "privacy.dcr_min=0", "privacy.mia_max=1"), data, str(out), progress=False)
    return out


def test_gated_run_keeps_the_chosen_evaluation_and_records_every_one(data: TrainingData, gated: Path,
                                                                     tmp_path: Path) -> None:
    out = gated
    card = _card(out)
    gate, training = card["training"]["privacy_gate"], card["training"]
    evals = gate["evaluations"]
    assert [e["step"] for e in evals] == [4, 8, 12] and all(e["gate"] == 1.0 for e in evals)
    assert all(np.isfinite([e["dcr_ratio"], e["mia_auc"], e["heldout_loss"]]).all() for e in evals)
    best = min(evals, key=lambda e: e["heldout_loss"])
    assert training["privacy"] == "on" and training["privacy_step"] == gate["chosen_step"] == best["step"]
    assert card["data"]["holdout"]["traces"] == 3 and card["data"]["traces"] == len(data.traces) - 3
    assert (out / GATE_PNG).is_file() and "## Privacy gate" in (out / "README.md").read_text()
    chosen = load_file(str(out / "checkpoints" / f"ckpt-{best['step']:08d}" / "ema.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(final[k], chosen[k]) for k in final)  # the folder holds the chosen step's EMA

    # the same run with a gate that the lowest-loss evaluation fails: another one is chosen, or none
    limit = best["mia_auc"] - 1e-9
    again = tmp_path / "stricter"
    holding = [e for e in evals if e["mia_auc"] <= limit]
    if holding:
        train(_cfg(12, "privacy.dcr_min=0", f"privacy.mia_max={limit!r}"), data, str(again), progress=False)
        assert _card(again)["training"]["privacy_step"] == min(holding, key=lambda e: e["heldout_loss"])["step"]
    else:
        with pytest.raises(TrainingError):
            train(_cfg(12, "privacy.dcr_min=0", f"privacy.mia_max={limit!r}"), data, str(again), progress=False)


def test_no_model_is_written_when_the_gate_never_holds(data: TrainingData, tmp_path: Path) -> None:
    out = tmp_path / "model"
    with pytest.raises(TrainingError, match=r"never held in 2 evaluation.*best seen: DCR ratio \d.*--privacy off"):
        train(_cfg(8, "privacy.dcr_min=1000"), data, str(out), progress=False)
    assert not (out / "model.safetensors").exists() and checkpoint.latest(out / "checkpoints") is not None


def test_privacy_off_trains_on_every_trace_without_evaluations(data: TrainingData, tmp_path: Path) -> None:
    out = tmp_path / "model"
    train(_cfg(4, "privacy.mode=off"), data, str(out), progress=False)
    card = _card(out)
    assert card["training"]["privacy"] == "off" and "privacy_gate" not in card["training"]
    assert "evaluations" not in card["training"] and "holdout" not in card["data"]
    assert card["data"]["traces"] == len(data.traces) and not (out / GATE_PNG).exists()
    final = load_file(str(out / "model.safetensors"))
    ema = load_file(str(out / "checkpoints" / "ckpt-00000004" / "ema.safetensors"))
    assert set(ema) == set(final) and all(torch.equal(final[k], ema[k]) for k in final)


def test_resume_with_the_gate_on_equals_an_uninterrupted_run(data: TrainingData, tmp_path: Path) -> None:
    whole, sliced = tmp_path / "whole", tmp_path / "sliced"
    cfg = _cfg(12, "privacy.dcr_min=0", "privacy.mia_max=1", "train.checkpoint_every=2")
    train(cfg, data, str(whole), progress=False)
    train(cfg, data, str(sliced), progress=False, until_step=6)  # "killed" after step 6 (evaluated at 4)
    train(cfg, data, str(sliced), progress=False, resume=True)
    a, b = checkpoint.load(whole / "checkpoints"), checkpoint.load(sliced / "checkpoints")
    assert a.meta["loop"]["evaluations"] == b.meta["loop"]["evaluations"] and len(a.meta["loop"]["evaluations"]) == 3
    assert set(a.ema) == set(b.ema) and any(k.startswith(BEST) for k in a.ema)
    assert all(torch.equal(a.ema[k], b.ema[k]) for k in a.ema)
    fa, fb = load_file(str(whole / "model.safetensors")), load_file(str(sliced / "model.safetensors"))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert _card(whole)["training"]["privacy_gate"] == _card(sliced)["training"]["privacy_gate"]
    with pytest.raises(ConfigError, match="privacy"):  # a resume must not change which traces are held out
        train(cfg.with_settings(["privacy.holdout=0.3"]), data, str(sliced), progress=False, resume=True)


def test_privacy_switch_on_the_command_lines_and_the_pipeline(data_dir: Path, tmp_path: Path) -> None:
    from netdiff_lib.cli.run import arguments as run_arguments
    from netdiff_lib.cli.submit import arguments as submit_arguments

    parse = build_parser().parse_args
    run_args = parse(["run", "--input", str(data_dir), "-o", str(tmp_path / "o"), "--config", "tiny",
                      "--privacy", "on"])
    assert run_arguments(run_args)["privacy"] == "on"
    assert "privacy" not in run_arguments(parse(["run", "--input", str(data_dir), "-o", str(tmp_path / "o")]))
    sub = parse(["submit", "--host", "http://kfp", "--namespace", "ns", "--input", "s3://b/in", "-o", "s3://b/out",
                 "--privacy", "off"])
    assert submit_arguments(sub)["privacy"] == "off"
    bad = argparse.Namespace(**{**vars(sub), "privacy": None, "param": ["privacy=maybe"]})
    with pytest.raises(ConfigError, match="privacy"):
        submit_arguments(bad)
    assert privacy_settings(get_backend("native"), "off") == ["privacy.mode=off"]
    assert privacy_settings(get_backend("native"), None) == []
    model = tmp_path / "cli-model"
    assert main(["train", "--data", str(data_dir), "-o", str(model), "--config", "tiny", "--steps", "2",
                 "--privacy", "on", "-q"]) == 2  # 3 held-out traces < privacy.min_holdout: refused, named
    assert not model.exists() or not (model / "model.safetensors").exists()


def test_sd15_has_no_privacy_gate() -> None:
    try:
        backend = get_backend("sd15")
    except ConfigError:
        pytest.skip("sd15 extras not installed")
    assert privacy_settings(backend, "off") == [] and privacy_settings(backend, None) == []
    with pytest.raises(ConfigError, match=r"sd15.*no privacy gate"):
        privacy_settings(backend, "on")


def test_run_summary_says_which_mode_made_the_traces() -> None:
    on = {"backend": "native", "privacy": "on", "privacy_step": 4000, "privacy_dcr_ratio": 1.07,
          "privacy_mia_auc": 0.55, "privacy_heldout_traces": 62}
    text = summary_text({"model": on, "pcaps": {}})
    assert "gate on: step 4000 chosen, DCR ratio 1.07, membership AUC 0.55 on 62 held-out" in text
    assert "; privacy gate off" in summary_text({"model": {"backend": "native", "privacy": "off"}, "pcaps": {}})
    assert "gate off (backend sd15 has none)" in summary_text({"model": {"backend": "sd15"}, "pcaps": {}})


def test_report_says_which_model_and_privacy_mode_made_the_traces(data_dir: Path, gated: Path,
                                                                   tmp_path: Path) -> None:
    """generate -> reconstruct carry ``generator.json`` from the model card to the report's Generator tables."""
    from netdiff_lib.evaluate import evaluate
    from netdiff_lib.stages.common import GENERATOR, read_json, shard_item
    from netdiff_lib.stages.model import generate_shards
    from netdiff_lib.stages.outputs import reconstruct_shard

    generate_shards(gated, tmp_path / "gen", per_class=1, seed=0, shards=1, device="cpu")
    reconstruct_shard(tmp_path / "gen", shard_item(0, 1), tmp_path / "pcaps")
    made_by = read_json(tmp_path / "pcaps" / GENERATOR)
    card = _card(gated)["training"]
    assert made_by["privacy"] == "on" and made_by["privacy_step"] == card["privacy_step"]
    assert made_by["privacy_gate"]["evaluations"] == card["privacy_gate"]["evaluations"]
    evaluate(str(data_dir), str(data_dir), str(tmp_path / "pcaps"), tmp_path / "report", run_compliance=False,
             pictures=False, progress=False, generator=made_by)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Generator" in md and "privacy gate" in md.lower() and f"| {card['privacy_step']} " in md
