"""Native generator configuration: presets, validation, dict round trip, backend registry."""

from __future__ import annotations

import pytest

from netdiff_lib.config import PRESETS, Config, ModelConfig, TrainConfig, base, preset, small, tiny
from netdiff_lib.errors import ConfigError
from netdiff_lib.models import BACKENDS, backend_of, get_backend


def test_presets_derive_and_round_trip() -> None:
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.preset == name and cfg.backend == "native"
        assert Config.from_dict(cfg.to_dict()) == cfg
        assert cfg.train.buckets[-1] == cfg.model.max_packets
    assert base().model.max_packets == 1024 and base().diffusion.sample_steps <= 25
    assert tiny().train.lr == 2e-3 and small().train.lr == base().train.lr  # small keeps base's optimiser
    assert tiny().model.n_heads == 2 and base().model.n_heads == 6


def test_overrides_and_unknown_settings() -> None:
    cfg = tiny().with_overrides(steps=7, seed=None, time_budget_s=30.0)
    assert cfg.train.steps == 7 and cfg.train.seed == tiny().train.seed and cfg.train.time_budget_s == 30.0
    with pytest.raises(ConfigError, match="unknown train settings"):
        tiny().with_overrides(stepz=3)
    with pytest.raises(ConfigError, match="unknown config preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="bad config"):
        Config.from_dict({"model": {"width": 3}})


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    (ModelConfig, {"d_model": 100}, "multiple of head_dim"),
    (ModelConfig, {"max_packets": 2048}, "max_packets"),
    (TrainConfig, {"buckets": (64, 32)}, "increasing"),
    (TrainConfig, {"batch_tokens": 100}, "must hold one trace"),
    (TrainConfig, {"mixed_precision": "fp8"}, "mixed_precision"),
    (TrainConfig, {"time_budget_s": 0}, "time_budget_s"),
    (TrainConfig, {"ema_decay": 1.0}, "ema_decay"),
])
def test_validation(kind: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        kind(**kwargs)


def test_buckets_must_end_at_max_packets() -> None:
    with pytest.raises(ConfigError, match="longest length bucket"):
        Config(model=ModelConfig(max_packets=512))


def test_backend_registry(tmp_path) -> None:
    assert "native" in BACKENDS and get_backend().name == "native"
    with pytest.raises(ConfigError, match="unknown backend"):
        get_backend("sd99")
    (tmp_path / "model_card.json").write_text('{"backend": "sd15"}')
    assert backend_of(tmp_path) == "sd15"
    (tmp_path / "model_card.json").write_text("{}")
    from netdiff_lib.errors import InputError

    with pytest.raises(InputError, match="no backend recorded"):
        backend_of(tmp_path)
