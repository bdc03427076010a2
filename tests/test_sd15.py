"""Backend ``sd15`` on tiny random Stable Diffusion 1.5-layout models (no download, CPU): config, captions,
LoRA training, diffusers/kohya files, exact resume, ControlNet canny, weights errors, pcaps, CLI, pipeline."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("peft")
pytest.importorskip("cv2")
pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch
from PIL import Image
from safetensors import safe_open
from sample_sets import link_samples

from netdiff_lib.cli import main
from netdiff_lib.dataset import ClassMap
from netdiff_lib.encoded import from_captures
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.models import get_backend
from netdiff_lib.models.base import Sampling, TrainingData
from netdiff_lib.models.sd15 import config as sd15_config
from netdiff_lib.models.sd15.data import canny, examples, trace_image
from netdiff_lib.models.sd15.lora import DIFFUSERS_FILE, KOHYA_FILE
from netdiff_lib.models.sd15.tiny import build_tiny
from netdiff_lib.models.sd15.weights import resolve
from netdiff_lib.validate import validate_pcaps

torch.set_num_threads(1)
CLASSES = ("dns", "http", "icmp")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_tiny(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def data_dir(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return link_samples(samples_dir, tmp_path_factory.mktemp("captures"), CLASSES, 2)


@pytest.fixture(scope="module")
def data(data_dir: Path) -> TrainingData:
    return from_captures(str(data_dir), 1024)


def _cfg(weights: tuple[Path, Path], *settings: str, steps: int | None = None):
    return get_backend("sd15").config("tiny", steps=steps, settings=settings,
                                      weights={"base": str(weights[0]), "controlnet": str(weights[1])})


@pytest.fixture(scope="module")
def model_dir(tiny_weights: tuple[Path, Path], data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``netdiff train --backend sd15`` on the tiny weights (lr raised so that 4 steps move the LoRA)."""
    out = tmp_path_factory.mktemp("model") / "m"
    rc = main(["train", "--backend", "sd15", "--data", str(data_dir), "--out", str(out), "--config", "tiny",
               "--weights", str(tiny_weights[0]), "--controlnet", str(tiny_weights[1]), "-q",
               "--set", "train.unet_lr=0.01", "--set", "train.text_encoder_lr=0.01", "--workers", "1"])
    assert rc == 0
    return out


def test_defaults_are_the_seeds() -> None:
    cfg = sd15_config.base()
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.train_text_encoder) == (128, 128.0, True)
    t = cfg.train
    assert (t.width, t.height, t.unet_lr, t.text_encoder_lr, t.lr_schedule) == (816, 768, 1e-4, 5e-5, "constant")
    assert (t.optimizer, t.mixed_precision, t.seed, t.clip_skip, t.gradient_checkpointing) == (
        "adamw8bit", "fp16", 1234, 2, True)
    assert (t.batch_size, t.epochs, t.repeats, t.steps) == (1, 1, 20, 0)
    g = cfg.generate
    assert (g.width, g.height, g.steps, g.guidance, g.seed, g.scheduler) == (816, 768, 20, 7.0, 1234, "euler_a")
    assert (g.controlnet_scale, g.canny_low, g.canny_high, g.hires_denoise, g.snap) == (1.5, 100, 200, 0.0,
                                                                                        "netdiffusion")


def test_config_settings_and_validation() -> None:
    backend = get_backend("sd15")
    cfg = backend.config("base", steps=7, seed=3, settings=["lora.rank=64", "train.width=512", "weights.base=s3://b/sd"],
                         weights={"controlnet": "/w/cn"})
    assert (cfg.lora.rank, cfg.train.width, cfg.train.steps, cfg.train.seed) == (64, 512, 7, 3)
    assert (cfg.weights.base, cfg.weights.controlnet) == ("s3://b/sd", "/w/cn")
    assert sd15_config.Sd15Config.from_dict(cfg.to_dict()) == cfg
    for bad, words in [("lora.rank=0", "lora.rank"), ("train.width=500", "multiple of 8"),
                       ("nope.x=1", "SECTION.KEY"), ("generate.snap=fuzzy", "generate.snap"),
                       ("train.optimizer=sgd", "train.optimizer"), ("train.clip_skip=x", "not a int")]:
        with pytest.raises(ConfigError, match=words):
            backend.config("base", settings=[bad])
    with pytest.raises(ConfigError, match="unknown sd15 preset"):
        backend.config("huge")
    with pytest.raises(ConfigError, match="not unet"):
        backend.config("base", weights={"unet": "/x"})
    with pytest.raises(ConfigError, match="takes no pretrained weights"):
        get_backend("native").config("tiny", weights={"base": "/x"})


def test_captions_name_every_class(data: TrainingData) -> None:
    class_map = ClassMap.from_labels(data.labels)
    exs = examples(data, class_map, 64, 48)
    assert {e.caption for e in exs} == {f"pixelated network data, type-{i}" for i in range(len(CLASSES))}
    for e, t in zip(exs, data.traces, strict=True):
        assert e.caption == class_map.caption(str(t.label)) and e.image.size == (64, 48) and e.image.mode == "RGB"


def test_model_folder(model_dir: Path) -> None:
    import json

    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["backend"] == "sd15" and card["training"]["steps"] == 4
    assert sorted(card["class_map"].values()) == ["type-0", "type-1", "type-2"]
    assert (model_dir / "class_map.json").is_file() and (model_dir / "payloads.json").is_file()
    assert (model_dir / DIFFUSERS_FILE).is_file() and (model_dir / KOHYA_FILE).is_file()
    assert all(len(v) == 2 for v in card["controls"].values())
    assert (model_dir / "checkpoints" / "latest").read_text() == "ckpt-00000004"


def _pipe(weights: tuple[Path, Path]):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(weights[0]), local_files_only=True)


def _image(pipe) -> np.ndarray:
    return pipe("pixelated network data, type-1", height=64, width=64, num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def test_lora_loads_in_diffusers_and_changes_the_output(tiny_weights: tuple[Path, Path], model_dir: Path) -> None:
    pipe = _pipe(tiny_weights)
    pipe.set_progress_bar_config(disable=True)
    before = _image(pipe)
    pipe.load_lora_weights(str(model_dir), weight_name=DIFFUSERS_FILE, adapter_name="netdiff")
    assert pipe.get_list_adapters() == {"unet": ["netdiff"], "text_encoder": ["netdiff"]}
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(model_dir / DIFFUSERS_FILE))
    for part in ("unet", "text_encoder"):  # every saved tensor was loaded, none silently skipped
        loaded = get_peft_model_state_dict(getattr(pipe, part), adapter_name="netdiff")
        mine = {k.removeprefix(f"{part}."): v for k, v in saved.items() if k.startswith(f"{part}.")}
        assert loaded.keys() == mine.keys() and all(torch.equal(loaded[k], mine[k]) for k in mine)
    after = _image(pipe)
    assert np.abs(after - before).max() > 1e-3
    pipe.set_adapters(["netdiff"], adapter_weights=[0.0])
    np.testing.assert_allclose(_image(pipe), before, atol=1e-6)


def test_kohya_export_keys_and_shapes(model_dir: Path) -> None:
    from peft.utils import get_peft_model_state_dict  # noqa: F401  (peft is what wrote the tensors)

    with safe_open(str(model_dir / KOHYA_FILE), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        tensors = {k: f.get_tensor(k) for k in keys}
    assert meta["ss_network_dim"] == "4" and meta["ss_network_module"] == "networks.lora"
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_unet_up_blocks_1_attentions_0_proj_in" in modules
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in modules
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2" in modules
    assert all(m.startswith(("lora_unet_", "lora_te_")) for m in modules)
    for m in modules:
        down, up, alpha = tensors[f"{m}.lora_down.weight"], tensors[f"{m}.lora_up.weight"], tensors[f"{m}.alpha"]
        assert down.shape[0] == 4 and up.shape[1] == 4 and down.dtype == torch.float16
        assert alpha.ndim == 0 and float(alpha) == 4.0
    assert len(keys) == 3 * len(modules)
    # ff.net.0.proj of a transformer block, in kohya's spelling
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj" in modules


def test_kohya_export_loads_in_diffusers_like_the_diffusers_file(tiny_weights: tuple[Path, Path],
                                                                 model_dir: Path) -> None:
    """diffusers reads kohya files too: the UNet of the export gives the same image as the diffusers file's."""
    from safetensors.torch import load_file, save_file

    unet_only = {k: v for k, v in load_file(str(model_dir / KOHYA_FILE)).items() if k.startswith("lora_unet_")}
    tmp = model_dir.parent / "kohya-unet"
    tmp.mkdir(exist_ok=True)
    save_file(unet_only, str(tmp / "k.safetensors"))
    a, b = _pipe(tiny_weights), _pipe(tiny_weights)
    for p in (a, b):
        p.set_progress_bar_config(disable=True)
    a.load_lora_weights(str(tmp), weight_name="k.safetensors")
    full = load_file(str(model_dir / DIFFUSERS_FILE))
    save_file({k: v for k, v in full.items() if k.startswith("unet.")}, str(tmp / "d.safetensors"))
    b.load_lora_weights(str(tmp), weight_name="d.safetensors")
    np.testing.assert_allclose(_image(a), _image(b), atol=2e-3)  # kohya file is fp16


def test_resume_is_exact(tiny_weights: tuple[Path, Path], data: TrainingData, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    backend = get_backend("sd15")
    whole, part = tmp_path / "whole", tmp_path / "part"
    backend.train(data, str(whole), _cfg(tiny_weights, steps=4), progress=False)
    backend.train(data, str(part), _cfg(tiny_weights, steps=2), progress=False)
    backend.train(data, str(part), _cfg(tiny_weights, steps=4), resume=True, progress=False)
    import json

    assert json.loads((whole / "loss.json").read_text()) == json.loads((part / "loss.json").read_text())
    a, b = load_file(str(whole / DIFFUSERS_FILE)), load_file(str(part / DIFFUSERS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="another sd15 config"):
        backend.train(data, str(part), _cfg(tiny_weights, "lora.rank=8", steps=6), resume=True, progress=False)


def test_trains_on_a_trace_source_as_on_the_traces(tiny_weights: tuple[Path, Path], data: TrainingData,
                                                  tmp_path: Path) -> None:
    """``TrainingData(dataset=...)`` (a trace source, nothing read up front): sd15 reads it whole, same model."""
    from safetensors.torch import load_file

    from netdiff_lib.tracesource import ListSource

    lazy = TrainingData(dataset=ListSource(data.traces), source=data.source, max_packets=data.max_packets)
    backend = get_backend("sd15")
    backend.train(data, str(tmp_path / "a"), _cfg(tiny_weights, steps=2), progress=False)
    backend.train(lazy, str(tmp_path / "b"), _cfg(tiny_weights, steps=2), progress=False)
    a, b = load_file(str(tmp_path / "a" / DIFFUSERS_FILE)), load_file(str(tmp_path / "b" / DIFFUSERS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_canny_conditioning_comes_from_a_real_image_of_the_class(model_dir: Path, data: TrainingData) -> None:
    import cv2

    gen = get_backend("sd15").load(str(model_dir))
    for label in CLASSES:
        first = next(t for t in data.traces if t.label == label)
        ref = gen.controls[label][0]
        assert np.array_equal(np.asarray(ref), np.asarray(trace_image(first).convert("RGB")))
        edges = np.asarray(canny(ref, 100, 200, (64, 64)))
        assert edges.shape == (64, 64, 3) and set(np.unique(edges)) <= {0, 255} and edges.any()
        small = np.asarray(ref.resize((64, 64), Image.Resampling.LANCZOS))
        assert np.array_equal(edges[..., 0], cv2.Canny(small, 100, 200))
    assert not np.array_equal(np.asarray(gen.controls["dns"][0]), np.asarray(gen.controls["icmp"][0]))


def test_generate_writes_valid_pcaps(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pcaps"
    rc = main(["generate", "--model", str(model_dir), "--per-class", "2", "-o", str(out), "-q",
               "--timing", "empirical", "--device", "cpu"])
    assert rc == 0
    pcaps = sorted(out.rglob("*.pcap"))
    names = {p.relative_to(out).as_posix() for p in pcaps}
    assert pcaps and names <= {f"{lab}/{lab}_{i}.pcap" for lab in CLASSES for i in range(2)}
    # a tiny random model paints some images all padding: those traces are named, never written as empty pcaps
    said = capsys.readouterr().out
    empty = len(CLASSES) * 2 - len(pcaps)
    assert (f"{empty} of {len(CLASSES) * 2} generated traces held no packet" in said) == (empty > 0), said
    reports = validate_pcaps(pcaps)
    assert all(r.ok for r in reports), [r.summary() for r in reports if not r.ok]


def test_generation_is_seeded_and_uses_the_model_settings(model_dir: Path) -> None:
    gen = get_backend("sd15").load(str(model_dir))
    a = gen.generate({"http": 2}, Sampling(progress=False, seed=1))
    b = gen.generate({"http": 2}, Sampling(progress=False, seed=1))
    c = gen.generate({"http": 2}, Sampling(progress=False, seed=2))
    assert [t.label for t in a] == ["http", "http"]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.matrix, y.matrix) and np.array_equal(x.iat_us, y.iat_us)
    assert not all(np.array_equal(x.matrix, y.matrix) for x, y in zip(a, c, strict=True))
    assert all(1 <= len(t.matrix) <= 32 and t.matrix.shape[1] == 1088 and t.iat_us[0] == 0 for t in a)


@pytest.mark.slow
def test_real_hires_pass(model_dir: Path) -> None:
    """``generate.hires_denoise`` > 0: img2img at 1088x1024 (about a minute on one CPU thread, even tiny)."""
    gen = get_backend("sd15").load(str(model_dir))
    plain = gen.generate({"dns": 1}, Sampling(progress=False))
    gen.cfg = replace(gen.cfg, generate=replace(gen.cfg.generate, hires_denoise=0.5, batch_size=1))
    hires = gen.generate({"dns": 1}, Sampling(progress=False, steps=2))
    assert len(hires) == 1 and not np.array_equal(plain[0].matrix, hires[0].matrix)


def test_weights_errors_name_the_path(tiny_weights: tuple[Path, Path], tmp_path: Path) -> None:
    sd, cn = tiny_weights
    with pytest.raises(ConfigError, match="--weights"):
        resolve("", "base")
    with pytest.raises(InputError, match="no such file or folder") as e:
        resolve(str(tmp_path / "nowhere"), "base")
    assert str(tmp_path / "nowhere") in str(e.value)
    with pytest.raises(InputError, match=r"model_index\.json") as e:
        resolve(str(cn), "base")
    assert str(cn) in str(e.value)
    broken = tmp_path / "broken"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(InputError, match="unet") as e:
        resolve(str(broken), "base")
    assert str(broken / "unet") in str(e.value)
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(InputError, match="not a checkpoint file"):
        resolve(str(tmp_path / "w.txt"), "base")
    with pytest.raises(InputError, match=r"config\.json"):
        resolve(str(sd), "controlnet")
    (tmp_path / "v1-5.safetensors").write_bytes(b"")
    cfg = replace(sd15_config.tiny().weights, base=str(tmp_path / "v1-5.safetensors"))
    from netdiff_lib.models.sd15.weights import load_pipeline

    with pytest.raises(ConfigError, match=r"weights\.config=DIR"):
        load_pipeline(cfg, torch.float32)


def test_hugging_face_cache_folder(tiny_weights: tuple[Path, Path], tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--org--sd-tiny"
    shutil.copytree(tiny_weights[0], repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert resolve(str(repo), "base") == repo / "snapshots" / "abc123"


def test_s3_weights_download_once_and_wrong_credentials_name_the_uri(tiny_weights: tuple[Path, Path], s3_env,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from netdiff_lib import storage

    bucket = s3_env.make_bucket()
    storage.put_dir(tiny_weights[1], f"s3://{bucket}/controlnet")
    cache = str(tmp_path / "cache")
    got = resolve(f"s3://{bucket}/controlnet", "controlnet", cache)
    assert got.parent == Path(cache) and (got / "config.json").is_file()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert resolve(f"s3://{bucket}/controlnet", "controlnet", cache) == got  # from the cache: no request
    with pytest.raises(InputError, match="rejected the credentials") as e:
        resolve(f"s3://{bucket}/sd", "base", cache)
    assert f"s3://{bucket}/sd" in str(e.value)


@pytest.mark.slow
def test_pipeline_with_sd15_on_tiny_weights(tiny_weights: tuple[Path, Path], data_dir: Path, tmp_path: Path) -> None:
    """The KFP pipeline through kfp.local with ``backend=sd15``, the weights as pipeline parameters."""
    pytest.importorskip("kfp")
    import json

    out = tmp_path / "out"
    rc = main(["run", "--input", str(data_dir), "--out", str(out), "--config", "tiny", "--backend", "sd15",
               "--weights", str(tiny_weights[0]), "--controlnet", str(tiny_weights[1]), "--traces-per-class", "1",
               "--shards", "1"])
    assert rc == 0
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["backend"] == "sd15" and card["weights"]["base"] == str(tiny_weights[0])
    pcaps = sorted((out / "pcaps").glob("*/*.pcap"))
    summary = json.loads((out / "summary.json").read_text())
    assert len(pcaps) + summary["repair"]["empty_traces"] == len(CLASSES)  # empty traces are counted, not written
    assert all(r.ok for r in validate_pcaps(pcaps))
