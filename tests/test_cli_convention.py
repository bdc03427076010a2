"""Daily use of the command line (issue 22): one convention (``-o/--out``, ``-q/--quiet``, ``--sample-steps``) with
the old spellings as hidden aliases; refusals before any work (pipeline parameters, ``generate -o`` on a file,
unknown ``--set`` keys); ``compile -o FOLDER``; train's and run's default preset; Ctrl-C in ``netdiff train``."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from sample_sets import link_samples

from netdiff_lib import checkpoint
from netdiff_lib.cli import build_parser, main
from netdiff_lib.errors import ConfigError
from netdiff_lib.kfp_pipelines import check_parameters

CLI = [sys.executable, "-m", "netdiff_lib.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ON_CPU = not torch.cuda.is_available()

# (the convention's spelling, an older one) of the same command line
SPELLINGS = [
    (["generate", "--model", "m", "--per-class", "1", "-o", "x", "--sample-steps", "5", "-q"],
     ["generate", "--model", "m", "--per-class", "1", "--out", "x", "--steps", "5", "--no-progress"]),
    (["train", "--data", "d", "-o", "m", "-q"], ["train", "--data", "d", "--out", "m", "--no-progress"]),
    (["run", "--input", "d", "-o", "x", "--sample-steps", "3"], ["run", "--input", "d", "--output", "x",
                                                                 "--sample-steps", "3"]),
    (["submit", "--host", "h", "--namespace", "n", "-o", "s3://b/o"],
     ["submit", "--host", "h", "--namespace", "n", "--output", "s3://b/o"]),
    (["compile", "-o", "f.yaml"], ["compile", "--output", "f.yaml"]),
    (["evaluate", "--real-train", "a", "--real-test", "b", "-o", "r", "-q"],
     ["evaluate", "--real-train", "a", "--real-test", "b", "--out", "r", "--quiet"]),
    (["split", "d", "-o", "s"], ["split", "d", "--out", "s"]),
]
OLD = ("--output", "--no-progress")
QUIET = ("encode", "render", "decode", "reconstruct", "split", "train", "generate", "evaluate", "run")


@pytest.mark.parametrize(("new", "old"), SPELLINGS, ids=[new[0] for new, _ in SPELLINGS])
def test_old_spellings_are_aliases_of_the_convention(new: list[str], old: list[str]) -> None:
    parser = build_parser()
    assert vars(parser.parse_args(new)) == vars(parser.parse_args(old))


@pytest.mark.parametrize("command", [*QUIET, "compile", "submit"])
def test_help_shows_one_convention(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "-o" in text and "--out " in text
    assert ("-q, --quiet" in text) == (command in QUIET)
    assert not [old for old in OLD if old in text], text
    if command in ("generate", "run", "submit"):
        assert "--sample-steps" in text
    if command == "generate":
        assert "--steps" not in text.replace("--sample-steps", "")


def test_both_spellings_at_once_are_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compile", "-o", "a.yaml", "--output", "b.yaml"])
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "named"), [
    (["--traces-per-class", "0"], "traces_per_class=0"), (["--shards", "0"], "shards=0"),
    (["--steps", "-1"], "train_steps=-1"), (["--sample-steps", "-2"], "sample_steps=-2"),
    (["--seed", "-1"], "seed=-1"), (["--retries", "-1"], "--retries"),
])
def test_run_refuses_bad_parameters_before_any_step(flags: list[str], named: str, samples_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["run", "--input", str(samples_dir), "-o", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_submit_refuses_bad_parameters_before_contacting_the_server(capsys: pytest.CaptureFixture) -> None:
    rc = main(["submit", "--host", "http://127.0.0.1:9", "--namespace", "ns", "--input", "s3://b/i", "-o", "s3://b/o",
               "--param", "traces_per_class=0", "--param", "test_fraction=1.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "traces_per_class=0" in err and "test_fraction=1.5" in err and "connect" not in err


def test_check_parameters_names_every_bad_value() -> None:
    check_parameters({"traces_per_class": 1, "shards": 1, "train_steps": 0, "sample_steps": 0, "seed": 0,
                      "test_fraction": 0.2, "max_packets": 1024, "timing": "empirical", "config": "tiny"})
    bad = {"traces_per_class": 0, "shards": -1, "gpu_count": 0, "max_packets": 0, "test_fraction": 0.0,
           "timing": "later", "config": "huge", "backend": "nosuch", "seed": 2**40}
    with pytest.raises(ConfigError) as info:
        check_parameters(bad)
    assert all(f"{key}=" in str(info.value) for key in bad)


def test_generate_refuses_an_existing_file_before_loading_the_model(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    taken = tmp_path / "pcaps"
    taken.write_text("a file, not a folder")
    rc = main(["generate", "--model", str(tmp_path / "no-model"), "--per-class", "1", "-o", str(taken)])
    err = capsys.readouterr().err
    assert rc == 2 and str(taken) in err and "no-model" not in err  # the output, checked before the model


@pytest.mark.parametrize(("setting", "words"), [
    ("model.nosuch=1", ["model has no key 'nosuch'", "d_model", "n_layers", "representation"]),
    ("model.dmodel=64", ["did you mean 'd_model'"]),
    ("model.steps=5", ["did you mean 'train.steps'"]),
    ("modle.d_model=64", ["no section 'modle'", "did you mean 'model'", "diffusion"]),
])
def test_unknown_setting_lists_the_keys(setting: str, words: list[str], samples_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    rc = main(["train", "--data", str(samples_dir), "-o", str(tmp_path / "m"), "--config", "tiny", "--set", setting])
    err = capsys.readouterr().err
    assert rc == 2 and all(w in err for w in words), err


@pytest.mark.parametrize(("pipeline", "name"), [("netdiff", "netdiff"), ("generate", "netdiff-generate")])
def test_compile_into_a_folder(pipeline: str, name: str, tmp_path: Path) -> None:
    assert main(["compile", "-o", str(tmp_path), "--pipeline", pipeline]) == 0
    doc = next(yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()))
    assert doc["pipelineInfo"]["name"] == name


@pytest.fixture
def two_classes(samples_dir: Path, tmp_path: Path) -> Path:
    return link_samples(samples_dir, tmp_path / "data", ("dns", "icmp"), 2)


@pytest.mark.skipif(not ON_CPU, reason="the CPU default")
def test_train_and_run_default_to_tiny_on_a_cpu(two_classes: Path, tmp_path: Path) -> None:
    from netdiff_lib.cli.run import arguments

    assert arguments(build_parser().parse_args(["run", "--input", str(two_classes), "-o", "x"]))["config"] == "tiny"
    model = tmp_path / "model"
    proc = subprocess.run([*CLI, "train", "--data", str(two_classes), "-o", str(model), "--steps", "2", "-q",
                           "--workers", "1"], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((model / "model_card.json").read_text())["config"]["preset"] == "tiny"
    assert "WARNING" not in proc.stderr


@pytest.mark.skipif(not ON_CPU, reason="the CPU warning")
def test_a_gpu_preset_on_a_cpu_warns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--data", str(tmp_path / "missing"), "-o", str(tmp_path / "m"), "--config", "base"]) == 2
    err = capsys.readouterr().err
    assert "WARNING" in err and "base" in err and "--config tiny" in err


def _wait_for(proc: subprocess.Popen, done, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)


def _sigint_default() -> None:
    """In the child: Ctrl-C as a terminal gives it, even when this test runs where SIGINT is ignored (a
    background job of a non-interactive shell inherits SIG_IGN, and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_train_names_the_checkpoint_and_the_resume_command(two_classes: Path, tmp_path: Path) -> None:
    """A real SIGINT after the first checkpoint: exit status 130, the checkpoint and a --resume command that
    continues from it (checked by running it, and interrupting it in turn)."""
    model = tmp_path / "model"
    root = model / "checkpoints"
    cmd = [*CLI, "train", "--data", str(two_classes), "-o", str(model), "--config", "tiny", "--steps", "100000",
           "--checkpoint-every", "3", "-q", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    try:
        _wait_for(proc, lambda: checkpoint.latest(root) is not None, "checkpoint")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    name = checkpoint.latest(root)
    assert f"{root}/{name}" in err, err
    resume = next(line.strip() for line in err.splitlines() if "--resume" in line)
    args = shlex.split(resume)
    assert args[:2] == ["netdiff", "train"] and args[-1] == "--resume" and args[1:-1] == cmd[len(CLI):]
    step = checkpoint.load(root, name).step
    again = subprocess.Popen([*CLI, *args[1:]], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=_sigint_default)
    try:
        seen: list[str] = []
        for line in again.stdout:
            seen.append(line)
            if line.startswith("resumed from step"):
                break
        assert seen and seen[-1].startswith(f"resumed from step {step}"), "".join(seen)
        _wait_for(again, lambda: checkpoint.latest(root) != name, "new checkpoint")
        again.send_signal(signal.SIGINT)
        rest, _ = again.communicate(timeout=120)
    finally:
        again.kill()
    assert again.returncode == 130 and checkpoint.load(root).step > step, rest
