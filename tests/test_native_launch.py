"""``netdiff train`` in several processes (DDP): the real launch path (``stages.launch.launch``, one process per
rank through ``torch.distributed.run``), on the CPU over gloo with two ranks, and on two GPUs where there are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sample_sets import link_samples

from netdiff_lib.models.native.model import load_model_dir
from netdiff_lib.models.native.sampler import generate_traces

CLASSES = ("dns", "http", "icmp")
CLI = [sys.executable, "-m", "netdiff_lib.cli", "train"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def small_data(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return link_samples(samples_dir, tmp_path_factory.mktemp("data"), CLASSES, 3)


def _train(data: Path, out: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    # constant LR (after the warm-up): a run stopped at step 3 and resumed to 6 follows the same schedule
    cmd = [*CLI, "--data", str(data), "-o", str(out), "--config", "tiny", "--steps", str(steps), "-q", "--workers",
           "1", "--set", "train.lr_schedule=constant", "--checkpoint-every", "3", *extra]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def _card(folder: Path) -> dict:
    return json.loads((folder / "model_card.json").read_text())["training"]


@pytest.mark.slow
def test_two_cpu_processes_train_resume_exactly_and_the_model_generates(small_data: Path, tmp_path: Path) -> None:
    whole, sliced = tmp_path / "whole", tmp_path / "sliced"
    runs = [_train(small_data, whole, 6, "--cpu-processes", "2"),
            _train(small_data, sliced, 3, "--cpu-processes", "2"),
            _train(small_data, sliced, 6, "--cpu-processes", "2", "--resume")]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        assert "training in 2 processes" in run.stdout
    assert _card(whole)["processes"] == 2 and _card(sliced)["processes"] == 2  # both ranks ran
    assert _card(whole)["steps"] == _card(sliced)["steps"] == 6
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(sliced / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the resumed run is the same run
    model = load_model_dir(whole)
    traces = generate_traces(model, 2, steps=3, progress=False)
    assert sorted({t.label for t in traces}) == sorted(CLASSES) and all(len(t.matrix) for t in traces)


def test_gpus_beyond_the_machine_are_refused_before_any_work(small_data: Path, tmp_path: Path) -> None:
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    run = _train(small_data, tmp_path / "m", 2, "--gpus", str(max(2, have + 1)))
    assert run.returncode == 2 and f"this machine has {have} GPU(s)" in run.stderr
    assert not (tmp_path / "m").exists()
    bad = _train(small_data, tmp_path / "m", 2, "--gpus", "two")
    assert bad.returncode == 2 and "--gpus must be a number" in bad.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_train_one_model(small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    run = _train(small_data, out, 20, "--gpus", "2")
    assert run.returncode == 0, run.stderr[-2000:]
    card = _card(out)
    assert card["processes"] == 2 and card["device"] != "cpu"
    traces = generate_traces(load_model_dir(out, device="cuda"), 2, steps=3, progress=False)
    assert len(traces) == 2 * len(CLASSES)
