"""Training smoke tests on the bundled captures: a few steps, exact resume, model folder, S3 output, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sample_sets import link_samples

from netdiff_lib import checkpoint
from netdiff_lib.config import tiny
from netdiff_lib.encoded import from_captures
from netdiff_lib.errors import ConfigError, TrainingError
from netdiff_lib.models import Sampling, get_backend
from netdiff_lib.models.base import TrainingData
from netdiff_lib.models.native.data import prepare_data
from netdiff_lib.models.native.model import NativeModel
from netdiff_lib.models.native.representation import REPRESENTATIONS
from netdiff_lib.models.native.train import (
    HORIZON_PROBE,
    HORIZON_REFRESH,
    LoopState,
    _apply_budget,
    _check_diverged,
    make_optimizer,
    skip_nonfinite,
    train,
)
from netdiff_lib.schema import MAX_PACKETS

torch.set_num_threads(1)
CLASSES = ("dns", "http", "icmp")


@pytest.fixture(scope="module")
def small_data(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes, three captures each (symbolic links into samples/captures)."""
    return link_samples(samples_dir, tmp_path_factory.mktemp("data"), CLASSES, 3)


@pytest.fixture(scope="module")
def small_set(small_data: Path) -> TrainingData:
    """The same captures encoded once, as ``netdiff train --data`` encodes them."""
    return from_captures(str(small_data), MAX_PACKETS)


def _cfg(steps: int = 4, representation: str = "tokens", settings: tuple[str, ...] = ()):
    cfg = tiny().with_settings([f"model.representation={representation}", *settings])
    return cfg.with_overrides(steps=steps, checkpoint_every=2, log_every=1, warmup_steps=2)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {**{f"model.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()},
            **{f"ema.{k}": v for k, v in load_file(str(folder / "ema.safetensors")).items()}}


@pytest.mark.parametrize("representation", sorted(REPRESENTATIONS))
def test_resume_after_stop_equals_uninterrupted_run(small_set: TrainingData, tmp_path: Path,
                                                    representation: str) -> None:
    whole, sliced = tmp_path / "whole", tmp_path / "sliced"
    cfg = _cfg(representation=representation)
    train(cfg, small_set, str(whole), progress=False)
    train(cfg, small_set, str(sliced), progress=False, until_step=3)  # "killed" after step 3
    assert checkpoint.latest(sliced / "checkpoints") == "ckpt-00000003"
    train(cfg, small_set, str(sliced), progress=False, resume=True)
    a, b = checkpoint.load(whole / "checkpoints"), checkpoint.load(sliced / "checkpoints")
    assert a.step == b.step == 4
    def curve(ck: checkpoint.Checkpoint) -> list:  # everything but wall-clock time
        return [{k: v for k, v in h.items() if k != "elapsed_s"} for h in ck.meta["loop"]["history"]]

    assert curve(a) == curve(b) and len(curve(a)) == 4
    assert a.meta["data_position"] == b.meta["data_position"] and a.meta["lr_scheduler"] == b.meta["lr_scheduler"]
    wa, wb = _weights(whole / "checkpoints" / a.name), _weights(sliced / "checkpoints" / b.name)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for pid, st in a.optimizer["state"].items():
        assert all(torch.equal(v, b.optimizer["state"][pid][k]) for k, v in st.items())
    # the final model folder holds the EMA weights
    final = load_file(str(whole / "model.safetensors"))
    assert all(torch.equal(final[k], wa[f"ema.{k}"]) for k in final)


def test_resume_after_sigkill_equals_uninterrupted_run(small_data: Path, small_set: TrainingData,
                                                       tmp_path: Path) -> None:
    """A real kill: the training process dies (SIGKILL) right after its first checkpoint, wherever it is."""
    cfg = tiny().with_overrides(steps=40, checkpoint_every=2, log_every=1)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "netdiff_lib.cli", "train", "--data", str(small_data), "--out", str(killed),
           "--config", "tiny", "--steps", "40", "--checkpoint-every", "2", "-q", "--workers", "1"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while checkpoint.latest(killed / "checkpoints") is None and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    stopped_at = checkpoint.load(killed / "checkpoints").step
    assert stopped_at < 40 and not (killed / "model.safetensors").exists(), "the run finished before the kill"
    train(cfg, small_set, str(killed), progress=False, resume=True)
    whole = tmp_path / "whole"
    train(cfg, small_set, str(whole), progress=False)
    wa, wb = _weights(whole / "checkpoints" / "ckpt-00000040"), _weights(killed / "checkpoints" / "ckpt-00000040")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    final_a, final_b = (load_file(str(d / "model.safetensors")) for d in (whole, killed))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_model_folder_and_card(small_set: TrainingData, tmp_path: Path) -> None:
    out = tmp_path / "model"
    train(_cfg(steps=3), small_set, str(out), progress=False)
    for name in ("model.safetensors", "config.json", "tokens.json", "stats.json", "class_map.json",
                 "model_card.json", "README.md", "loss.json"):
        assert (out / name).is_file(), name
    card = json.loads((out / "model_card.json").read_text())
    assert card["backend"] == "native" and card["config"]["preset"] == "tiny"
    assert card["class_map"] == {"dns": "type-0", "http": "type-1", "icmp": "type-2"}
    assert len(card["data"]["fingerprint"]) == 64 and card["data"]["captures"] == 9
    assert set(card["inter_arrival_us"]) == set(CLASSES) and card["inter_arrival_us"]["dns"]["count"] > 0
    assert card["training"]["steps"] == 3
    assert card["data"]["representation"] == "tokens" and card["data"]["vocabulary"]["kind"] >= 2
    history = json.loads((out / "loss.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3] and all(np.isfinite(h["loss"]) for h in history)
    assert "fingerprint" in (out / "README.md").read_text()
    # the logged error is the masked-token cross-entropy, and is named so (it was "mse")
    assert all(set(h) == {"step", "loss", "token_ce", "lr", "elapsed_s"} for h in history)
    assert card["training"]["final_token_ce"] == history[-1]["token_ce"] and "final_mse" not in card["training"]


def test_resume_refuses_other_config(small_set: TrainingData, tmp_path: Path) -> None:
    out = tmp_path / "model"
    train(_cfg(steps=2), small_set, str(out), progress=False)
    other = _cfg(steps=4)
    other = other.__class__.from_dict({**other.to_dict(), "model": {**other.to_dict()["model"], "n_layers": 1}})
    with pytest.raises(ConfigError, match="another model/diffusion config"):
        train(other, small_set, str(out), progress=False, resume=True)
    with pytest.raises(ConfigError, match="already holds training checkpoints"):
        train(_cfg(steps=4), small_set, str(out), progress=False)


def test_train_to_s3_and_resume(small_set: TrainingData, s3_env) -> None:
    bucket = s3_env.make_bucket()
    out = f"s3://{bucket}/models/tiny"
    train(_cfg(steps=2), small_set, out, progress=False)
    train(_cfg(steps=3), small_set, out, progress=False, resume=True)
    from netdiff_lib import storage

    names = {storage.relative(u, out) for u in storage.list_uri(out)}
    assert {"model.safetensors", "model_card.json", "checkpoints/latest"} <= names
    assert checkpoint.latest(f"{out}/checkpoints") == "ckpt-00000003"


def test_cli_train_errors_name_the_input(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "netdiff_lib.cli", "train", "--data", str(tmp_path / "missing"),
                           "--out", str(tmp_path / "x"), "--config", "tiny"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and str(tmp_path / "missing") in proc.stderr


def _pcap_ok(path: Path) -> bool:
    tshark = shutil.which("tshark")
    if tshark is None:
        from netdiff_lib.pcap import PcapFile

        return sum(len(b.offsets) for b in PcapFile(path).batches()) > 0
    proc = subprocess.run([tshark, "-n", "-r", str(path)], capture_output=True, text=True, timeout=60)
    return proc.returncode == 0 and proc.stdout.strip() != "" and "malformed" not in proc.stdout.lower()


def test_cli_train_then_generate_valid_pcaps(small_data: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    model, out = tmp_path / "model", tmp_path / "pcaps"
    cli = [sys.executable, "-m", "netdiff_lib.cli"]
    subprocess.run([*cli, "train", "--data", str(small_data), "--out", str(model), "--config", "tiny",
                    "--steps", "30", "-q"], check=True, env=env, timeout=300)
    subprocess.run([*cli, "generate", "--model", str(model), "--per-class", "2", "-o", str(out), "--sample-steps",
                    "5", "--seed", "1", "-q"], check=True, env=env, timeout=300)
    pcaps = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pcap"))
    assert pcaps == [f"{c}/{c}_{i}.pcap" for c in CLASSES for i in (0, 1)]  # the layout of netdiff run's pcaps/
    assert all(_pcap_ok(out / p) for p in pcaps)


def test_non_finite_step_is_skipped_without_touching_weights_or_moments() -> None:
    net = torch.nn.Linear(4, 3)
    opt = make_optimizer(net, tiny())
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    assert skip_nonfinite(opt, torch.tensor(1.0)).item() == 0.0
    opt.step()
    once = [p.detach().clone() for p in net.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, once, strict=True))
    moments = {k: v.clone() for k, v in opt.state[net.weight].items()}
    net.weight.grad = torch.full_like(net.weight, float("nan"))
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    assert skip_nonfinite(opt, norm).item() == 1.0
    opt.step()
    assert all(torch.equal(a, p) for a, p in zip(once, net.parameters(), strict=True))
    assert all(torch.equal(moments[k], v) for k, v in opt.state[net.weight].items())  # step count too


def test_diverging_training_stops_with_an_error_and_writes_no_model(small_set: TrainingData, tmp_path: Path) -> None:
    cfg = tiny().with_settings(["train.lr=1e8"]).with_overrides(steps=60, checkpoint_every=1000, log_every=5,
                                                                  warmup_steps=1)
    with pytest.raises(TrainingError, match=r"diverged: none of the 5 steps up to step \d+ .* lower train.lr"):
        train(cfg, small_set, str(tmp_path / "model"), progress=False)
    assert not (tmp_path / "model" / "model.safetensors").exists()


def test_time_budget_horizon_follows_the_measured_step_rate() -> None:
    """Slow first steps (start-up) give a short first estimate; the re-estimates from the later rate fix it."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    cfg = tiny().with_overrides(steps=100_000, time_budget_s=100.0)
    state, acc, bar = LoopState(horizon=cfg.train.steps), Accelerator(cpu=True), tqdm(disable=True)
    hi = HORIZON_PROBE[1]
    horizons = {}
    while state.step < state.horizon:
        state.step += 1
        # 0.5 s a step up to step `hi` (start-up), then 0.01 s: 60 steps in 30 s, then 100 steps a second
        state.elapsed_s = 0.5 * min(state.step, hi) + 0.01 * max(0, state.step - hi)
        _apply_budget(state, cfg, acc, bar)
        horizons[state.step] = state.horizon
    assert horizons[hi] == hi + 2 * 70  # 2 steps a second between the probe steps: the pessimistic first guess
    assert horizons[hi + 2 * 70 - 1] > 5_000  # re-estimated one step before stopping: ~60 + 100 x 70 s
    assert horizons[hi + HORIZON_REFRESH] > 5_000  # and at every HORIZON_REFRESH steps
    assert 7_000 <= state.step <= 7_100 and state.elapsed_s <= 100.0 + 0.01


def test_compiled_training_writes_a_loadable_model_and_resumes(small_set: TrainingData, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.compile=true`` runs the network inside torch.compile's wrapper, whose keys carry ``_orig_mod.``.
    Dynamo's tracing is switched off here (inductor takes minutes on a CPU); the wrapper, where the keys come
    from, stays."""
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    cfg, out = _cfg(settings=("train.compile=true",)), tmp_path / "model"
    train(cfg, small_set, str(out), progress=False, until_step=2)
    ck = checkpoint.load(out / "checkpoints")
    assert ck.step == 2 and not [k for k in (*ck.model, *ck.ema) if "_orig_mod" in k]
    train(cfg, small_set, str(out), progress=False, resume=True)
    assert checkpoint.load(out / "checkpoints").step == 4
    model = get_backend("native").load(str(out))
    assert len(model.generate(1, Sampling(steps=2, progress=False))) == len(CLASSES)


def test_fp16_loss_scaler_skips_are_counted(small_set: TrainingData) -> None:
    """Under fp16 (CUDA) accelerate steps through a GradScaler, which skips a step with non-finite gradients
    itself; the loop's flag must still count it, or divergence goes unseen.  Here a real GradScaler on the CPU,
    and a batch whose inter-arrival value is NaN (a NaN loss)."""
    cfg = tiny()
    prep = prepare_data(cfg, small_set)
    rep = prep.representation
    torch.manual_seed(0)
    net = rep.network(cfg, len(prep.labels))
    opt = make_optimizer(net, cfg)
    scaler = torch.amp.GradScaler("cpu")
    x0, labels, lengths, padded = prep.packed.batch(np.arange(4), 64)
    broken = x0.clone()
    broken[0, 0, -1] = float("nan")
    flags, moved, scales = [], [], []
    for rows in (x0, broken, broken):
        before = [p.detach().clone() for p in net.parameters()]
        loss, _ = rep.loss(net, net, cfg, rows, labels, lengths, torch.Generator().manual_seed(0), padded)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
        flags.append(skip_nonfinite(opt, norm, scaler).item())
        scales.append(scaler.get_scale())
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        moved.append(any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True)))
    assert flags == [0.0, 1.0, 1.0] and moved == [True, False, False]
    assert scaler.get_scale() == scales[-1] / 2  # the scaler saw the same non-finite step
    state = LoopState(step=2, history=[{"step": 2, "skipped": 2}])
    with pytest.raises(TrainingError, match="diverged"):  # a window of nothing but such steps
        _check_diverged(state, finite=0, skipped=int(sum(flags[1:])), ckpt_root="ckpts")


class _Hook:
    every = 2

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, step: int, model: NativeModel) -> dict[str, float]:
        self.seen.append(step)
        torch.rand(5)  # a hook may use the global generators: training must not notice
        traces = model.generate(1, Sampling(steps=2, seed=step, progress=False))
        return {"packets": float(sum(len(t.matrix) for t in traces))}


def test_evaluation_hook_sees_the_ema_model_and_changes_nothing(small_set: TrainingData, tmp_path: Path) -> None:
    cfg = _cfg(steps=4)
    plain, hooked, hook = tmp_path / "plain", tmp_path / "hooked", _Hook()
    train(cfg, small_set, str(plain), progress=False)
    train(cfg, small_set, str(hooked), progress=False, until_step=3, hook=hook)
    train(cfg, small_set, str(hooked), progress=False, resume=True, hook=hook)  # and across a resume
    assert hook.seen == [2, 4]
    wa, wb = (_weights(d / "checkpoints" / "ckpt-00000004") for d in (plain, hooked))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    card = json.loads((hooked / "model_card.json").read_text())
    assert [e["step"] for e in card["training"]["evaluations"]] == [2, 4]
    assert all(e["packets"] > 0 for e in card["training"]["evaluations"])
