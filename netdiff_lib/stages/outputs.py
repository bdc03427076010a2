"""Output stages: reconstruct one shard of generated traces, evaluate, publish to the output URI.

``evaluate_run`` also fills KFP's visualization artifacts without importing kfp: it takes any objects with
``log_metric(name, value)`` (a ``Metrics`` artifact) and ``log_confusion_matrix(categories, matrix)`` (a
``ClassificationMetrics`` artifact), and file paths for the ``HTML`` and ``Markdown`` artifacts.

``publish`` writes ``<output>/pcaps/<label>/<label>_<n>.pcap``, ``<output>/report/report.{html,md,json}``,
``<output>/inputs.json`` and, last, ``<output>/summary.json``: every object is published atomically by
:func:`netdiff_lib.storage.put`, and ``summary.json`` (which lists the other files) marks a complete output.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from netdiff_lib import __version__, storage
from netdiff_lib.errors import InputError
from netdiff_lib.stages.common import (
    GENERATOR,
    files_under,
    link_files,
    read_json,
    shard_name,
    shard_of,
    write_json,
)

REPAIR_FILE = "repair.json"
SOURCE = "netdiff-generated"
RECONSTRUCT_BATCH = 256
REPORT_FILES = ("report.html", "report.md", "report.json")
SUMMARY_FORMAT = "netdiff-run/1"
_REPAIR_SUMS = ("traces", "rows", "packets", "padding_rows", "flows", "tcp_sessions", "bits", "bits_changed")


class MetricsLike(Protocol):
    def log_metric(self, metric: str, value: float) -> None: ...


class ConfusionLike(Protocol):
    def log_confusion_matrix(self, categories: list[str], matrix: list[list[int]]) -> None: ...


def reconstruct_shard(generated_dir: str | Path, shard: dict[str, Any], out_dir: str | Path,
                      batch: int = RECONSTRUCT_BATCH) -> dict[str, Any]:
    """Repair every trace of one shard into ``out_dir/<label>/<name>.pcap`` (``batch`` traces per vectorised
    pass); totals go to ``repair.json``."""
    from netdiff_lib.models.base import load_generated
    from netdiff_lib.payloads import FILE_NAME as PAYLOADS_FILE
    from netdiff_lib.payloads import PayloadProfile
    from netdiff_lib.repair import RepairConfig, labelled_path, reconstruct_batch

    index, _ = shard_of(shard)
    files = files_under(Path(generated_dir) / shard_name(index), ".npz")
    if not files:
        raise InputError(Path(generated_dir) / shard_name(index), "no generated traces (.npz) in this shard")
    profile = Path(generated_dir, PAYLOADS_FILE)
    config = RepairConfig(payloads=PayloadProfile.load(profile) if profile.is_file() else None)
    totals: Counter = Counter()
    protocols: Counter = Counter()
    rows = []
    for start in range(0, len(files), batch):
        paths = [p for _, p in files[start:start + batch]]
        loaded = [load_generated(p) for p in paths]
        traces = [g for g, _ in loaded]
        layouts = {layout for _, layout in loaded}
        if len(layouts) != 1:
            raise InputError(paths[0].parent, "generated traces of one shard use different layouts")
        recs = reconstruct_batch([t.matrix for t in traces], layouts.pop(), iat_us=[t.iat_us for t in traces],
                                 labels=[t.label for t in traces], sources=[SOURCE] * len(traces), config=config)
        for path, trace, rec in zip(paths, traces, recs, strict=True):
            rel = labelled_path(trace.label, path.stem)
            rec.write(Path(out_dir, rel))
            report = rec.report
            totals.update({k: getattr(report, k) for k in _REPAIR_SUMS if k != "traces"} | {"traces": 1})
            protocols.update(report.protocols)
            rows.append({"file": rel, "label": trace.label, "packets": report.packets,
                         "changed_fraction": round(report.changed_fraction, 6)})
    summary = {**{k: int(totals[k]) for k in _REPAIR_SUMS}, "protocols": dict(sorted(protocols.items())),
               "shard": index}
    write_json(Path(out_dir, REPAIR_FILE), {**summary, "files": rows})
    if Path(generated_dir, GENERATOR).is_file():  # on to the report: which model made these pcaps
        write_json(Path(out_dir, GENERATOR), read_json(Path(generated_dir, GENERATOR)))
    return summary


def _confusion(result: dict) -> tuple[str, dict] | None:
    """The confusion matrix to show: the random forest trained on synthetic (else the first one)."""
    from netdiff_lib.evaluate import kfp_metrics

    matrices = kfp_metrics(result)["confusion_matrices"]
    for key in ("synthetic_rf", *sorted(matrices)):
        if key in matrices:
            return key, matrices[key]
    return None


def _input_root(data_dirs: list[str]) -> str:
    """The folder or prefix that holds every capture the encode shards read (what the user passed as input)."""
    uris = [row["uri"] for d in data_dirs if Path(d, "shard.json").is_file()
            for row in read_json(Path(d, "shard.json")).get("files", [])]
    if not uris:
        return "the pipeline's input"
    common = uris[0].rsplit("/", 1)[0]
    for uri in uris[1:]:
        while not uri.startswith(common + "/") and "/" in common:
            common = common.rsplit("/", 1)[0]
    return common


def evaluate_run(data_dirs: list[str], synthetic_dirs: list[str], report_dir: str | Path, *, seed: int = 0,
                 metrics: MetricsLike | None = None, confusion: ConfusionLike | None = None,
                 html_path: str | Path | None = None, markdown_path: str | Path | None = None) -> dict[str, Any]:
    """Evaluate the synthetic pcaps against the real train/test traces of the encode outputs ``data_dirs`` (and
    the validator reports the encode step made); write ``report.*`` to ``report_dir``
    and fill the KFP visualization artifacts that are given. Returns the headline numbers per row."""
    from netdiff_lib.evaluate import evaluate, kfp_metrics
    from netdiff_lib.evaluate.sources import encoded_trace_set

    train = encoded_trace_set("real_train", data_dirs, "train")
    test = encoded_trace_set("real_test", data_dirs, "test")
    with tempfile.TemporaryDirectory(prefix="netdiff-eval-") as tmp:
        synthetic = Path(tmp, "synthetic")
        if not link_files([f for d in synthetic_dirs for f in files_under(Path(d), ".pcap")], synthetic):
            raise InputError(synthetic_dirs[0] if synthetic_dirs else tmp, "no synthetic pcaps to evaluate")
        root = _input_root(data_dirs)
        names = {"real_train": f"train split of {root}", "real_test": f"test split of {root}",
                 "synthetic": "the run's reconstructed pcaps"}
        made_by = [Path(d, GENERATOR) for d in synthetic_dirs if Path(d, GENERATOR).is_file()]
        result = evaluate(train, test, str(synthetic), report_dir, seed=seed, progress=True, names=names,
                          generator=read_json(made_by[0]) if made_by else None)
    for name, value in kfp_metrics(result)["metrics"].items():
        if metrics is not None:
            metrics.log_metric(name, value)
    shown = _confusion(result)
    if confusion is not None and shown is not None:
        confusion.log_confusion_matrix(shown[1]["categories"], shown[1]["matrix"])
    for src, dest in (("report.html", html_path), ("report.md", markdown_path)):
        if dest:
            shutil.copyfile(Path(report_dir, src), dest)
    return {"summary": result["summary"], "classes": result["classes"], "confusion_shown": shown and shown[0],
            "timings_s": result.get("timings_s", {})}


def _repair_totals(pcap_dirs: list[str]) -> dict[str, Any]:
    totals: Counter = Counter()
    protocols: Counter = Counter()
    for d in pcap_dirs:
        path = Path(d, REPAIR_FILE)
        if path.is_file():
            doc = read_json(path)
            totals.update({k: doc.get(k, 0) for k in _REPAIR_SUMS})
            protocols.update(doc.get("protocols", {}))
    out: dict[str, Any] = {k: int(totals[k]) for k in _REPAIR_SUMS}
    out["changed_fraction"] = totals["bits_changed"] / totals["bits"] if totals["bits"] else 0.0
    return out | {"protocols": dict(sorted(protocols.items()))}


def _put(storage: Any, src: Path, output_uri: str, rel: str, published: list[str]) -> str:
    uri = storage.put(src, storage.join(output_uri, rel))
    published.append(rel)
    return uri


def publish(output_uri: str, *, pcap_dirs: list[str], report_dir: str = "", manifest_path: str = "",
            model_dir: str = "", model_uri: str = "", s3_endpoint: str = "") -> dict[str, Any]:
    """Copy the pcaps, the report and the input manifest to ``output_uri``; ``summary.json`` goes last."""
    with storage.endpoint(s3_endpoint):
        return _publish(output_uri, pcap_dirs, report_dir, manifest_path, model_dir, model_uri)


def _publish(output_uri: str, pcap_dirs: list[str], report_dir: str, manifest_path: str, model_dir: str,
             model_uri: str) -> dict[str, Any]:
    from netdiff_lib.stages.model import model_summary

    published: list[str] = []
    pcaps = [f for d in pcap_dirs for f in files_under(Path(d), ".pcap")]
    if not pcaps:
        raise InputError(pcap_dirs[0] if pcap_dirs else output_uri, "no pcaps to publish")
    for rel, path in pcaps:
        _put(storage, path, output_uri, f"pcaps/{rel}", published)
    report: dict[str, str] = {}
    for name in REPORT_FILES if report_dir else ():
        if Path(report_dir, name).is_file():
            report[name.split(".")[-1]] = _put(storage, Path(report_dir, name), output_uri, f"report/{name}",
                                               published)
    if manifest_path:
        _put(storage, Path(manifest_path), output_uri, "inputs.json", published)
    summary = {
        "format": SUMMARY_FORMAT, "netdiff_version": __version__, "output_uri": output_uri,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pcaps": {"count": len(pcaps), "uri": storage.join(output_uri, "pcaps"),
                  "classes": dict(sorted(Counter(rel.split("/", 1)[0] for rel, _ in pcaps).items()))},
        "repair": _repair_totals(pcap_dirs), "report": report,
        "evaluation": read_json(Path(report_dir, "report.json"))["summary"] if "json" in report else None,
        "inputs": _inputs_summary(manifest_path) if manifest_path else None,
        "model": model_summary(model_dir, model_uri) if model_dir else None,
        "files": published,
    }
    with tempfile.TemporaryDirectory(prefix="netdiff-publish-") as tmp:
        write_json(Path(tmp, "summary.json"), summary)
        summary_uri = storage.put(Path(tmp, "summary.json"), storage.join(output_uri, "summary.json"))
    return {"output_uri": output_uri, "summary": summary_uri, "pcaps": len(pcaps), "files": len(published) + 1}


def _inputs_summary(manifest_path: str) -> dict[str, Any]:
    doc = read_json(manifest_path)
    return {k: doc.get(k) for k in ("input_uri", "shards", "test_fraction", "seed", "fingerprint", "classes")} | {
        "captures": len(doc.get("captures", []))}
