"""The model card and loss curve saved beside the weights: what was trained, on what, how, and how it went.

:func:`trace_stats` are the per-class statistics of the training traces every backend saves (trace lengths,
inter-arrival times and the empirical inter-arrival model).

``model_card.json`` is for programs (the ``backend`` key tells :func:`netdiff_lib.models.backend_of` which
backend loads the folder); ``README.md`` says the same for people; ``loss.json`` / ``loss.png`` hold the
training curve.  Nothing here is needed to generate, so a card can be rewritten at any time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from netdiff_lib import __version__
from netdiff_lib.atomic import atomic_path

if TYPE_CHECKING:
    from netdiff_lib.trace import Trace

CARD = "model_card.json"
README = "README.md"
LOSS_JSON = "loss.json"
LOSS_PNG = "loss.png"


def trace_stats(traces: list[Trace], labels: list[str]) -> dict[str, Any]:
    """Per class: the trace lengths (the generator draws from them), inter-arrival statistics (µs) and the
    empirical inter-arrival model of reconstruction (:class:`netdiff_lib.repair.IatModel`, as a dict)."""
    from netdiff_lib.repair import IatModel

    lengths: dict[str, list[int]] = {lab: [] for lab in labels}
    iats: dict[str, list[np.ndarray]] = {lab: [] for lab in labels}
    for t in traces:
        lengths[t.label].append(len(t))
        iats[t.label].append(t.iat_us()[1:])
    iat_stats = {}
    for lab in labels:
        v = np.concatenate(iats[lab]) if iats[lab] else np.zeros(0)
        q = np.quantile(v, [0.1, 0.5, 0.9, 0.99]).tolist() if len(v) else [0.0] * 4
        iat_stats[lab] = {"count": len(v), "mean_us": float(v.mean()) if len(v) else 0.0,
                          "p10_us": q[0], "median_us": q[1], "p90_us": q[2], "p99_us": q[3]}
    models = {lab: IatModel.fit([t.iat_us() for t in traces if t.label == lab], lab).to_dict() for lab in labels}
    return {"lengths": lengths, "iat_us": iat_stats, "iat_models": models,
            "traces": {lab: len(lengths[lab]) for lab in labels},
            "packets": {lab: int(sum(lengths[lab])) for lab in labels}}


def _length_summary(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"traces": 0}
    v = np.asarray(lengths)
    return {"traces": len(v), "mean": float(v.mean()), "median": float(np.median(v)), "max": int(v.max())}


def build_card(*, backend: str, config: dict[str, Any], data: dict[str, Any], class_map: dict[str, str],
               stats: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """The model card as a dict (config, data fingerprint, class map, inter-arrival statistics, training)."""
    return {
        "backend": backend,
        "netdiff_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": config,
        "data": data,
        "class_map": class_map,
        "trace_lengths": {lab: _length_summary(v) for lab, v in stats["lengths"].items()},
        "inter_arrival_us": stats["iat_us"],
        "training": training,
    }


def render_readme(card: dict[str, Any]) -> str:
    """A short human-readable card."""
    t, d = card["training"], card["data"]
    lines = [
        f"# netdiff model ({card['backend']} backend, preset `{card['config'].get('preset', '?')}`)", "",
        f"Created {card['created']} with netdiff {card['netdiff_version']}.", "",
        "## Data", "",
        f"- source: `{d.get('source', '?')}`", f"- fingerprint (sha256 of sorted captures): `{d['fingerprint']}`",
        f"- {d['captures']} captures, {d['packets']} packets (first {d['max_packets']} per capture)", "",
        "| class | id | traces | mean length | median inter-arrival (µs) |", "| --- | --- | --- | --- | --- |",
    ]
    for lab, cid in card["class_map"].items():
        ln, iat = card["trace_lengths"].get(lab, {}), card["inter_arrival_us"].get(lab, {})
        lines.append(f"| {lab} | {cid} | {ln.get('traces', 0)} | {ln.get('mean', 0):.1f} "
                     f"| {iat.get('median_us', 0):.1f} |")
    lines += ["", "## Training", ""]
    lines += [f"- {k}: {v}" for k, v in t.items() if k != "privacy_gate"]
    lines += _gate_lines(t.get("privacy_gate"))
    lines += ["", "Generate with `netdiff generate --model <this folder> --per-class N -o OUTDIR`.", ""]
    return "\n".join(lines)


def _gate_lines(gate: dict[str, Any] | None) -> list[str]:
    """The privacy gate's evaluations as a table (``privacy.png`` plots them)."""
    if not gate:
        return []
    lines = ["", "## Privacy gate", "",
             f"Holds when the DCR ratio is >= {gate['dcr_min']} and the membership AUC <= {gate['mia_max']}, against "
             f"{gate['holdout'].get('traces', 0)} held-out traces; chosen: step {gate['chosen_step']} "
             f"({gate['rule']}).",
             "", "| step | DCR ratio | MIA AUC | held-out loss | holds |", "| --- | --- | --- | --- | --- |"]
    for ev in gate["evaluations"]:
        mark = " (chosen)" if ev["step"] == gate["chosen_step"] else ""
        lines.append(f"| {ev['step']} | {ev['dcr_ratio']:.3f} | {ev['mia_auc']:.3f} | {ev['heldout_loss']:.4f} "
                     f"| {'yes' if ev['gate'] else 'no'}{mark} |")
    return lines


def write_card(out: Path, card: dict[str, Any]) -> None:
    with atomic_path(out / CARD) as tmp:
        tmp.write_text(json.dumps(card, indent=1))
    with atomic_path(out / README) as tmp:
        tmp.write_text(render_readme(card))


@contextlib.contextmanager
def figure(path: Path) -> Iterator[Any]:
    """A matplotlib ``(fig, ax)`` (6 x 3.5 in) saved to ``path`` as PNG, atomically, when the block ends; ``None``
    when matplotlib is not installed (the plot is then skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        yield None
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    try:
        yield fig, ax
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def write_loss_curve(out: Path, history: list[dict[str, float]], metrics: dict[str, str] | None = None) -> None:
    """``loss.json`` always; ``loss.png`` when matplotlib is installed: the loss, and each of ``metrics`` (history
    key -> label) the history holds."""
    with atomic_path(out / LOSS_JSON) as tmp:
        tmp.write_text(json.dumps(history))
    if not history:
        return
    steps = [h["step"] for h in history]
    with figure(out / LOSS_PNG) as plot:
        if plot is None:
            return
        _, ax = plot
        ax.plot(steps, [h["loss"] for h in history], label="training loss")
        for key, label in (metrics or {}).items():
            if key in history[0]:
                ax.plot(steps, [h[key] for h in history], label=label, alpha=0.7)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend()
