"""Checkpoints: save -> load round trip, latest + keep-k, RNG states, local folders and a real S3 server."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from netdiff_lib import checkpoint
from netdiff_lib.errors import InputError

torch.set_num_threads(1)


def _objects(seed: int) -> tuple[dict, dict, dict]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    ema = {k: v.detach().clone() * 0.5 for k, v in net.state_dict().items()}
    return net.state_dict(), ema, opt.state_dict()


def _assert_same(ck: checkpoint.Checkpoint, model: dict, ema: dict, opt: dict) -> None:
    for k in model:
        assert torch.equal(ck.model[k], model[k]) and torch.equal(ck.ema[k], ema[k])
    for pid, st in opt["state"].items():
        for key, value in st.items():
            assert torch.equal(ck.optimizer["state"][pid][key], value)
    assert ck.optimizer["param_groups"] == opt["param_groups"]


def test_save_load_latest_keep_k(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    assert checkpoint.latest(root) is None
    with pytest.raises(InputError, match="no checkpoint"):
        checkpoint.load(root)
    saved = {}
    for step in (5, 10, 15):
        saved[step] = _objects(step)
        checkpoint.save(root, step, {"loop": {"step": step}}, *saved[step], keep=2)
    assert checkpoint.list_checkpoints(root) == ["ckpt-00000010", "ckpt-00000015"]
    assert checkpoint.latest(root) == "ckpt-00000015"
    ck = checkpoint.load(root)
    assert ck.step == 15 and ck.meta["loop"] == {"step": 15} and ck.meta["format"] == checkpoint.FORMAT
    _assert_same(ck, *saved[15])
    _assert_same(checkpoint.load(root, "ckpt-00000010"), *saved[10])
    assert not list(root.glob(".*")), "temporary folders left behind"


def test_latest_pointer_wins_and_incomplete_checkpoint_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    for step in (1, 2):
        checkpoint.save(root, step, {}, *_objects(step), keep=5)
    (root / "latest").write_text("ckpt-00000001")
    assert checkpoint.latest(root) == "ckpt-00000001"
    (root / "latest").write_text("garbage")
    assert checkpoint.latest(root) == "ckpt-00000002"
    (root / "ckpt-00000002" / "optimizer.pt").unlink()
    with pytest.raises(InputError, match=r"optimizer\.pt missing"):
        checkpoint.load(root)


def test_rng_state_round_trip(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    checkpoint.save(tmp_path, 1, {}, *_objects(0))
    expected = (random.random(), np.random.rand(), torch.rand(2))
    for _ in range(3):  # move every generator on
        random.random(), np.random.rand(), torch.rand(2)
    checkpoint.set_rng_state(checkpoint.load(tmp_path).rng)
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_checkpoints_on_s3(s3_env) -> None:
    bucket = s3_env.make_bucket()
    root = f"s3://{bucket}/runs/model/checkpoints"
    assert checkpoint.latest(root) is None
    saved = {s: _objects(s) for s in (3, 6)}
    for step, objs in saved.items():
        uri = checkpoint.save(root, step, {"loop": {"step": step}}, *objs, keep=1)
        assert uri == f"{root}/ckpt-{step:08d}"
    assert checkpoint.latest(root) == "ckpt-00000006"
    ck = checkpoint.load(root)
    assert ck.step == 6
    _assert_same(ck, *saved[6])
