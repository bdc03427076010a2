"""Report writers: ``report.json``, ``report.md`` and one self-contained ``report.html``; KFP metric shapes.

The tables are built once (:func:`tables`) and rendered twice, as Markdown and as HTML, so both say the same.
The HTML embeds its pictures as base64 PNG ``data:`` URIs and its style inline: it opens anywhere, offline, as
one file (and as a KFP ``HTML`` artifact).  :func:`kfp_metrics` gives what KFP's ``Metrics.log_metric(name,
value)``, ``ClassificationMetrics.log_confusion_matrix(categories, matrix)`` and an ``HTML`` artifact take.
"""

from __future__ import annotations

import base64
import html as html_lib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdiff_lib.atomic import atomic_open
from netdiff_lib.evaluate.compliance import offload_note
from netdiff_lib.evaluate.tables import Table, config_items, html_table, markdown_table

ROW_TITLES = {"reference": "reference: real-train vs real-test (the floor)", "synthetic": "synthetic vs real-test"}
HEADLINE = (
    ("fidelity_jsd_macro", "JSD"), ("fidelity_tvd_macro", "TVD"), ("fidelity_hellinger_macro", "HD"),
    ("bit_mad_macro", "bit MAD"), ("flow_size_jsd_macro", "flow size JSD"), ("rf_accuracy", "RF acc"),
    ("rf_macro_f1", "RF F1"),
    ("dt_accuracy", "DT acc"), ("dt_macro_f1", "DT F1"), ("dcr_median", "DCR median"),
    ("dcr_median_ratio", "DCR ratio"), ("exact_copy_rate", "exact copies"), ("near_copy_rate", "near copies"),
    ("membership_auc", "MIA AUC"), ("invalid_rate", "invalid/pkt"), ("offload_rate", "checksum offload/pkt"),
    ("pass_rate", "files passing"),
    *(("flow_one_packet_share", "1-pkt flows"), ("flow_handshake_share", "TCP handshake"),
      ("flow_packets_median", "pkts/flow median"), ("flow_duration_ms_median", "flow ms median"),
      ("flows_per_trace", "flows/trace"), ("flow_jsd_macro", "flow JSD"), ("flow_rf_ratio", "flow RF F1 ratio")),
)
#: Headline keys of the flow section (:mod:`netdiff_lib.evaluate.flows`) -> key of the set's pooled figures.
FLOW_HEADLINE = {"flow_one_packet_share": "one_packet_share", "flow_handshake_share": "handshake_share",
                 "flow_syn_open_share": "syn_open_share", "flow_packets_median": "packets_median",
                 "flow_duration_ms_median": "duration_ms_median", "flows_per_trace": "flows_per_trace"}


@dataclass
class Pictures:
    """PNG bytes for the HTML report."""

    images: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # class -> set name -> PNG
    histograms: bytes | None = None
    confusion: dict[str, bytes] = field(default_factory=dict)  # title -> PNG
    dcr: bytes | None = None
    flows: bytes | None = None  # flow CDFs


def json_safe(obj: object) -> object:
    """Plain JSON types only: numpy scalars unwrapped, NaN and infinities as null."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _names(labels: list[str] | None, limit: int = 6) -> str:
    if not labels:
        return ""
    return ", ".join(labels[:limit]) + (f" (+{len(labels) - limit})" if len(labels) > limit else "")


def headline(result: dict, row: str) -> dict[str, float | None]:
    """The flat headline numbers of one row (``reference`` or ``synthetic``)."""
    fid, util = result["fidelity"][row], result["utility"][row]
    priv, comp = result["privacy"][row], result.get("compliance", {}).get(row, {})
    out = {f"fidelity_{k}_{scope}": fid["mean"][scope][k]
           for scope in ("macro", "all") for k in ("jsd", "tvd", "hellinger")}
    out |= {"bit_mad_macro": fid["bit_mad"]["macro"], "bit_mad_all": fid["bit_mad"]["all"]}
    if "packets_per_flow" in fid.get("flows", {}):
        out["flow_size_jsd_macro"] = fid["flows"]["packets_per_flow"]["macro"]["jsd"]
    for model, res in util.items():
        out |= {f"{model}_{k}": res.get(k) for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    out |= {"dcr_median": priv["all"]["median_dcr"], "dcr_median_ratio": priv["all"]["median_ratio"],
            "exact_copy_rate": priv["all"]["exact_copy_rate"], "near_copy_rate": priv["all"]["near_copy_rate"],
            "dcr_median_ratio_macro": priv["macro"]["median_ratio"],
            "membership_auc": priv.get("membership", {}).get("auc")}
    if comp.get("available"):
        out |= {k: comp["all"].get(k) for k in COMPLIANCE_KEYS}
    jsd = result.get("application", {}).get("mix_jsd", {}).get(row)
    if jsd is not None:
        out["app_protocol_mix_jsd"] = jsd
    out |= flow_headline(result.get("flows", {}), row)
    return json_safe(out)


def flow_headline(flows: dict, row: str) -> dict[str, float | None]:
    """The flow section's headline numbers of one row: the row's set's pooled figures, the mean flow-variable
    JSD and nDPI-mix JSD against real-test, the flow random forest's macro-F1 and its ratio to the reference's."""
    src = flows.get("rows", {}).get(row) if flows.get("available") else None
    if src is None:
        return {}
    pooled = flows["sets"][src]["all"]
    dist, util = flows["distances"][row], flows["utility"]
    f1, ref = util[row].get("macro_f1"), util.get("reference", {}).get("macro_f1")
    return {**{k: pooled[v] for k, v in FLOW_HEADLINE.items()},
            "flow_jsd_macro": dist["mean"]["macro"]["jsd"], "flow_app_jsd": dist["application"]["all"]["jsd"],
            "flow_rf_macro_f1": f1, "flow_rf_ratio": f1 / ref if f1 is not None and ref else None}


def tables(result: dict) -> list[Table]:
    """Headline, inputs, per-field, per-class, compliance and timing tables."""
    rows = list(result["summary"])
    out = [Table("Headline (macro-averaged over classes unless noted)", ["row", *(h for _, h in HEADLINE)],
                 [[ROW_TITLES.get(r, r), *(result["summary"][r].get(k) for k, _ in HEADLINE)] for r in rows],
                 "JSD/TVD/HD: mean over fields of the per-class distances; lower is closer. DCR ratio >= 1: "
                 "no closer to the training data than fresh real traces. MIA AUC: membership-inference attack "
                 "(distance to the closest generated trace) on real-train vs real-test traces; 0.5 = no signal."
                 " Flow figures (nfstream): the row's set pooled over classes; flow JSD: mean over the flow "
                 "variables, macro; flow RF F1 ratio: TSTR/TRTR on flows.")]
    out += generator_tables(result)
    cover = result.get("class_coverage", {})
    out.append(Table(
        "Inputs", ["set", "source", "traces", "packets", "classes", "unreadable", "empty", "classes not in it",
                   "classes not in real-test"],
        [[name, s.get("uri") or "(in memory)", s["traces"], s["packets"], len(s["classes"]), len(s["failed"]),
          s["empty_traces"], _names(cover.get(name, {}).get("missing")), _names(cover.get(name, {}).get("extra"))]
         for name, s in result["inputs"].items()]))
    fields = result["fidelity"][rows[0]]["fields"]
    flows = result["fidelity"][rows[0]].get("flows", {})
    out.append(Table(
        "Fidelity per field (macro over classes / pooled)",
        ["field", *(f"{r} {k} {s}" for r in rows for k in ("JSD", "TVD", "HD") for s in ("macro", "all"))],
        [[name, *(result["fidelity"][r]["fields"][name][s][k] for r in rows
                  for k in ("jsd", "tvd", "hellinger") for s in ("macro", "all"))] for name in fields]
        + [[f"{name} (not in the mean)", *(result["fidelity"][r]["flows"][name][s][k] for r in rows
                                           for k in ("jsd", "tvd", "hellinger") for s in ("macro", "all"))]
           for name in flows],
        "packets_per_flow: TCP/UDP packets of a trace with the same protocol and port pair; a generator that "
        "draws each packet's ports on its own gives one-packet flows."))
    out.append(_per_class_table(result, rows))
    comp = [_compliance_row(r, c) for r, c in result.get("compliance", {}).items()]
    if comp:
        notes = [f"{ROW_TITLES.get(r, r)}: {n}" for r, c in result.get("compliance", {}).items()
                 if c.get("available") and (n := offload_note(c["all"]))]
        out.append(Table("Protocol compliance (per packet, pooled)",
                         ["row", "invalid", "checksum offload", "flagged by the validator", "malformed",
                          "expert errors", "bad checksums", "checksums only", "application layer", "files passing",
                          "files", "packets", "tool / note"], comp,
                         " ".join(["Rates per packet (flagged: at least one failure; checksums only: no other "
                                   "failure; checksum offload: checksums only, left to the network card by the "
                                   "sending host; invalid: flagged, checksum offload apart); files passing: no "
                                   "invalid packet.", *notes])))
    app = result.get("application")
    if app:
        out += _application_tables(app)
    out += flow_tables(result.get("flows"))
    out.append(Table("Timings (s)", ["stage", "seconds"], [[k, v] for k, v in result["timings_s"].items()]))
    return out


COMPLIANCE_KEYS = ("invalid_rate", "offload_rate", "failed_rate", "malformed_rate", "expert_errors_rate",
                   "bad_checksums_rate", "checksum_only_rate", "application_rate", "pass_rate")


def _application_tables(app: dict) -> list[Table]:
    """Flagged shares and mix JSD per set, then the application-protocol mix side by side."""
    sets = app["sets"]
    jsd = {"real_train": app["mix_jsd"].get("reference"), "synthetic": app["mix_jsd"].get("synthetic")}
    head = Table("Application layer (tshark, every dissector on, checksums on)",
                 ["set", "flagged / packet", "application layer failing / packet", "protocol mix JSD vs real-test"],
                 [[name, s["flagged_rate"], s["application_rate"], jsd.get(name)] for name, s in sets.items()],
                 "Protocol mix: the share of packets per top protocol (tshark's last dissected layer); JSD of "
                 "real-train vs real-test is the floor.")
    protos = sorted({p for s in sets.values() for p in s["protocol_mix"]},
                    key=lambda p: -max(s["protocol_mix"].get(p, 0.0) for s in sets.values()))
    mix = Table("Application-protocol mix (share of packets)", ["protocol", *sets],
                [[p, *(s["protocol_mix"].get(p, 0.0) for s in sets.values())] for p in protos[:30]])
    return [head, mix]


FLOW_SET_COLUMNS = (
    ("traces", "pcaps"), ("tcp_udp_flows", "TCP/UDP flows"), ("flows_per_trace", "flows/trace"),
    ("one_packet_share", "1-pkt flows"), ("packets_median", "pkts median"), ("bytes_median", "bytes median"),
    ("duration_ms_median", "ms median"), ("iat_ms_median", "IAT ms median"), ("tcp_flows", "TCP flows"),
    ("syn_open_share", "open with SYN"), ("handshake_share", "handshake"), ("midstream_share", "mid-stream"),
    ("closed_share", "closed"), ("fin_share", "FIN"), ("rst_share", "RST"),
)
FLOW_CLASS_COLUMNS = (("flows_per_trace", "flows/trace"), ("one_packet_share", "1-pkt"),
                      ("packets_median", "pkts median"), ("handshake_share", "handshake"))


def flow_tables(flows: dict | None) -> list[Table]:
    """The flow section: figures per set, distances and classifier per row, per class, nDPI application mix."""
    if not flows:
        return []
    if not flows.get("available"):
        return [Table("Flows (nfstream)", ["status"], [[flows.get("reason")]])]
    sets, rows = flows["sets"], flows["rows"]
    cfg = flows["config"]
    out = [Table(
        f"Flows ({flows['tool']}; pooled)", ["set", *(h for _, h in FLOW_SET_COLUMNS), "unreadable"],
        [[n, *(s["all"][k] for k, _ in FLOW_SET_COLUMNS), len(s["failed"])] for n, s in sets.items()],
        f"Bidirectional 5-tuple flows, idle timeout {cfg['idle_timeout_s']} s, first {cfg['max_packets']} frames "
        "per pcap. Sizes and times: TCP/UDP flows (times in ms, nfstream's clock). Handshake: the first packet a "
        "SYN, then a SYN from the responder and an ACK from the initiator; mid-stream: the first packet has no "
        "SYN; closed: a FIN or RST seen. Not measured: " + (", ".join(flows["not_measured"]) or "none") + ".")]
    variables = [v for v in next(iter(flows["distances"].values()), {}) if v != "mean"]
    out.append(Table(
        "Flow distances vs real-test (JSD/TVD, macro over classes / pooled)",
        ["variable", *(f"{r} {k} {sc}" for r in rows for k in ("JSD", "TVD") for sc in ("macro", "all"))],
        [[v, *(flows["distances"][r][v][sc][k] for r in rows for k in ("jsd", "tvd") for sc in ("macro", "all"))]
         for v in [*variables, "mean"]],
        "flows_per_trace, packets/bytes per flow: quarter-octave bins; duration, iat: 0.1-decade bins of "
        "log10(1 + ms); tcp_state: opening/closing of TCP flows; application: nDPI master protocol per flow."))
    util = flows["utility"]
    ref = util.get("reference", {}).get("macro_f1")
    out.append(Table(
        "Flow classifier (random forest on nfstream's flow features, tested on real-test flows)",
        ["row", "train flows", "test flows", "accuracy", "macro-F1", "ratio to real-train (TSTR/TRTR)"],
        [[ROW_TITLES.get(r, r), u.get("train_flows"), u.get("test_flows"), u.get("accuracy"), u.get("macro_f1"),
          u["macro_f1"] / ref if ref and u.get("macro_f1") is not None else None] for r, u in util.items()],
        f"{len(cfg['features'])} features: ports, IP protocol and version, and per direction duration, packets, "
        "bytes, packet-size and inter-arrival statistics, TCP flag counts (no addresses, MACs, ids, timestamps)."))
    classes = sorted({c for s in sets.values() for c in s["per_class"]})
    out.append(Table("Flows per class", ["class", *(f"{n} {h}" for n in sets for _, h in FLOW_CLASS_COLUMNS)],
                     [[c, *(sets[n]["per_class"].get(c, {}).get(k) for n in sets for k, _ in FLOW_CLASS_COLUMNS)]
                      for c in classes]))
    apps = sorted({a for s in sets.values() for a in s["application_mix"]},
                  key=lambda a: -max(s["application_mix"].get(a, 0.0) for s in sets.values()))
    out.append(Table("Application mix (nDPI master protocol, share of flows)", ["application", *sets],
                     [[a, *(s["application_mix"].get(a, 0.0) for s in sets.values())] for a in apps[:20]]))
    return out


def generator_tables(result: dict) -> list[Table]:
    """Which model made the synthetic traces and in which privacy mode, with the privacy gate's history (when the
    run said: the pipeline's ``generator.json``)."""
    gen = result.get("generator")
    if not gen:
        return []
    on = gen.get("privacy") == "on"
    mode = ("on: the model folder holds the checkpoint chosen among those that held the privacy gate on captures "
            "kept out of training" if on else "off: the model was not checked against held-out captures")
    head = Table("Generator", ["backend", "preset", "privacy gate", "chosen step", "DCR ratio", "MIA AUC",
                               "held-out traces"],
                 [[gen.get("backend"), gen.get("preset"), mode, gen.get("privacy_step"), gen.get("privacy_dcr_ratio"),
                   gen.get("privacy_mia_auc"), gen.get("privacy_heldout_traces")]])
    gate = gen.get("privacy_gate") or {}
    if not gate.get("evaluations"):
        return [head]
    history = Table(f"Privacy gate during training (holds: DCR ratio >= {gate.get('dcr_min')}, MIA AUC <= "
                    f"{gate.get('mia_max')}; measured on raw samples against the held-out captures)",
                    ["step", "DCR ratio", "MIA AUC", "held-out loss", "holds", "chosen"],
                    [[e.get("step"), e.get("dcr_ratio"), e.get("mia_auc"), e.get("heldout_loss"),
                      "yes" if e.get("gate") else "no", "yes" if e.get("step") == gate.get("chosen_step") else ""]
                     for e in gate["evaluations"]])
    return [head, history]


def _compliance_row(row: str, c: dict) -> list:
    if not c.get("available"):
        return [row, *([None] * (len(COMPLIANCE_KEYS) + 2)), c.get("reason")]
    sampled = c.get("sampled", {})
    note = f"{c.get('tool')}; {sampled.get('files')} of {sampled.get('of')} files validated"
    return [row, *(c["all"].get(k) for k in COMPLIANCE_KEYS), c["all"]["files"], c["all"]["packets"],
            note + " (class-stratified sample)" if sampled.get("files") != sampled.get("of") else note]


def _per_class_table(result: dict, rows: list[str]) -> Table:
    headers = ["class", "train", "test"]
    for r in rows:
        headers += [f"{r} JSD", f"{r} RF F1", f"{r} DT F1", f"{r} DCR median"]
    body = []
    for c in result["classes"]:
        line = [c, result["inputs"]["real_train"]["classes"].get(c, 0), result["inputs"]["real_test"]["classes"][c]]
        for r in rows:
            util = result["utility"][r]
            line += [result["fidelity"][r]["mean"]["per_class"][c]["jsd"],
                     util.get("rf", {}).get("per_class", {}).get(c, {}).get("f1"),
                     util.get("dt", {}).get("per_class", {}).get(c, {}).get("f1"),
                     result["privacy"][r]["per_class"][c]["median_dcr"]]
        body.append(line)
    return Table("Per class", headers, body, keys=3)


def markdown(result: dict) -> str:
    """The Markdown summary."""
    head = ["# netdiff evaluation report", "", f"netdiff {result['netdiff_version']}, {result['created_utc']}; "
            f"{len(result['classes'])} classes; k = {result['config']['k_packets']} packets per trace.", "",
            "Evaluation settings: " + "; ".join(f"{k} {v}" for k, v in config_items(result["config"])) + ".", ""]
    return "\n".join(head + [markdown_table(t) for t in tables(result)])


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html_lib.escape(alt)}" src="data:image/png;base64,{data}">'


def _html_images(images: list[tuple[str, dict[str, bytes]]]) -> str:
    esc = html_lib.escape
    blocks = []
    for c, imgs in images:
        figs = "".join(f"<figure>{_img(png, f'{c} {name}')}<figcaption>{esc(name)}</figcaption></figure>"
                       for name, png in imgs.items())
        blocks.append(f"<div class=cls><div class=cap>{esc(c)}</div>{figs}</div>")
    return ("<h2>Trace images per class</h2><p class=note>The first trace of each set per class as the NetDiffusion "
            "image (1,088 columns x 1,024 packets, scaled down): red = 1, green = 0, blue = absent.</p>"
            f"<div class=grid>{''.join(blocks)}</div>")


def _html_pictures(p: Pictures) -> str:
    parts = [_html_images(p.images)] if p.images else []
    if p.histograms:
        parts.append("<h2>Field distributions (pooled, shares of the most frequent values)</h2>"
                     + _img(p.histograms, "field histograms"))
    if p.confusion:
        parts.append("<h2>Confusion matrices (tested on real-test)</h2>"
                     + "".join(_img(png, title) for title, png in p.confusion.items()))
    if p.dcr:
        parts.append("<h2>Distance to the closest training record</h2>" + _img(p.dcr, "DCR histograms"))
    if p.flows:
        parts.append("<h2>Flows (nfstream): TCP/UDP flow sizes and times</h2>" + _img(p.flows, "flow CDFs"))
    return "".join(parts)


STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:1200px}summary{cursor:pointer;color:#345;font-size:13px}"
         "table.cfg th{text-align:left;font-weight:normal}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:right}th{background:#f3f3f3}"
         "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:4px}.note{color:#555;font-size:12px}"
         ".grid{display:flex;flex-wrap:wrap;gap:10px}.cls{border:1px solid #ddd;padding:4px}"
         ".cap{font-weight:bold;font-size:13px}figure{display:inline-block;margin:2px}"
         "figcaption{font-size:11px;text-align:center;color:#555}figure img{margin:0}")


def html(result: dict, pictures: Pictures | None = None) -> str:
    """The self-contained HTML report (inline style, embedded PNGs, no script, no external reference)."""
    body = "".join(html_table(t) for t in tables(result)) + _html_pictures(pictures or Pictures())
    esc = html_lib.escape
    cfg = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in config_items(result["config"]))
    return (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>netdiff evaluation</title>"
            f"<style>{STYLE}</style></head><body><h1>netdiff evaluation report</h1>"
            f"<p>netdiff {esc(result['netdiff_version'])}, {esc(result['created_utc'])}.</p>"
            f"<details><summary>Evaluation settings</summary><table class=cfg>{cfg}</table></details>"
            f"{body}</body></html>")


def write_report(result: dict, out_dir: str | Path, pictures: Pictures | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` atomically into ``out_dir``."""
    out = Path(out_dir)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    texts = {"json": json.dumps(json_safe(result), indent=1, allow_nan=False), "md": markdown(result),
             "html": html(result, pictures)}
    for key, path in paths.items():
        with atomic_open(path, "w") as fh:
            fh.write(texts[key])
    return paths


def kfp_metrics(result: dict, html_text: str | None = None) -> dict:
    """Metric shapes for KFP artifacts.

    ``metrics``: ``{name: float}`` for ``Metrics.log_metric`` (``<row>_<metric>``, finite values only);
    ``confusion_matrices``: ``{<row>_<model>: {"categories": [...], "matrix": [[int]]}}`` for
    ``ClassificationMetrics.log_confusion_matrix(categories, matrix)``; ``html``: the report text for an
    ``HTML`` artifact (written to ``artifact.path``), or None.
    """
    metrics = {f"{row}_{k}": float(v) for row, flat in result["summary"].items() for k, v in flat.items()
               if isinstance(v, (int, float)) and math.isfinite(v)}
    confusion = {f"{row}_{model}": {"categories": list(res["confusion"]["labels"]),
                                    "matrix": [[int(x) for x in r] for r in res["confusion"]["matrix"]]}
                 for row, models in result["utility"].items() for model, res in models.items() if "confusion" in res}
    return {"metrics": metrics, "confusion_matrices": confusion, "html": html_text}
