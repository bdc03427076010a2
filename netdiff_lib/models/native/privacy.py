"""Privacy held by construction: the native trainer's privacy gate (config section ``privacy``, ``--privacy``).

With ``privacy.mode=on`` the trainer (:mod:`~netdiff_lib.models.native.train`) keeps back part of the user's
captures (:func:`split_holdout`) and trains on the rest.  Every ``privacy.every`` steps, and at the last step, the
gate (:class:`PrivacyGate`, a :class:`~netdiff_lib.models.native.train.StepHook`) samples
``privacy.samples_per_class`` traces per class from the EMA weights and measures, with the report's own
definitions (:mod:`netdiff_lib.evaluate.privacy`, first ``K_PACKETS`` packets, address fields left out):

* the DCR ratio: median distance of the samples to their closest training trace over the median distance of
  the held-out traces to theirs (pooled over classes, the report's headline); >= ``privacy.dcr_min`` holds;
* the membership-inference AUC of the distance-to-synthetic attack, training traces against held-out ones;
  <= ``privacy.mia_max`` holds;
* the held-out loss: the training loss (the representation's, with fixed noise draws) on the held-out traces.
  It chooses among the evaluations that hold the gate: it is deterministic, costs one forward pass per
  held-out batch, and measures what the gate cannot see, how well the model fits traffic it never saw (a
  sampled fidelity score such as field JSD of 8-32 traces per class is noisy at this size).

:func:`choose` picks the evaluation with the lowest held-out loss among those that hold the gate, never one
that fails it; the model folder gets that evaluation's EMA weights and the card every evaluation and the
choice.  When none holds, no model is written (:func:`failure`: a TrainingError naming the best numbers seen).

The holdout is by capture file, stratified by class and seeded: each class keeps ``round(holdout x its
captures)`` of them back (at least one, never all: a class of one capture keeps it for training).  When a class's
traces all come from one capture (``--traces`` cut one long capture into flows or windows), its traces are the
unit instead.  Fewer than ``privacy.min_holdout`` held-out traces in all are too few to measure the gate: the
run refuses before training, naming ``--privacy off``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from netdiff_lib.config import Config, PrivacyConfig
from netdiff_lib.errors import ConfigError, TrainingError
from netdiff_lib.models.base import TrainingData
from netdiff_lib.models.card import figure
from netdiff_lib.trace import Trace
from netdiff_lib.tracesource import ListSource, SubsetSource, TraceSource

if TYPE_CHECKING:
    from netdiff_lib.models.native.data import Prepared
    from netdiff_lib.models.native.model import NativeModel

GATE_PNG = "privacy.png"
#: noise draws per held-out batch in the held-out loss
LOSS_DRAWS = 4
#: the evaluation keys: measured numbers, and whether the gate held (1.0) or not (0.0)
KEYS = ("dcr_ratio", "mia_auc", "heldout_loss", "gate")


@dataclass
class Holdout:
    """The split of a trace source: the indices of the training traces and of the held-out ones, the unit of the
    split per class and the counts per class; :attr:`train` and :attr:`held` read the traces."""

    source: TraceSource
    train_idx: np.ndarray
    held_idx: np.ndarray
    units: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def train(self) -> list[Trace]:
        return self.source.read(self.train_idx)

    @property
    def held(self) -> list[Trace]:
        return self.source.read(self.held_idx)

    def describe(self) -> dict[str, Any]:
        """What the model card says about the split."""
        return {"traces": len(self.held_idx), "per_class": self.counts, "unit": self.units}

    def training_data(self, data: TrainingData) -> TrainingData:
        """``data`` less the held-out traces (same fingerprint: a resume checks the user's data, and the split is a
        function of it and the config); nothing is read."""
        return TrainingData(dataset=SubsetSource(self.source, self.train_idx), source=data.source,
                            max_packets=data.max_packets, captures=data.captures, fingerprint=data.fingerprint,
                            payloads=data.payloads)


def split_holdout(traces: TraceSource | Sequence[Trace], cfg: PrivacyConfig, seed: int) -> Holdout:
    """Keep back ``cfg.holdout`` of each class's captures (or traces, for a class cut from one capture), seeded,
    from the source's metadata (labels, sources: no trace is read); ConfigError when fewer than
    ``cfg.min_holdout`` traces are held out in all."""
    source = traces if isinstance(traces, TraceSource) else ListSource(traces)
    all_labels, all_sources = [str(x) for x in source.labels], [str(x) for x in source.sources]
    train_idx: list[int] = []
    held_idx: list[int] = []  # class by class (sorted labels), as the traces of each side are taken
    units_of, counts = {}, {}
    for k, lab in enumerate(sorted(set(all_labels))):
        idx = [i for i, x in enumerate(all_labels) if x == lab]
        sources = sorted({all_sources[i] for i in idx})
        by_capture = len(sources) > 1
        units = sources if by_capture else [str(i) for i in idx]
        key = [all_sources[i] if by_capture else str(i) for i in idx]
        n_hold = 0 if len(units) < 2 else min(len(units) - 1, max(1, round(cfg.holdout * len(units))))
        rng = np.random.default_rng([seed, k])
        held = {units[j] for j in rng.permutation(len(units))[:n_hold]}
        for i, u in zip(idx, key, strict=True):
            (held_idx if u in held else train_idx).append(i)
        units_of[lab] = "capture" if by_capture else "trace"
        counts[lab] = {"train": sum(u not in held for u in key), "held_out": sum(u in held for u in key)}
    out = Holdout(source, np.array(train_idx, np.int64), np.array(held_idx, np.int64), units_of, counts)
    if len(out.held_idx) < cfg.min_holdout:
        raise ConfigError(
            f"privacy gate: only {len(out.held_idx)} trace(s) held out ({cfg.holdout:.0%} of each class's captures; a "
            f"class of one capture keeps it), fewer than privacy.min_holdout={cfg.min_holdout}: too few to measure "
            "the DCR ratio and membership AUC. Add captures, raise --set privacy.holdout=..., or train with "
            "--privacy off (no gate: the model card and report say so)")
    return out


def holdout_of(cfg: Config, data: TrainingData, hook: Any) -> Holdout | None:
    """The gate's split of ``data`` (None with ``privacy.mode=off``); the gate is the run's only hook."""
    if cfg.privacy.mode == "off":
        return None
    if hook is not None:
        raise ConfigError("train(hook=...) with privacy.mode=on: the privacy gate is the run's hook")
    return split_holdout(data.source_of(), cfg.privacy, cfg.train.seed)


def gate_entries(cfg: Config, evaluations: list[dict[str, float]], holdout: Holdout, kept: bool, final: bool,
                 ckpt_root: str) -> dict[str, Any] | None:
    """The card entries of the gate's choice (``kept``: its weights are at hand); None (no model folder) at the
    end of a slice (``until_step``, not ``final``) without a gate-holding evaluation; TrainingError at the end of
    the run without one."""
    chosen = choose(evaluations, cfg.privacy)
    if chosen is not None and kept:
        return card(evaluations, chosen, cfg.privacy, holdout.describe())
    if final:
        raise TrainingError(f"{failure(evaluations, cfg.privacy)} (checkpoints in {ckpt_root})")
    print("no evaluation has held the privacy gate yet: no model folder written", file=sys.stderr)
    return None


def holds(ev: dict[str, float], cfg: PrivacyConfig) -> bool:
    """Whether one evaluation holds the gate (a missing or not finite number does not)."""
    dcr, auc = ev.get("dcr_ratio", math.nan), ev.get("mia_auc", math.nan)
    return math.isfinite(dcr) and math.isfinite(auc) and dcr >= cfg.dcr_min and auc <= cfg.mia_max


def choose(evaluations: list[dict[str, float]], cfg: PrivacyConfig) -> int | None:
    """Index of the evaluation with the lowest held-out loss among those that hold the gate (ties: the earlier);
    None when none holds."""
    ok = [i for i, ev in enumerate(evaluations) if holds(ev, cfg)]
    if not ok:
        return None
    return min(ok, key=lambda i: (evaluations[i].get("heldout_loss", math.inf), i))


def failure(evaluations: list[dict[str, float]], cfg: PrivacyConfig) -> str:
    """Why no model is written: the best DCR ratio and AUC seen, and what to try."""
    def best(key: str, pick: Any) -> str:
        vals = [ev[key] for ev in evaluations if math.isfinite(ev.get(key, math.nan))]
        return f"{pick(vals):.3f}" if vals else "-"

    return (f"privacy gate never held in {len(evaluations)} evaluation(s) (needs DCR ratio >= {cfg.dcr_min} and "
            f"membership AUC <= {cfg.mia_max}; best seen: DCR ratio {best('dcr_ratio', max)}, AUC "
            f"{best('mia_auc', min)}): no model written. Train fewer steps (--steps), on more captures, or with "
            "--privacy off (no gate; the model card and report say so)")


def card(evaluations: list[dict[str, float]], chosen: int, cfg: PrivacyConfig, holdout: dict[str, Any]
         ) -> dict[str, Any]:
    """The model card's ``training`` entries of a gated run: scalars (for the run summary) and the history."""
    ev = evaluations[chosen]
    return {"privacy": "on", "privacy_step": int(ev["step"]), "privacy_dcr_ratio": ev["dcr_ratio"],
            "privacy_mia_auc": ev["mia_auc"], "privacy_heldout_traces": holdout.get("traces", 0),
            "privacy_gate": {"dcr_min": cfg.dcr_min, "mia_max": cfg.mia_max, "every": cfg.every,
                             "samples_per_class": cfg.samples_per_class, "chosen_step": int(ev["step"]),
                             "rule": "lowest held-out loss among the evaluations that hold the gate",
                             "holdout": holdout, "evaluations": evaluations}}


class PrivacyGate:
    """The step hook: samples from the EMA model and measures the gate against the held-out traces."""

    def __init__(self, cfg: Config, prep: Prepared, holdout: Holdout, device: torch.device) -> None:
        from netdiff_lib.evaluate import K_PACKETS
        from netdiff_lib.evaluate.privacy import dcr
        from netdiff_lib.models.native.data import PackedTraces, sample_traces

        self.cfg, self.every, self.k = cfg, cfg.privacy.every, K_PACKETS
        layout = prep.representation.layout
        held = sample_traces(cfg, SubsetSource(holdout.source, holdout.held_idx))  # both bounded per class
        self.members = [_in_layout(t, layout) for t in sample_traces(cfg, prep.dataset or holdout.source)]
        self.held = [_in_layout(t, layout) for t in held]
        self.fresh = dcr(self.members, self.held, self.k)  # the held-out traces' DCRs: the same at every step
        self.val = PackedTraces.build(held, prep.representation, prep.labels).to(device)

    def __call__(self, step: int, model: NativeModel) -> dict[str, float]:
        from netdiff_lib.evaluate.privacy import dcr, membership_auc, privacy_summary
        from netdiff_lib.models.native.sampler import generate_traces

        samples = generate_traces(model, self.cfg.privacy.samples_per_class, seed=self.cfg.train.seed,
                                  progress=False, decode_workers=0)  # inside training: no decoding processes
        syn = [Trace(g.matrix, model.layout, label=g.label) for g in samples]
        d = dcr(self.members, syn, self.k)
        summary = privacy_summary(d, [t.label for t in syn], self.fresh, [t.label for t in self.held])
        ratio = summary["all"]["median_ratio"]
        auc = membership_auc(syn, self.members, self.held, self.k)["auc"]
        out = {"dcr_ratio": math.nan if ratio is None else float(ratio), "mia_auc": float(auc),
               "heldout_loss": self.heldout_loss(model)}
        return {**out, "gate": float(holds(out, self.cfg.privacy))}

    def heldout_loss(self, model: NativeModel) -> float:
        """The representation's training loss on the held-out traces, with fixed noise draws (deterministic)."""
        from netdiff_lib.models.native.data import BucketPlan, step_generator

        cfg, val = self.cfg, self.val
        plan = BucketPlan(val.lengths, cfg.train.buckets, cfg.train.batch_tokens, cfg.train.seed)
        total, count = 0.0, 0
        for draw in range(LOSS_DRAWS):
            for b, (bucket, idx) in enumerate(plan.epoch(0)):
                gen = step_generator(cfg.train.seed, 2**32 + draw, b, val.features.device)  # no training step's
                x0, labels, lengths, padded = val.batch(idx, bucket)
                loss, _ = model.representation.loss(model.net, model.net, cfg, x0, labels, lengths, gen, padded)
                total, count = total + float(loss) * len(idx), count + len(idx)
        return total / max(count, 1)


def _in_layout(trace: Trace, layout: Any) -> Trace:
    return trace if trace.layout == layout else trace.with_layout(layout)


def write_gate_plot(out: Path, evaluations: list[dict[str, float]], chosen_step: int, cfg: PrivacyConfig) -> None:
    """``privacy.png``: DCR ratio and membership AUC per evaluation, the thresholds and the chosen step (when
    matplotlib is installed)."""
    steps = [ev["step"] for ev in evaluations]
    with figure(out / GATE_PNG) as plot:
        if plot is None:
            return
        _, ax = plot
        ax.plot(steps, [ev["dcr_ratio"] for ev in evaluations], "o-", label=f"DCR ratio (>= {cfg.dcr_min:g} holds)")
        ax.plot(steps, [ev["mia_auc"] for ev in evaluations], "s-", label=f"MIA AUC (<= {cfg.mia_max:g} holds)")
        ax.axhline(cfg.dcr_min, color="C0", ls=":", lw=1)
        ax.axhline(cfg.mia_max, color="C1", ls=":", lw=1)
        ax.axvline(chosen_step, color="k", ls="--", lw=1, label="chosen")
        ax.set_xlabel("step")
        ax.set_title("privacy gate on held-out captures")
        ax.legend(fontsize=8)
