"""Protocol compliance: what the protocol validator (tshark where present) says about a set of pcaps.

:func:`run_validator` is the only place that knows the validator's interface
(``netdiff_lib.validate.validate_pcap(path) -> FileReport``); everything else works on plain dicts with ``packets``
and the :data:`COUNTS` per file (``failed``: packets with at least one failure). Rates are per packet, pooled, per
class and macro-averaged over classes; ``pass_rate`` is the share of files without an invalid packet;
``application``: packets whose application layer fails (every dissector on) while the headers pass; ``offload``:
packets that fail only on TCP/UDP checksums left to the network card (captured on the sending host), and
``invalid``: ``failed`` without them (what ``netdiff validate`` fails by default);
``protocol_mix``: the share of packets per top protocol (tshark's last dissected layer). A file the validator cannot
read counts as a failed file with no packets. Large sets are sampled (``max_files``, evenly over classes,
deterministically) because the validator runs one process per file. Without a validator the section says so instead
of failing.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from netdiff_lib.errors import NetdiffError
from netdiff_lib.evaluate.fidelity import nanmean

COUNTS: tuple[str, ...] = ("malformed", "expert_errors", "bad_checksums", "application", "failed", "checksum_only",
                           "offload")
#: pcaps validated per set by default (a class-stratified sample): tshark runs twice per file, ~0.4 s each on a
#: busy core, so 25 files keep the demo's evaluation under half a minute; ``--compliance-files 0`` validates all.
MAX_FILES = 25


def run_validator(path: str) -> dict:
    """Validate one pcap: ``packets``, the :data:`COUNTS` and ``tool``. Raises ImportError without a validator."""
    from netdiff_lib.validate import validate_pcap

    try:
        report = dataclasses.asdict(validate_pcap(path))
    except NetdiffError as exc:
        return {"packets": 0, **dict.fromkeys(COUNTS, 0), "tool": None, "error": str(exc), "protocols": {}}
    return {k: report.get(k, 0) for k in ("packets", *COUNTS)} | {"tool": report.get("tool"),
                                                                 "protocols": report.get("protocols", {})}


def sample_files(files: Sequence[tuple[str, str]], max_files: int | None) -> list[tuple[str, str]]:
    """At most ``max_files`` of ``(path, label)`` files, taken round-robin over classes in path order."""
    if not max_files or len(files) <= max_files:
        return list(files)
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for f in sorted(files):
        by_label[f[1]].append(f)
    queues = [by_label[k] for k in sorted(by_label)]
    out: list[tuple[str, str]] = []
    i = 0
    while len(out) < max_files:
        out += [q[i] for q in queues if i < len(q)][: max_files - len(out)]
        i += 1
    return out


def _invalid(report: dict) -> int:
    """Failing packets of one file report, checksum offload apart."""
    return int(report["failed"] or 0) - int(report.get("offload") or 0)


def _rates(reports: Sequence[dict]) -> dict:
    packets = sum(int(r["packets"] or 0) for r in reports)
    out: dict = {"files": len(reports), "packets": packets,
                 "unreadable_files": sum(1 for r in reports if r.get("error")),
                 "pass_rate": (sum(1 for r in reports if not _invalid(r) and not r.get("error")) / len(reports)
                               if reports else math.nan)}
    for key in COUNTS:
        total = sum(int(r.get(key) or 0) for r in reports)
        out[key] = total
        out[f"{key}_rate"] = total / packets if packets else math.nan
    out["invalid"] = out["failed"] - out["offload"]  # what `netdiff validate` fails by default
    out["invalid_rate"] = out["invalid"] / packets if packets else math.nan
    mix: Counter = Counter()
    for r in reports:
        mix.update(r.get("protocols") or {})
    out["protocol_mix"] = {k: v / packets for k, v in sorted(mix.items())} if packets else {}
    return out


def offload_note(rates: dict, what: str = "packets") -> str | None:
    """A sentence explaining failures that are only bad checksums, when they are at least half of all failures:
    captures taken on the sending host (loopback, or a NIC with checksum offload) hold checksums that the
    hardware would have filled in, so validators flag them although the traffic is fine."""
    only, failed = rates.get("offload_rate", rates.get("checksum_only_rate")), rates.get("failed_rate")
    if not only or not failed or not math.isfinite(only) or only < failed / 2:
        return None
    return (f"{only:.1%} of {what} fail only on checksums left to the network card (checksum offload): they were "
            f"captured on the sending host; valid, not counted as invalid ({max(failed - only, 0.0):.1%} fail for "
            "another reason).")


def mix_jsd(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen-Shannon divergence (base 2) between two protocol mixes (NaN when either is empty)."""
    from netdiff_lib.evaluate.distances import jsd

    keys = sorted(set(p) | set(q))
    if not p or not q:
        return math.nan
    return jsd(np.array([p.get(k, 0.0) for k in keys]), np.array([q.get(k, 0.0) for k in keys]))


def summarise(reports: Sequence[dict], labels: Sequence[str]) -> dict:
    """Pooled, per-class and macro-averaged per-packet rates of validator reports."""
    classes = sorted(set(labels))
    per_class = {c: _rates([r for r, lab in zip(reports, labels, strict=True) if lab == c]) for c in classes}
    keys = [f"{k}_rate" for k in COUNTS] + ["pass_rate"]
    return {
        "available": True,
        "tool": next((r.get("tool") for r in reports if r.get("tool")), None),
        "all": _rates(reports),
        "per_class": per_class,
        "macro": {k: nanmean(p[k] for p in per_class.values()) for k in keys},
        "errors": [{"path": r.get("path"), "cause": r["error"]} for r in reports if r.get("error")][:20],
    }


def compliance(files: Sequence[tuple[str, str]], max_files: int | None = MAX_FILES,
               progress: Callable | None = None, workers: int | None = None,
               known: Mapping[str, dict] | None = None) -> dict:
    """Validate ``(path, label)`` pcaps (a sample of ``max_files``) and summarise; ``available: False`` and a
    reason when it cannot run. ``known``: reports made earlier (by path), used instead of validating again."""
    if not files:
        return {"available": False, "reason": "no pcap files (traces were given in memory)"}
    try:
        import netdiff_lib.validate  # noqa: F401
    except ImportError as exc:
        return {"available": False, "reason": f"no protocol validator: {exc}"}
    chosen = sample_files(files, max_files)
    paths = [p for p, _ in chosen]
    known = known or {}
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda p: known[p] if p in known else run_validator(p), paths)
        reports = [r | {"path": p} for p, r in zip(paths, progress(results) if progress else results, strict=True)]
    out = summarise(reports, [lab for _, lab in chosen])
    out["sampled"] = {"files": len(chosen), "of": len(files)}
    return out


def application_section(by_set: dict[str, dict]) -> dict:
    """The application-layer section from the compliance summaries of ``real_test``, ``real_train`` and
    ``synthetic`` (those present): per set the share of packets tshark flags, the share with a failing
    application layer and the protocol mix; the mix JSD of real-train (the floor) and synthetic vs real-test."""
    sets = {name: {"flagged_rate": c["all"]["failed_rate"], "application_rate": c["all"]["application_rate"],
                   "protocol_mix": c["all"]["protocol_mix"]}
            for name, c in by_set.items() if c.get("available")}
    test = sets.get("real_test", {}).get("protocol_mix", {})
    rows = {"reference": "real_train", "synthetic": "synthetic"}
    return {"sets": sets, "mix_jsd": {row: mix_jsd(sets[src]["protocol_mix"], test) for row, src in rows.items()
                                      if src in sets}}
