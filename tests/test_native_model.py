"""The native model folder and sampler through the representation seam: save -> load, generation, errors, old
folders, compiled networks."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from netdiff_lib.config import Config, tiny
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.generate import trace_names
from netdiff_lib.models import Sampling, backend_of, get_backend
from netdiff_lib.models.native.compiled import sampling_networks, wanted
from netdiff_lib.models.native.field_tokens import FieldTokens
from netdiff_lib.models.native.model import NativeModel, load_model_dir, plain_state, save_model_dir
from netdiff_lib.models.native.representation import REPRESENTATIONS, Representation, representation_class
from netdiff_lib.models.native.sampler import generate_traces
from netdiff_lib.nprint.encode import encode_pcap

torch.set_num_threads(1)
LABELS = ["alpha", "beta", "gamma"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rep(samples_dir: Path) -> FieldTokens:
    traces = [encode_pcap(p, max_packets=64).trace for p in sorted(samples_dir.glob("*/*.pcap"))]
    return FieldTokens.fit(tiny(), traces, [LABELS[i % 3] for i in range(len(traces))])


def _net(rep: Representation, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = rep.network(tiny(), len(LABELS))
    with torch.no_grad():  # a trained-looking network: the zero-initialised head and adaLN made non-zero
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return net.eval()


def _stats() -> dict:
    return {"lengths": {"alpha": [5, 9, 30], "beta": [64, 70], "gamma": [1, 2]}, "iat_us": {}, "traces": {},
            "packets": {}}


@pytest.fixture()
def model_dir(rep: FieldTokens, tmp_path: Path) -> Path:
    net = _net(rep)
    out = tmp_path / "model"
    save_model_dir(out, dict(net.named_parameters()), tiny(), rep, LABELS, _stats())
    return out


def test_the_registry_holds_the_model_that_runs() -> None:
    assert representation_class("tokens") is FieldTokens and set(REPRESENTATIONS) == {"tokens"}
    assert issubclass(FieldTokens, Representation) and not FieldTokens.__abstractmethods__


def test_save_load_round_trip(model_dir: Path, rep: FieldTokens) -> None:
    model = load_model_dir(model_dir)
    ref = _net(rep)
    for (name, p), (_, q) in zip(model.net.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert model.labels == LABELS and model.config == tiny() and model.layout == rep.layout
    assert isinstance(model.representation, FieldTokens) and model.representation.signature == rep.signature
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
    (model_dir / "config.json").write_text(json.dumps({**cfg, "codec_width": [3, 4]}))
    with pytest.raises(InputError, match="network shape"):
        load_model_dir(model_dir)
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        get_backend("nope")


def test_folders_of_the_first_design_fail_clearly_and_older_token_folders_load(model_dir: Path) -> None:
    meta = json.loads((model_dir / "config.json").read_text())
    # token folders written before the first design's config values were removed still load
    old = {**meta, "config": {**meta["config"], "diffusion": {**meta["config"]["diffusion"],
                                                                "num_train_timesteps": 1000,
                                                                "beta_schedule": "squaredcos_cap_v2"}}}
    (model_dir / "config.json").write_text(json.dumps(old))
    assert load_model_dir(model_dir).config == tiny()
    features = {**meta, "config": {**meta["config"], "model": {**meta["config"]["model"],
                                                               "representation": "features"}}}
    (model_dir / "config.json").write_text(json.dumps(features))
    with pytest.raises(ConfigError, match=r"first design .* 425ffc8"):
        load_model_dir(model_dir)
    with pytest.raises(ConfigError, match="first design"):
        tiny().with_settings(["model.representation=features"])
    for key in ("num_train_timesteps", "beta_schedule"):  # values only the first design read are gone
        with pytest.raises(ConfigError):
            tiny().with_settings([f"diffusion.{key}=100"])
    unversioned = Config.to_dict(tiny())
    del unversioned["model"]["representation"]  # folders from before tokens were the first design's
    with pytest.raises(ConfigError, match="first design"):
        Config.from_dict(unversioned)


def test_weights_saved_from_a_compiled_network_load(model_dir: Path, rep: FieldTokens) -> None:
    """A folder written by a ``train.compile=true`` run before the fix holds ``_orig_mod.`` keys."""
    net = _net(rep)
    compiled = torch.compile(net, backend="eager")
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    save_file({k: v.contiguous() for k, v in compiled.state_dict().items()}, str(model_dir / "model.safetensors"))
    model = load_model_dir(model_dir)
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in net.state_dict().items())
    # and the model folder writes plain keys whatever it is given
    save_model_dir(model_dir, compiled.state_dict(), tiny(), rep, LABELS, _stats())
    assert set(load_file(str(model_dir / "model.safetensors"))) == set(net.state_dict())
    assert plain_state({"_orig_mod.a.b": 1, "c": 2}) == {"a.b": 1, "c": 2}


def test_a_compiled_network_samples_the_same_traces(model_dir: Path) -> None:
    model = load_model_dir(model_dir)
    plain = generate_traces(model, {"alpha": 2}, steps=3, seed=5, progress=False)
    model.net = torch.compile(model.net, backend="eager")  # a network compiled by its user
    compiled = generate_traces(model, {"alpha": 2}, steps=3, seed=5, progress=False)
    for a, b in zip(plain, compiled, strict=True):
        np.testing.assert_array_equal(a.matrix, b.matrix)


def test_throughput_benchmark_with_compile_runs(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_native", "throughput", "--model", str(model_dir),
                           "--compile", "eager", "--packets", "16", "--traces", "3", "--steps", "2",
                           "--batch-tokens", "64", "--device", "cpu", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    eager, compiled = result["runs"]  # side by side in one run
    assert eager["compiled"] is False and compiled["compiled"] == "eager"
    assert eager["traces"] == compiled["traces"] == 3 and compiled["packets"] == 16
    assert result["compiled_vs_eager"][0]["same_traces"] == 1.0  # the eager backend computes the same numbers


def _with_generate(model: NativeModel, **settings: str) -> NativeModel:
    model.config = replace(model.config, generate=replace(model.config.generate, **settings))
    return model


def test_compiled_sampling_draws_the_same_traces_as_eager(model_dir: Path) -> None:
    model = _with_generate(load_model_dir(model_dir), compile="on", compile_backend="aot_eager")
    requests = {"alpha": 3, "beta": 2, "gamma": 2}  # several buckets, padded and short batches
    eager = generate_traces(model, requests, steps=3, seed=4, progress=False, compile="off", batch_tokens=64)
    compiled = generate_traces(model, requests, steps=3, seed=4, progress=False, batch_tokens=64)
    assert sampling_networks(model)[0] is not model.net  # it did sample through the compiled wrapper
    for a, b in zip(eager, compiled, strict=True):
        np.testing.assert_array_equal(a.matrix, b.matrix)
        np.testing.assert_allclose(a.iat_us, b.iat_us, rtol=1e-5)


def test_compile_is_on_for_cuda_by_default_and_off_for_the_cpu(model_dir: Path) -> None:
    assert tiny().generate.compile == "auto"
    assert wanted("auto", "cuda") and not wanted("auto", "cpu") and wanted("on", "cpu") and not wanted("off", "cuda")
    assert not wanted("auto", "cuda", packets=1000) and wanted("on", "cuda", packets=1000)  # too small to pay back
    model = load_model_dir(model_dir)  # on the CPU: auto samples eagerly
    assert sampling_networks(model) == [model.net]
    with pytest.raises(ConfigError, match=r"generate\.compile must be one of"):
        tiny().with_settings(["generate.compile=yes"])
    assert tiny().with_settings(["generate.compile=off"]).generate.compile == "off"


def test_a_failing_compilation_falls_back_to_eager_with_a_warning(model_dir: Path) -> None:
    from torch._dynamo import register_backend

    @register_backend(name="netdiff_test_broken")
    def broken(gm: torch.fx.GraphModule, example_inputs: list) -> None:
        raise RuntimeError("this backend cannot compile")

    model = load_model_dir(model_dir)
    eager = generate_traces(model, {"alpha": 2}, steps=2, seed=1, progress=False)
    _with_generate(model, compile="on", compile_backend="netdiff_test_broken")
    with pytest.warns(RuntimeWarning, match="compiled sampling .*netdiff_test_broken.* failed.*sampling eagerly"):
        fallback = generate_traces(model, {"alpha": 2}, steps=2, seed=1, progress=False)
    for a, b in zip(eager, fallback, strict=True):
        np.testing.assert_array_equal(a.matrix, b.matrix)
    assert sampling_networks(model) == [model.net]  # and it is not tried again
