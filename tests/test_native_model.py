"""The native network, model folder and sampler: shapes, masking, save -> load, generation, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from netdiff_lib.config import Config, tiny
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.generate import trace_names
from netdiff_lib.models import Sampling, backend_of, get_backend
from netdiff_lib.models.features import FeatureCodec
from netdiff_lib.models.native import NativeModel, PacketDiT, load_model_dir, save_model_dir
from netdiff_lib.models.sampler import generate_traces, sampling_scheduler

torch.set_num_threads(1)
LABELS = ["alpha", "beta", "gamma"]


def features_cfg() -> Config:
    """The continuous-feature baseline (these tests cover it; tests/test_token_model.py covers tokens)."""
    return tiny().with_settings(["model.representation=features"])


def _net(seed: int = 0) -> PacketDiT:
    torch.manual_seed(seed)
    net = PacketDiT(features_cfg().model, FeatureCodec().width, len(LABELS))
    with torch.no_grad():  # a trained-looking network: the zero-initialised head and adaLN made non-zero
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return net.eval()


def _stats() -> dict:
    return {"lengths": {"alpha": [5, 9, 30], "beta": [64, 70], "gamma": [1, 2]}, "iat_us": {}, "traces": {},
            "packets": {}}


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    net = _net()
    out = tmp_path / "model"
    save_model_dir(out, net, dict(net.named_parameters()), features_cfg(), FeatureCodec(), LABELS, _stats())
    return out


def test_initial_prediction_is_the_linear_estimate() -> None:
    net = PacketDiT(features_cfg().model, 11, 2)
    x = torch.randn(2, 7, 11)
    sab = torch.tensor([0.3, 0.9])
    out = net(x, torch.tensor([10, 900]), torch.tensor([0, 2]), torch.tensor([7, 4]), sab)
    torch.testing.assert_close(out, sab[:, None, None] * x)


def test_padding_does_not_leak_into_valid_positions() -> None:
    net = _net()
    x = torch.randn(2, 16, net.n_features)
    lengths = torch.tensor([16, 9])
    args = (torch.tensor([5, 5]), torch.tensor([0, 1]), lengths, torch.tensor([0.5, 0.5]))
    a = net(x, *args)
    x2 = x.clone()
    x2[1, 9:] = torch.randn(7, net.n_features) * 5
    b = net(x2, *args)
    torch.testing.assert_close(a[1, :9], b[1, :9], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[1, 9:], b[1, 9:])
    # no mask needed (and none used) when every trace fills the rows
    full = net(x[:1], args[0][:1], args[1][:1], lengths[:1], args[3][:1], padded=False)
    torch.testing.assert_close(full, a[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_packets"):
        net(torch.randn(1, 65, net.n_features), *[a[:1] for a in args])


def test_save_load_round_trip(model_dir: Path) -> None:
    model = load_model_dir(model_dir)
    ref = _net()
    for (name, p), (_, q) in zip(model.net.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert model.labels == LABELS and model.config == features_cfg()
    assert backend_of(model_dir) == "native"
    again = get_backend("native").load(str(model_dir))
    a = again.generate({"alpha": 2}, Sampling(steps=3, seed=7, progress=False))
    b = model.generate({"alpha": 2}, Sampling(steps=3, seed=7, progress=False))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.matrix, y.matrix)
        np.testing.assert_array_equal(x.iat_us, y.iat_us)


def test_generation_shapes_labels_and_values(model_dir: Path) -> None:
    model = load_model_dir(model_dir)
    traces = generate_traces(model, {"alpha": 3, "beta": 2, "gamma": 1}, steps=4, guidance=2.0, seed=1,
                             progress=False)
    assert [t.label for t in traces] == ["alpha"] * 3 + ["beta"] * 2 + ["gamma"]
    pools = model.stats["lengths"]
    for t in traces:
        assert t.matrix.dtype == np.int8 and t.matrix.shape[1] == 1088
        assert set(np.unique(t.matrix)) <= {-1, 0, 1}
        assert min(len(t.matrix), 64) in [min(v, 64) for v in pools[t.label]]
        assert t.iat_us[0] == 0 and (t.iat_us >= 0).all()
    fixed = generate_traces(model, 2, steps=2, length=64, progress=False)
    assert [len(t.matrix) for t in fixed] == [64] * 6
    assert trace_names(traces) == ["alpha_0", "alpha_1", "alpha_2", "beta_0", "beta_1", "gamma_0"]


def test_same_seed_same_traces_other_seed_differs(model_dir: Path) -> None:
    model = load_model_dir(model_dir)
    a, b, c = (generate_traces(model, {"beta": 1}, steps=3, seed=s, progress=False)[0] for s in (3, 3, 4))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert not np.array_equal(a.matrix, c.matrix)


def test_scheduler_is_dpm_solver_with_data_prediction(model_dir: Path) -> None:
    sched = sampling_scheduler(load_model_dir(model_dir), 25)
    assert type(sched).__name__ == "DPMSolverMultistepScheduler"
    assert sched.config.algorithm_type == "dpmsolver++" and sched.config.prediction_type == "sample"
    assert len(sched.timesteps) == 25


def test_bad_requests_and_folders(model_dir: Path, tmp_path: Path) -> None:
    model: NativeModel = load_model_dir(model_dir)
    with pytest.raises(ConfigError, match="not in this model"):
        model.generate({"delta": 1}, Sampling(progress=False))
    with pytest.raises(InputError, match="model folder not found"):
        load_model_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"model\.safetensors is missing|config\.json is missing"):
        load_model_dir(tmp_path / "empty")
    cfg = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**cfg, "backend": "sd15"}))
    with pytest.raises(ConfigError, match="'sd15' model, not a native one"):
        load_model_dir(model_dir)
    (model_dir / "config.json").write_text(json.dumps({**cfg, "codec_width": 12}))
    with pytest.raises(InputError, match="features"):
        load_model_dir(model_dir)
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        get_backend("nope")
