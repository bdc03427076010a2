"""``netdiff generate --set SECTION.KEY=VALUE``: a trained native model's sampling and decoding settings for one run.

A ``tiny`` model trained briefly on the sample captures (TCP rules fitted: ``model.tcp_state=handshake``, the
default) generates through the real CLI in subprocesses: ``model.tcp_state=off`` changes the TCP flags on the same
seed, also when decoding runs in worker processes; a key that shapes the network is refused before anything is
written; the model folder is left byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sample_sets import handshakes

from netdiff_lib.config import tiny
from netdiff_lib.models.native.tokens import read_fields
from netdiff_lib.trace import load_trace


@pytest.fixture(scope="module")
def model_dir(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from netdiff_lib.encoded import from_captures
    from netdiff_lib.models.native.train import train

    out = tmp_path_factory.mktemp("genset") / "m"
    cfg = tiny().with_settings(["model.tcp_state=handshake", "train.steps=30"])
    train(cfg, from_captures(str(samples_dir), 64), str(out), progress=False)
    return out


def _generate(model: Path, out: Path, *settings: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "netdiff_lib.cli", "generate", "--model", str(model), "--per-class", "3",
            "--out", str(out), "--seed", "0", "--device", "cpu", "--arrays", "--quiet"]
    for item in settings:
        argv += ["--set", item]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def _flags(out: Path) -> dict[str, list[int]]:
    """Per generated trace (by file name): the TCP flags of its packets, in order."""
    flags = {}
    for path in sorted(out.rglob("*.npz")):
        f = read_fields(load_trace(path).matrix)
        flags[path.name] = f.values["tcp_flags"][(f.l3 != 0) & (f.l4 == 1)].tolist()
    return flags


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_tcp_state_off_changes_the_flags_in_this_process_and_in_decode_workers(model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    before = _digest(model_dir)
    default = _generate(model_dir, tmp_path / "default", "generate.decode_workers=0")
    assert default.returncode == 0, default.stderr
    opened, whole = handshakes(load_trace(p).matrix for p in sorted((tmp_path / "default").rglob("*.npz")))
    assert opened > 0 and whole == opened  # handshake, as trained: every opened connection starts SYN, SYN-ACK, ACK
    off = _generate(model_dir, tmp_path / "off", "model.tcp_state=off", "generate.decode_workers=0")
    workers = _generate(model_dir, tmp_path / "workers", "model.tcp_state=off", "generate.decode_workers=2",
                        "model.conv_decode=calibrate")
    assert off.returncode == 0 and workers.returncode == 0, off.stderr + workers.stderr
    flags = _flags(tmp_path / "off")
    assert flags.keys() == _flags(tmp_path / "default").keys()
    assert flags != _flags(tmp_path / "default")  # the model's own flags, not the handshakes
    # the worker processes decode with the overridden rules: the same flags as decoding in this process (and
    # calibrate, which this model has no one-packet shares for, falls back to regroup, the trained rule, with a
    # notice)
    assert _flags(tmp_path / "workers") == flags
    assert "decoding processes failed" not in workers.stderr  # decoded in the workers, not the fallback thread
    notices = [line for line in workers.stderr.splitlines() if "notice" in line]
    assert len(notices) == 1 and "model.conv_decode=calibrate" in notices[0] and "regroup" in notices[0]
    assert _digest(model_dir) == before  # the folder is never rewritten
    assert json.loads((model_dir / "tokens.json").read_text())["tcp_state"] == "handshake"


@pytest.mark.parametrize(("item", "words"), [
    ("model.d_model=64", ["model.d_model is not a generation setting", "model.tcp_state"]),
    ("model.tcp_state=sometimes", ["model.tcp_state", "sometimes"]),
    ("model.tcp_stat=off", ["did you mean 'tcp_state'", "generation takes"]),
    ("train.steps=5", ["train.steps is not a generation setting", "diffusion.temperature"]),
])
def test_a_refused_setting_exits_2_naming_it_and_writes_nothing(model_dir: Path, tmp_path: Path, item: str,
                                                                words: list[str]) -> None:
    before = _digest(model_dir)
    proc = _generate(model_dir, tmp_path / "out", item)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("netdiff generate: error:") and all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "out").exists()
    assert _digest(model_dir) == before


def test_an_sd15_model_refuses_set(tmp_path: Path) -> None:
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"backend": "sd15"}))
    proc = _generate(folder, tmp_path / "out", "diffusion.guidance=2")
    assert proc.returncode == 2, proc.stderr
    assert "backend 'sd15' takes no generation settings" in proc.stderr
    assert not (tmp_path / "out").exists()


def _tokens(traces: list) -> list[np.ndarray]:
    return [t.matrix for t in traces]


def test_sampling_settings_reach_the_sampler(model_dir: Path) -> None:
    from netdiff_lib.models.native.model import load_model_dir
    from netdiff_lib.models.native.sampler import generate_traces

    plain = generate_traces(load_model_dir(model_dir), 2, seed=3, progress=False)
    model = load_model_dir(model_dir)
    assert model.apply_settings(["diffusion.temperature=0.3", "diffusion.reveal=structure_first"]) == []
    assert (model.config.diffusion.temperature, model.config.diffusion.reveal) == (0.3, "structure_first")
    hot = generate_traces(model, 2, seed=3, progress=False)
    assert any(not np.array_equal(a, b) for a, b in zip(_tokens(plain), _tokens(hot), strict=True))


def test_a_rule_without_its_fitted_state_decodes_as_before_with_a_notice(model_dir: Path, tmp_path: Path) -> None:
    """A folder whose tokenizer was fitted without TCP rates (as one trained with ``tcp_state=off``): ``--set
    model.tcp_state=handshake`` prints a notice and leaves the flags as sampled, as that folder always did."""
    import shutil

    from netdiff_lib.models.native.model import load_model_dir
    from netdiff_lib.models.native.sampler import generate_traces

    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    state = json.loads((old / "tokens.json").read_text())
    state.update(tcp_state="off", tcp_rates={})
    (old / "tokens.json").write_text(json.dumps(state))
    before = generate_traces(load_model_dir(old), 2, seed=1, progress=False)
    model = load_model_dir(old)
    notices = model.apply_settings(["model.tcp_state=handshake", "model.iat_decode=role"])
    assert len(notices) == 1 and notices[0].startswith("model.tcp_state=handshake needs")
    assert model.representation.tokenizer.tcp_state == "handshake"
    after = generate_traces(model, 2, seed=1, progress=False)
    assert model.representation.tokenizer.iat_roles  # fitted: role applies, so only the times may differ
    assert all(np.array_equal(a, b) for a, b in zip(_tokens(before), _tokens(after), strict=True))
