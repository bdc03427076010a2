"""Configuration of the native generator: dataclasses that validate themselves, and presets as functions.

One direction, one source of defaults: the dataclasses below hold every default; presets (:func:`tiny`,
:func:`small`, :func:`base`) derive from each other with :func:`dataclasses.replace`; the command line
exposes only the few knobs a run varies (steps, time budget, seed) and writes them back into the config;
the resolved config is saved beside the weights (``config.json``) and in every checkpoint's ``meta.json``.

Derived rather than set: the number of heads follows from ``d_model / head_dim`` and the MLP width from
``mlp_ratio``; the token budget of a batch (``batch_tokens``) sets how many traces of a length bucket go into
one step (``batch_tokens // bucket``), so short traces pad only to their bucket instead of to ``max_packets``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from netdiff_lib.errors import ConfigError
from netdiff_lib.schema import MAX_PACKETS

PRESETS = ("tiny", "small", "base")
CONV_DECODE = ("index", "regroup", "merge", "calibrate")
TCP_STATE = ("off", "enforce", "handshake")
#: ``model.iat_decode``: inter-arrival times as sampled, or moved to their packet role (models/native/iat_roles.py)
IAT_DECODE = ("sampled", "role")
#: ``diffusion.reveal``: the order the token sampler reveals the fields in (discrete.py)
REVEAL_ORDERS = ("random", "structure_first")
#: Keys older model folders and checkpoints may hold that only the first design (continuous features) read.
REMOVED_KEYS = {"diffusion": ("num_train_timesteps", "beta_schedule")}
#: ``netdiff generate --set``: the keys a trained model's generation may change (sampling and decoding rules); every
#: other key shapes the network or the fitted vocabularies, or only concerns training.
GENERATION_KEYS = {
    "model": ("tcp_state", "conv_decode", "iat_decode"),
    "diffusion": ("sample_steps", "guidance", "temperature", "kind_steps", "conv_order", "reveal", "structure_steps"),
    "generate": ("compile", "compile_backend", "decode_workers"),
}


@dataclass(frozen=True)
class ModelConfig:
    """The packet-sequence transformer (see :mod:`netdiff_lib.models.native`)."""

    d_model: int = 384
    n_layers: int = 8
    head_dim: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_packets: int = MAX_PACKETS
    #: how traces are shown to the network: a name in :data:`netdiff_lib.models.native.representation.REPRESENTATIONS`
    representation: str = "tokens"
    #: tokens: exact-value tokens per field at most; escape bins for the rest; per-trace port slots; a port
    #: seen in fewer training traces than ``port_min_traces`` is a slot, not a value (0 slots: an escape bin).
    vocab_max_values: int = 1024
    escape_bins: int = 16
    port_slots: int = 32
    port_min_traces: int = 3
    #: tokens: the inter-arrival time as Gaussian diffusion of one number per packet (``gaussian``), or also as
    #: a token of fine log-scale bins that decoding reads (``tokens``).
    iat: str = "gaussian"
    #: tokens: a packet's ports as two port fields (``ports``) or as its conversation and direction plus the
    #: conversation's server and client port (``conv``, at most ``conversations`` per trace; tokens.py).
    endpoints: str = "conv"
    conversations: int = 32
    #: tokens: TCP connections opened as the class's real ones (``enforce``: handshake at the class's rate, no
    #: SYN mid-connection; ``handshake``: also a full 3-way handshake opening each opened connection of three
    #: packets or more) or as sampled (``off``); endpoints.py, flow_rules.py.
    tcp_state: str = "handshake"
    #: tokens, conv: how decoding reads conversations from the ``conv`` tokens: ``index`` (an index from one
    #: opening to the next), ``regroup`` (also one transport per conversation: a packet of another kind joins
    #: the nearest conversation of its kind and ports) or ``merge`` (regroup, and a one-packet conversation joins
    #: such a conversation too) or ``calibrate`` (regroup, and one-packet conversations at the class's real share,
    #: the others joining as in merge); endpoints.py, flow_rules.py, BENCHMARKS.md.
    conv_decode: str = "regroup"
    #: tokens: inter-arrival times as sampled (``sampled``) or each one's rank in the class's times mapped to the
    #: class's real times of the packet's role: opening a flow (on an idle trace or inside another flow), later
    #: request, reply, no ports (``role``: the long gaps go where conversations open; fitted per class;
    #: models/native/iat_roles.py; BENCHMARKS.md: a small gain on CPU, so not the default).
    iat_decode: str = "sampled"

    def __post_init__(self) -> None:
        if self.iat not in ("gaussian", "tokens"):
            raise ConfigError(f"model.iat must be 'gaussian' or 'tokens', not {self.iat!r}")
        if self.endpoints not in ("ports", "conv") or self.tcp_state not in TCP_STATE:
            raise ConfigError(f"model.endpoints must be 'ports' or 'conv' (not {self.endpoints!r}), model.tcp_state "
                              f"one of {', '.join(TCP_STATE)} (not {self.tcp_state!r})")
        if self.conv_decode not in CONV_DECODE:
            raise ConfigError(f"model.conv_decode must be one of {', '.join(CONV_DECODE)}, not {self.conv_decode!r}")
        if self.iat_decode not in IAT_DECODE:
            raise ConfigError(f"model.iat_decode must be one of {', '.join(IAT_DECODE)}, not {self.iat_decode!r}")
        if self.conversations < 1:
            raise ConfigError("model.conversations must be >= 1")
        from netdiff_lib.models.native.representation import check_name

        check_name(self.representation)
        if self.vocab_max_values < 1 or self.escape_bins < 1 or self.port_slots < 0 or self.port_min_traces < 1:
            raise ConfigError("model.vocab_max_values, escape_bins and port_min_traces must be >= 1, port_slots >= 0")
        if self.d_model <= 0 or self.d_model % self.head_dim:
            raise ConfigError(f"model.d_model={self.d_model} must be a positive multiple of head_dim={self.head_dim}")
        if self.n_layers < 1:
            raise ConfigError("model.n_layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout must be in [0, 1)")
        if not 1 <= self.max_packets <= MAX_PACKETS:
            raise ConfigError(f"model.max_packets must be in 1..{MAX_PACKETS}")

    @property
    def n_heads(self) -> int:
        return self.d_model // self.head_dim


@dataclass(frozen=True)
class DiffusionConfig:
    """Loss weighting, class dropout (for guidance) and sampling defaults; the noise schedule itself is the
    representation's."""

    #: the inter-arrival loss is weighted by min(SNR, min_snr_gamma)
    min_snr_gamma: float = 5.0
    class_dropout: float = 0.1
    #: 16: on IoT Sentinel (base, 10k steps) 16 and 25 steps gave the same field JSD, classifier scores and DCR,
    #: and 1.5x the traces/s (BENCHMARKS.md).
    sample_steps: int = 16
    guidance: float = 1.0
    #: tokens: share of training samples in stage 1 (packet kinds), share of sampling steps spent there,
    #: sampling temperature, weight of the inter-arrival loss.
    kind_share: float = 0.3
    kind_steps: float = 0.25
    temperature: float = 1.0
    iat_weight: float = 1.0
    #: tokens, conv: weight of the ``conv`` field's cross-entropy in the loss (1: as every field)
    conv_weight: float = 1.0
    #: tokens, conv: which masked ``conv`` tokens a sampling step reveals: ``random`` ones (as every field) or the
    #: ``confident`` ones (the model's most probable first; as many)
    conv_order: str = "random"
    #: tokens: the order a sampling run reveals the fields in, after the packet kinds (stage 1): ``random`` (every
    #: field at the same pace) or ``structure_first`` (the first ``structure_steps`` share of the stage-2 steps
    #: reveals only the structure fields, ``conv``, ``server_port`` and ``client_port``, or ``sport`` and ``dport``
    #: with ``model.endpoints=ports``; the remaining steps every other field and the inter-arrival time,
    #: conditioned on them). Sampling only: the same weights serve both.
    reveal: str = "random"
    structure_steps: float = 0.5

    def __post_init__(self) -> None:
        if not (0.0 < self.kind_share < 1.0 and 0.0 < self.kind_steps < 1.0):
            raise ConfigError("diffusion.kind_share and diffusion.kind_steps must be in (0, 1)")
        if self.temperature <= 0 or self.iat_weight < 0 or self.conv_weight <= 0:
            raise ConfigError("diffusion.temperature and diffusion.conv_weight must be > 0, diffusion.iat_weight >= 0")
        if self.conv_order not in ("random", "confident"):
            raise ConfigError(f"diffusion.conv_order must be 'random' or 'confident', not {self.conv_order!r}")
        if self.reveal not in REVEAL_ORDERS:
            raise ConfigError(f"diffusion.reveal must be one of {', '.join(REVEAL_ORDERS)}, not {self.reveal!r}")
        if not 0.0 < self.structure_steps < 1.0:
            raise ConfigError(f"diffusion.structure_steps must be in (0, 1), not {self.structure_steps}")
        if self.min_snr_gamma <= 0:
            raise ConfigError("diffusion.min_snr_gamma must be > 0")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ConfigError("diffusion.class_dropout must be in [0, 1)")
        if self.sample_steps < 1:
            raise ConfigError("diffusion.sample_steps must be >= 1")
        if self.guidance < 0:
            raise ConfigError("diffusion.guidance must be >= 0 (1 = no guidance, 0 = unconditional)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, batching, checkpointing and the stopping rule."""

    steps: int = 20_000
    time_budget_s: float | None = None
    batch_tokens: int = 32_768
    buckets: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    lr: float = 3e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    mixed_precision: str = "auto"
    checkpoint_every: int = 2000
    keep_checkpoints: int = 2
    log_every: int = 50
    compile: bool = False
    #: torch threads when running on the CPU (0 = torch's default); tiny models run fastest on one thread,
    #: and on a shared 2-core box two threads can be 20-100x slower.
    cpu_threads: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError("train.steps must be >= 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError("train.time_budget_s must be > 0 when set")
        if not self.buckets or list(self.buckets) != sorted(set(self.buckets)) or self.buckets[0] < 1:
            raise ConfigError(f"train.buckets must be increasing positive lengths, got {self.buckets}")
        if self.batch_tokens < self.buckets[-1]:
            raise ConfigError(f"train.batch_tokens={self.batch_tokens} must hold one trace of {self.buckets[-1]}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ConfigError("train.lr and train.grad_clip must be > 0; warmup_steps, weight_decay >= 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError("train.lr_schedule must be 'cosine' or 'constant'")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("train.ema_decay must be in [0, 1)")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError("train.mixed_precision must be auto, no, bf16 or fp16")
        if self.cpu_threads < 0:
            raise ConfigError("train.cpu_threads must be >= 0")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise ConfigError("train.checkpoint_every, keep_checkpoints and log_every must be >= 1")


PRIVACY_MODES = ("on", "off")


@dataclass(frozen=True)
class PrivacyConfig:
    """The privacy gate (:mod:`netdiff_lib.models.native.privacy`): ``holdout`` of each class's captures kept
    out of training; every ``every`` steps (and at the last) ``samples_per_class`` traces per class are sampled
    from the EMA weights and the DCR ratio and membership-inference AUC measured against the held-out traces;
    the model folder gets the best evaluation (lowest held-out loss) among those with DCR ratio >= ``dcr_min``
    and AUC <= ``mia_max``.  Fewer than ``min_holdout`` held-out traces: the run refuses (too few to measure)."""

    mode: str = "on"
    holdout: float = 0.15
    every: int = 1000
    samples_per_class: int = 32
    dcr_min: float = 1.0
    mia_max: float = 0.6
    min_holdout: int = 20

    def __post_init__(self) -> None:
        if self.mode not in PRIVACY_MODES:
            raise ConfigError(f"privacy.mode must be 'on' or 'off', not {self.mode!r}")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError("privacy.holdout must be in (0, 1)")
        if self.every < 1 or self.samples_per_class < 1 or self.min_holdout < 1:
            raise ConfigError("privacy.every, privacy.samples_per_class and privacy.min_holdout must be >= 1")
        if self.dcr_min < 0 or not 0.0 <= self.mia_max <= 1.0:
            raise ConfigError("privacy.dcr_min must be >= 0 and privacy.mia_max in [0, 1]")


STREAM_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class DataConfig:
    """How training reads its traces (:mod:`netdiff_lib.models.native.data`).

    ``stream``: ``off`` packs every training row into one tensor on the device (fast; memory grows with the data),
    ``on`` reads and tokenises each batch's traces as training goes (``workers`` processes per training process,
    ``prefetch`` batches ahead each; memory stays flat; -1: the CPU cores of each training process's share less
    one, at most 16: one reader tokenises about 50,000 packets/s, ``base`` takes 32,768 a step), ``auto`` streams
    when the training traces hold more than ``stream_packets`` packets (after the cut to ``model.max_packets``).
    ``sample_per_class``: the representation, the trace statistics and the privacy gate's trace sets are drawn
    from at most this many traces per class (seeded); a class with no more is taken whole, so small data sets fit
    exactly as before.  Those samples are held in memory (about ``sample_per_class`` x classes x mean trace length
    x 1.1 kB, twice with the gate on)."""

    stream: str = "auto"
    stream_packets: int = 4_000_000
    sample_per_class: int = 256
    workers: int = -1
    prefetch: int = 4

    def __post_init__(self) -> None:
        if self.stream not in STREAM_CHOICES:
            raise ConfigError(f"data.stream must be one of {', '.join(STREAM_CHOICES)}, not {self.stream!r}")
        if self.stream_packets < 0 or self.sample_per_class < 1 or self.workers < -1 or self.prefetch < 1:
            raise ConfigError("data.stream_packets must be >= 0, data.workers >= -1 (auto), data.sample_per_class "
                              "and data.prefetch >= 1")


COMPILE_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class GenerateConfig:
    """How the sampler runs the network (not part of what a checkpoint must match: change it at any time)."""

    #: ``torch.compile`` the network for sampling: ``auto`` = on for CUDA when a request is large enough to pay
    #: the compilation back (:data:`netdiff_lib.models.native.compiled.AUTO_MIN_PACKETS`), off for the CPU
    #: (compiling there takes longer than it saves); a failed compilation falls back to eager sampling with a
    #: warning.
    compile: str = "auto"
    #: the ``torch.compile`` backend (``inductor``; ``aot_eager`` / ``eager`` check the path without code generation)
    compile_backend: str = "inductor"
    #: processes decoding sampled batches beside the sampling loop: -1 = auto (on CUDA, for requests of several
    #: batches; :mod:`netdiff_lib.models.native.host_decode`), 0 = one thread of the sampling process, N = N
    decode_workers: int = -1

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_CHOICES:
            raise ConfigError(f"generate.compile must be one of {', '.join(COMPILE_CHOICES)}, not {self.compile!r}")
        if self.decode_workers < -1:
            raise ConfigError(f"generate.decode_workers must be -1 (auto), 0 or more, not {self.decode_workers}")


@dataclass(frozen=True)
class Config:
    """Everything a native training run needs; ``backend`` records which backend the weights belong to."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "base"
    backend: str = "native"

    def __post_init__(self) -> None:
        if self.train.buckets[-1] != self.model.max_packets:
            raise ConfigError(
                f"the longest length bucket ({self.train.buckets[-1]}) must equal model.max_packets "
                f"({self.model.max_packets})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take the defaults."""
        try:
            train = dict(d.get("train", {}))
            if "buckets" in train:
                train["buckets"] = tuple(train["buckets"])
            model = dict(d.get("model", {}))
            model.setdefault("representation", "features")  # folders written before tokens existed
            if "endpoints" not in model:  # folders written before conversations existed: port slots, TCP as sampled
                model.setdefault("tcp_state", "off")
                model["endpoints"] = "ports"
            model.setdefault("conv_decode", "index")  # folders written before regrouping decode as they did
            diffusion = {k: v for k, v in d.get("diffusion", {}).items() if k not in REMOVED_KEYS["diffusion"]}
            return cls(
                model=ModelConfig(**model),
                diffusion=DiffusionConfig(**diffusion),
                train=TrainConfig(**train),
                privacy=PrivacyConfig(**d.get("privacy", {"mode": "off"})),  # no gate before it existed
                generate=GenerateConfig(**d.get("generate", {})),
                data=DataConfig(**d.get("data", {})),
                preset=d.get("preset", "custom"),
                backend=d.get("backend", "native"),
            )
        except TypeError as exc:
            raise ConfigError(f"bad config: {exc}") from None

    def with_overrides(self, **train_overrides: Any) -> Config:
        """A copy with some ``train`` fields replaced (``None`` values are ignored)."""
        known = {f.name for f in fields(TrainConfig)}
        bad = sorted(set(train_overrides) - known)
        if bad:
            raise ConfigError(f"unknown train settings {bad}")
        kept = {k: v for k, v in train_overrides.items() if v is not None}
        return replace(self, train=replace(self.train, **kept))


    def with_settings(self, assignments: list[str]) -> Config:
        """A copy with ``section.key=value`` assignments applied (``model.iat=tokens``,
        ``model.port_slots=0``, ``diffusion.guidance=2``); values are parsed as the field's type."""
        out = self
        for item in assignments:
            section, name, part, text = split_setting(out, item, SECTIONS)
            out = replace(out, **{section: replace(part, **{name: _parse(text, getattr(part, name), item)})})
        return out

    def with_generation_settings(self, assignments: Sequence[str]) -> Config:
        """:meth:`with_settings` for a trained model's generation: only the keys of :data:`GENERATION_KEYS`."""
        allowed = ", ".join(f"{s}.{k}" for s, keys in GENERATION_KEYS.items() for k in keys)
        for item in assignments:
            try:
                section, name, _, _ = split_setting(self, item, SECTIONS)
            except ConfigError as exc:
                raise ConfigError(f"{exc}; generation takes {allowed}") from None
            if name not in GENERATION_KEYS.get(section, ()):
                raise ConfigError(f"bad setting {item!r}: {section}.{name} is not a generation setting (it shapes "
                                  f"the network or the fitted vocabularies, or only training); generation takes "
                                  f"{allowed}")
        return self.with_settings(list(assignments))


SECTIONS = ("model", "diffusion", "train", "privacy", "generate", "data")


def _closest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def split_setting(cfg: Any, item: str, sections: Sequence[str]) -> tuple[str, str, Any, str]:
    """``(section, key, section object, value text)`` of a ``--set section.key=value`` assignment on ``cfg``.  An
    unknown section or key is an error that lists the sections, or the keys of the section, and the closest match."""
    key, sep, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"bad setting {item!r}: expected SECTION.KEY=VALUE with SECTION one of "
                          f"{', '.join(sections)}")
    if section not in sections:
        raise ConfigError(f"bad setting {item!r}: no section {section!r}{_closest(section, sections)}; expected "
                          f"SECTION.KEY=VALUE with SECTION one of {', '.join(sections)}")
    part = getattr(cfg, section)
    names = [f.name for f in fields(part)]
    if name not in names:
        elsewhere = [f"{s}.{name}" for s in sections if name in {f.name for f in fields(getattr(cfg, s))}]
        hint = f" (did you mean {elsewhere[0]!r}?)" if elsewhere else _closest(name, names)
        raise ConfigError(f"bad setting {item!r}: {section} has no key {name!r}{hint}; its keys are "
                          f"{', '.join(names)}")
    return section, name, part, text.strip()


def _parse(text: str, current: Any, item: str) -> Any:
    """``text`` as the type of the field's current value."""
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, tuple):
            return tuple(int(v) for v in text.split(","))
        if current is None:
            return None if text.lower() == "none" else float(text)
        return type(current)(text)
    except ValueError:
        raise ConfigError(f"bad value in {item!r}: not a {type(current).__name__}") from None


def base() -> Config:
    """One H100/H200: 25M parameters (d=384, 8 layers), traces up to 1,024 packets, bf16, dropout 0.1
    (a few hundred training traces are seen thousands of times: dropout keeps generated traces from copying),
    10,000 steps (5-7 minutes on an H200).  Measured on IoT Sentinel (BENCHMARKS.md): 9,200 steps reached field
    JSD 1.3x the real-vs-real floor with a DCR ratio of 1.17; 14,400 steps the same fidelity with a DCR ratio of
    0.89, i.e. samples closer to the training traces than fresh real traces are; hence the privacy gate, on
    (evaluated every 1,000 steps)."""
    cfg = Config(model=ModelConfig(dropout=0.1), preset="base")
    return replace(cfg, train=replace(cfg.train, steps=10_000))


def small() -> Config:
    """A quick GPU or a patient CPU: d=256, 6 layers, traces up to 512 packets."""
    cfg = base()
    return replace(
        cfg,
        model=replace(cfg.model, d_model=256, n_layers=6, max_packets=512),
        privacy=replace(cfg.privacy, every=500),
        train=replace(cfg.train, steps=5_000, batch_tokens=16_384, buckets=(32, 64, 128, 256, 512),
                      checkpoint_every=500),
        preset="small",
    )


def tiny() -> Config:
    """Tests and the README demo: trains in well under a minute on 2 CPU cores (first 64 packets per trace).  The
    privacy gate is off (``privacy.mode=on`` turns it on): the bundled 50 captures hold out too few traces to
    measure it, and a model of 200 CPU steps is a demonstration, not a release."""
    cfg = small()
    return replace(
        cfg,
        model=replace(cfg.model, d_model=64, n_layers=2, head_dim=32, max_packets=64, dropout=0.0),
        diffusion=replace(cfg.diffusion, sample_steps=10),
        train=replace(cfg.train, steps=200, batch_tokens=1024, buckets=(16, 32, 64), lr=2e-3, warmup_steps=10,
                      ema_decay=0.95, checkpoint_every=50, log_every=10, cpu_threads=1),
        privacy=replace(cfg.privacy, mode="off", every=50, samples_per_class=8),
        preset="tiny",
    )


def default_preset() -> str:
    """The preset ``netdiff train`` and ``netdiff run`` use without ``--config``: ``base`` where a GPU trains,
    ``tiny`` on a CPU (``base`` there would take about half a day)."""
    import torch

    return "base" if torch.cuda.is_available() else "tiny"


def cpu_warning(name: str) -> str | None:
    """A warning for training preset ``name`` on a machine without a GPU (``None`` for ``tiny`` or with a GPU)."""
    import torch

    if name == "tiny" or torch.cuda.is_available():
        return None
    return (f"WARNING: no GPU here: preset {name!r} is sized for a GPU and trains for hours on a CPU; "
            "--config tiny trains in minutes")


def preset(name: str) -> Config:
    """The named preset (``tiny``, ``small`` or ``base``)."""
    table = {"tiny": tiny, "small": small, "base": base}
    if name not in table:
        raise ConfigError(f"unknown config preset {name!r}; choose one of {', '.join(PRESETS)}")
    return table[name]()
