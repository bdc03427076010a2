"""The one-screen summary of a finished run, from the ``summary.json`` that :func:`publish` writes."""

from __future__ import annotations

import math
import textwrap
from typing import Any

#: (headline key, column title, format) shown per evaluation row.
COLUMNS = (
    ("fidelity_jsd_macro", "JSD", "{:.3f}"), ("rf_macro_f1", "RF F1", "{:.2f}"),
    ("dcr_median_ratio", "DCR ratio", "{:.2f}"), ("exact_copy_rate", "copies", "{:.1%}"),
    ("invalid_rate", "invalid", "{:.1%}"), ("offload_rate", "offload", "{:.1%}"),
)
#: The flow figures (nfstream), a second block under the first.
FLOW_COLUMNS = (
    ("flow_one_packet_share", "1-pkt flows", "{:.1%}"), ("flow_handshake_share", "handshake", "{:.1%}"),
    ("flow_packets_median", "pkts/flow", "{:.0f}"), ("flow_duration_ms_median", "flow ms", "{:.0f}"),
    ("flows_per_trace", "flows/trace", "{:.1f}"), ("flow_rf_ratio", "flow F1 ratio", "{:.2f}"),
)
ROWS = (("reference", "real-train vs real-test"), ("synthetic", "synthetic vs real-test"))


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return pattern.format(value)


def _block(evaluation: dict[str, dict[str, Any]], name: str, columns: tuple, width: int = 11) -> list[str]:
    lines = [f"{name:<12}" + " " * 24 + "".join(f"{title:>{width}}" for _, title, _ in columns)]
    for row, title in ROWS:
        if row in evaluation:
            values = "".join(f"{_fmt(evaluation[row].get(k), f):>{width}}" for k, _, f in columns)
            lines.append(f"  {title:<34}{values}")
    return lines


def _evaluation(evaluation: dict[str, dict[str, Any]]) -> list[str]:
    lines = _block(evaluation, "evaluation", COLUMNS)
    if any(k in evaluation.get(row, {}) for k, _, _ in FLOW_COLUMNS for row, _ in ROWS):
        lines += _block(evaluation, "flows", FLOW_COLUMNS, 14)
    from netdiff_lib.evaluate.compliance import offload_note  # deferred: netdiff_lib.evaluate loads scikit-learn

    for row, what in (("reference", "the real-test packets"), ("synthetic", "the synthetic packets")):
        note = offload_note(evaluation.get(row) or {}, what)  # why real captures "fail" validation
        if note:
            lines += textwrap.wrap(f"note: {note}", 110, initial_indent="  ", subsequent_indent="        ")
    return lines


def privacy_line(model: dict[str, Any]) -> str:
    """Which privacy mode made the traces: the gate's choice (from the model card's scalars), or off."""
    if model.get("privacy") != "on":
        why = "" if model.get("backend") == "native" else f" (backend {model.get('backend')} has no gate)"
        return f"privacy     gate off{why}: the model was not checked against held-out captures"
    return (f"privacy     gate on: step {model.get('privacy_step')} chosen, DCR ratio "
            f"{_fmt(model.get('privacy_dcr_ratio'), '{:.2f}')}, membership AUC "
            f"{_fmt(model.get('privacy_mia_auc'), '{:.2f}')} on {model.get('privacy_heldout_traces')} held-out "
            "traces (every evaluation: model card)")


def summary_text(summary: dict[str, Any], elapsed_s: float | None = None) -> str:
    """At most about 15 lines: inputs, model, generated pcaps, repair, headline metrics, where things are."""
    lines = []
    took = f" in {elapsed_s:.0f} s" if elapsed_s is not None else ""
    lines.append(f"netdiff {summary.get('netdiff_version', '?')}: run finished{took}; outputs in "
                 f"{summary.get('output_uri')}")
    inputs = summary.get("inputs")
    if inputs:
        classes = inputs.get("classes") or {}
        train = sum(v.get("train", 0) for v in classes.values())
        test = sum(v.get("test", 0) for v in classes.values())
        lines.append(f"inputs      {inputs.get('input_uri')}: {inputs.get('captures')} captures, {len(classes)} "
                     f"classes ({train} train / {test} test), {inputs.get('shards')} shard(s)")
    model = summary.get("model") or {}
    if model.get("backend"):
        loss = _fmt(model.get("final_loss"), "{:.4f}")
        lines.append(f"model       {model.get('model_uri')}: {model.get('backend')} {model.get('preset')}, "
                     f"{model.get('steps', '?')} steps, final loss {loss}, {model.get('elapsed_s', '?')} s on "
                     f"{model.get('device', '?')}")
        lines.append(privacy_line(model))
    pcaps = summary.get("pcaps") or {}
    per_class = ", ".join(f"{k} {v}" for k, v in (pcaps.get("classes") or {}).items())
    lines.append(f"pcaps       {pcaps.get('count', 0)} in {pcaps.get('uri')} ({per_class})")
    repair = summary.get("repair") or {}
    if repair.get("traces"):
        lines.append(f"repair      {repair['packets']} packets in {repair['flows']} flows; "
                     f"{repair['changed_fraction']:.1%} of generated bits changed by reconstruction")
    if summary.get("evaluation"):
        lines += _evaluation(summary["evaluation"])
    report = summary.get("report") or {}
    if report.get("html"):
        lines.append(f"report      {report['html']}")
    return "\n".join(lines)


def evaluation_lines(evaluation: dict[str, dict[str, Any]]) -> list[str]:
    """The evaluation rows of the summary (``netdiff run``'s and ``netdiff evaluate``'s): the headline metrics of
    real-train vs real-test and of synthetic vs real-test, from a report's ``summary``."""
    return _evaluation(evaluation)
