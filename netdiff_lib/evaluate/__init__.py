"""Evaluation of synthetic traffic against real traffic: fidelity, ML utility, privacy, protocol compliance.

:func:`evaluate` takes three trace sets (folders or object-store prefixes of labelled pcaps, or traces already
in memory): ``real_train`` (what a generator learned from), ``real_test`` (held-out real traffic) and,
optionally, ``synthetic``.  Every report has two rows measured the same way:

* ``reference``: real-train against real-test, the floor (what two real samples of the traffic differ by);
* ``synthetic``: synthetic against real-test (fidelity, classifiers trained on synthetic and tested on
  real-test, synthetic traces' distance to the closest real-train trace, validator on the synthetic pcaps).

The ``flows`` section meters the sets' pcaps with nfstream (:mod:`netdiff_lib.evaluate.flows`): flow shapes,
TCP completeness, the nDPI application mix and a flow-level classifier, with the same two rows.

Each pcap is encoded once; all metrics read the same in-memory traces.  Results are a JSON-ready dict (see
``report.json``), and with ``out_dir`` also ``report.md`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from netdiff_lib import __version__
from netdiff_lib.dataset import ClassMap
from netdiff_lib.evaluate.compliance import MAX_FILES, application_section, compliance
from netdiff_lib.evaluate.fidelity import fidelity
from netdiff_lib.evaluate.fields import FieldTable, extract_fields, field_names
from netdiff_lib.evaluate.flows import FlowMeter, flow_section
from netdiff_lib.evaluate.privacy import NEAR_COPY, dcr, membership_auc, privacy_summary
from netdiff_lib.evaluate.report import headline, kfp_metrics, write_report
from netdiff_lib.evaluate.sources import TraceCache, TraceSet, relabel
from netdiff_lib.evaluate.utility import trace_features, utility
from netdiff_lib.schema import MAX_PACKETS, NETDIFFUSION, Layout
from netdiff_lib.trace import Trace

__all__ = ["K_PACKETS", "MAX_FILES", "evaluate", "kfp_metrics"]

#: Packets per trace that the classifiers' features and the privacy distance look at.
K_PACKETS = 16

Source = str | Path | Sequence[Trace] | TraceSet


class _Clock:
    """Wall-clock seconds per stage."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._start = time.perf_counter()

    def stage(self, name: str, start: float) -> None:
        self.times[name] = round(time.perf_counter() - start, 3)

    def total(self) -> dict[str, float]:
        return self.times | {"total": round(time.perf_counter() - self._start, 3)}


def _bar(enabled: bool) -> Callable[..., Callable]:
    """``bar(desc, total)`` gives a function that wraps an iterable in a progress bar (stderr, removed after)."""
    return lambda desc, total=None: (
        lambda it: tqdm(it, desc=desc, total=total, disable=not enabled, leave=False, file=sys.stderr))


def _load(cache: TraceCache, sources: dict[str, Source | None], clock: _Clock) -> dict[str, TraceSet]:
    sets = {}
    for name, source in sources.items():
        if source is not None:
            start = time.perf_counter()
            sets[name] = cache.get(name, source)
            clock.stage(f"load_{name}", start)
    return sets


def _coverage(sets: dict[str, TraceSet], classes: list[str]) -> dict:
    """Per set other than real-test: real-test classes it lacks, and classes real-test does not have."""
    return {name: {"missing": sorted(set(classes) - set(s.labels)), "extra": sorted(set(s.labels) - set(classes))}
            for name, s in sets.items() if name != "real_test"}


def _privacy(sets: dict[str, TraceSet], rows: dict[str, str], k: int, near_copy: float | None,
             bar) -> tuple[dict, dict]:
    train, test = sets["real_train"], sets["real_test"]
    fresh = dcr(train.traces, test.traces, k, bar("DCR real-test"))
    dcrs = {"real-test": fresh}
    out = {"reference": privacy_summary(fresh, test.labels, fresh, test.labels, near_copy)}
    if "synthetic" in rows:
        syn = sets["synthetic"]
        dcrs["synthetic"] = dcr(train.traces, syn.traces, k, bar("DCR synthetic"))
        out["synthetic"] = privacy_summary(dcrs["synthetic"], syn.labels, fresh, test.labels, near_copy)
        out["synthetic"]["membership"] = membership_auc(syn.traces, train.traces, test.traces, k)
    return out, dcrs


def _compliance(trace_set: TraceSet, opts: dict, bar) -> dict:
    n = min(len(trace_set.files), opts["compliance_files"] or len(trace_set.files))
    return compliance(trace_set.files, opts["compliance_files"], bar(f"validate {trace_set.name}", n),
                      known=trace_set.reports)


def _metrics(result: dict, sets: dict[str, TraceSet], rows: dict[str, str], tables: dict[str, FieldTable],
             opts: dict, clock: _Clock, bar) -> dict:
    """Fill the four metric sections of ``result``; returns the DCR arrays for the pictures."""
    test = sets["real_test"]
    start = time.perf_counter()
    result["fidelity"] = {row: fidelity(tables["real_test"], tables[src]) for row, src in rows.items()}
    clock.stage("fidelity", start)
    start = time.perf_counter()
    x_test = trace_features(test.traces, opts["k_packets"])
    result["utility"] = {row: utility(sets[src].traces, test.traces, opts["k_packets"], opts["seed"], x_test)
                         for row, src in bar("classifiers")(rows.items())}
    clock.stage("utility", start)
    start = time.perf_counter()
    result["privacy"], dcrs = _privacy(sets, rows, opts["k_packets"], opts["near_copy"], bar)
    clock.stage("privacy", start)
    if opts["compliance"]:
        start = time.perf_counter()
        result["compliance"] = {row: _compliance(sets["real_test" if row == "reference" else src], opts, bar)
                                for row, src in rows.items()}
        by_set = {"real_test": result["compliance"]["reference"],
                  "real_train": _compliance(sets["real_train"], opts, bar)}
        if "synthetic" in rows:
            by_set["synthetic"] = result["compliance"]["synthetic"]
        result["application"] = application_section(by_set)
        clock.stage("compliance", start)
    return dcrs


def evaluate(
    real_train: Source, real_test: Source, synthetic: Source | None = None, out_dir: str | Path | None = None, *,
    k_packets: int = K_PACKETS, max_packets: int = MAX_PACKETS, seed: int = 0, near_copy: float | None = NEAR_COPY,
    run_compliance: bool = True, compliance_files: int | None = MAX_FILES, pictures: bool = True,
    progress: bool = True, layout: Layout = NETDIFFUSION, class_map: str | Path | None = None,
    names: dict[str, str] | None = None, generator: dict | None = None,
) -> dict:
    """Evaluate ``synthetic`` (if given) and the real-train reference against ``real_test``; see module doc.

    ``k_packets``: packets per trace used by the classifiers' features and the privacy distance;
    ``max_packets``: packets encoded per capture; ``near_copy``: DCR at or below which a trace is a near copy
    (None: the 5th percentile of the real-test DCRs); ``compliance_files``: pcaps validated per set at most
    (a class-stratified sample; None for all); ``class_map``: a ``class_map.json`` that turns synthetic ``type-N``
    labels into real labels; ``names``: what the report calls a set's source (``real_train``, ``real_test``,
    ``synthetic``) instead of its path, for callers that stage the sets in temporary folders; ``generator``: what
    made the synthetic traces (the pipeline's ``generator.json``: backend, preset, privacy mode and gate history).
    Returns the report dict; with ``out_dir`` also writes ``report.json``, ``report.md`` and ``report.html``.
    """
    clock, bar = _Clock(), _bar(progress)
    opts = {"k_packets": k_packets, "max_packets": max_packets, "seed": seed, "near_copy": near_copy,
            "compliance": run_compliance, "compliance_files": compliance_files, "layout": layout.describe(),
            "class_map": None if class_map is None else str(class_map)}
    result: dict = {"format": "netdiff-evaluation/1", "netdiff_version": __version__,
                    "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "config": opts}
    with tempfile.TemporaryDirectory(prefix="netdiff-eval-") as work:
        cache = TraceCache(Path(work), layout, bar, max_packets=max_packets)
        sets = _load(cache, {"real_train": real_train, "real_test": real_test, "synthetic": synthetic}, clock)
        if class_map is not None and "synthetic" in sets:
            sets["synthetic"] = relabel(sets["synthetic"], ClassMap.load(class_map))
        rows = {"reference": "real_train"} | ({"synthetic": "synthetic"} if "synthetic" in sets else {})
        result["inputs"] = {name: s.summary() | ({"uri": names[name]} if name in (names or {}) else {})
                            for name, s in sets.items()}
        result["classes"] = sorted(set(sets["real_test"].labels))
        result["class_coverage"] = _coverage(sets, result["classes"])
        start = time.perf_counter()
        tables = {name: extract_fields(s.traces, layout, bar(f"fields {name}")) for name, s in sets.items()}
        clock.stage("fields", start)
        dcrs = _metrics(result, sets, rows, tables, opts, clock, bar)
        start = time.perf_counter()
        result["flows"], flows = flow_section(sets, rows, FlowMeter(Path(work), max_packets), seed, bar)
        clock.stage("flows", start)
    result["summary"] = {row: headline(result, row) for row in rows}
    if generator:
        result["generator"] = generator
    if out_dir is not None:
        start = time.perf_counter()
        pics = None
        if pictures:
            from netdiff_lib.evaluate.plots import build_pictures

            order = [n for n in ("real_test", "real_train", "synthetic") if n in sets]
            pics = build_pictures({n.replace("_", "-"): sets[n].traces for n in order},
                                  {n.replace("_", "-"): tables[n] for n in order}, result, dcrs,
                                  field_names(tables["real_test"]),
                                  {n.replace("_", "-"): flows[n] for n in order if n in flows})
        clock.stage("report", start)
        result["timings_s"] = clock.total()
        write_report(result, out_dir, pics)
    else:
        result["timings_s"] = clock.total()
    return result

