"""Input stages: list the captures and plan the split and shards; encode one shard.

:func:`plan_inputs` is a pure function of the listing and ``(shards, test_fraction, seed)``.  The listing stage
runs it and hands each encode shard a small item with the plan's fingerprint; each encode shard runs it again
and checks the fingerprint.  So an encode shard's inputs are parameters only, and KFP's cache hits exactly
when the listing (object names, labels, split, shard) is unchanged, while the listing itself is never cached.
A capture replaced under the same name keeps the fingerprint: treat input prefixes as immutable, or run
without the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netdiff_lib import __version__, storage
from netdiff_lib.encoded import FLOWS, NPRINT, PAYLOADS, VALIDATION, SplitStores, save_payload_records, scan_payloads
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.stages.common import shard_count, shard_item, shard_of, write_json

if TYPE_CHECKING:
    from netdiff_lib.segment.options import TraceOptions

MANIFEST_FORMAT = "netdiff-inputs/1"


@dataclass(frozen=True)
class PlannedCapture:
    """One input capture: where it is, its label, its split, its file inside a shard and its shard."""

    uri: str
    label: str
    split: str
    dest: str  # "<split>/<label>/<file>", unique in the plan
    shard: int
    part: int = 0  # a big capture is cut by several encode pods (see split_parts): which byte range is this one's
    parts: int = 1


@dataclass(frozen=True)
class InputPlan:
    """The listing, split and shard assignment of one run's inputs."""

    input_uri: str
    shards: int
    test_fraction: float
    seed: int
    captures: tuple[PlannedCapture, ...]

    @property
    def classes(self) -> list[str]:
        return sorted({c.label for c in self.captures})

    @property
    def fingerprint(self) -> str:
        rows = [self.input_uri, self.shards, self.test_fraction, self.seed, *(asdict(c) for c in self.captures)]
        return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()

    def shard(self, index: int) -> list[PlannedCapture]:
        return [c for c in self.captures if c.shard == index]

    def to_dict(self) -> dict[str, Any]:
        counts = Counter((c.label, c.split) for c in self.captures if c.part == 0)
        return {"format": MANIFEST_FORMAT, "netdiff_version": __version__, "input_uri": self.input_uri,
                "shards": self.shards, "test_fraction": self.test_fraction, "seed": self.seed,
                "fingerprint": self.fingerprint, "classes": {lab: {s: counts[lab, s] for s in ("train", "test")}
                                                             for lab in self.classes},
                "captures": [asdict(c) for c in self.captures]}


def _check_label(label: str, uri: str) -> None:
    if not label.strip() or "/" in label or "\\" in label or label.startswith("."):
        raise ConfigError(f"{uri}: label {label!r} cannot name a folder (no '/', '\\' or leading '.')")


def plan_inputs(input_uri: str, shards: int, test_fraction: float, seed: int, split_bytes: int = 0) -> InputPlan:
    """Discover the labelled captures, split them by file (stratified, seeded) and deal them to shards; with
    ``split_bytes``, a capture larger than that is cut into parts for several shards (:func:`split_parts`)."""
    from netdiff_lib.dataset import discover, split_captures

    captures = discover(input_uri)
    for cap in captures:
        _check_label(cap.label, cap.uri)
    train, test = split_captures(captures, test_fraction, seed)
    used: set[str] = set()
    planned = []
    for split, caps in (("train", train), ("test", test)):
        for cap in caps:
            name = cap.name
            dest, i = f"{split}/{cap.label}/{name}", 1
            while dest in used:  # same file name under two folders of one label
                stem, dot, ext = name.rpartition(".")
                unique = f"{stem}-{i}{dot}{ext}" if dot else f"{name}-{i}"
                dest, i = f"{split}/{cap.label}/{unique}", i + 1
            used.add(dest)
            planned.append((cap.uri, cap.label, split, dest))
    planned.sort(key=lambda p: p[3])
    planned = split_parts(planned, split_bytes)
    n = shard_count(shards, len(planned))
    caps_out = tuple(PlannedCapture(*p[:4], shard=i % n, part=p[4], parts=p[5]) for i, p in enumerate(planned))
    return InputPlan(str(input_uri), n, float(test_fraction), int(seed), caps_out)


def split_parts(planned: list[tuple[str, ...]], split_bytes: int) -> list[tuple]:
    """``(uri, label, split, dest, part, parts)`` rows: a capture of more than ``split_bytes`` bytes (0: never) is
    cut into ``ceil(size / split_bytes)`` byte ranges, each encoded by its own pod, which emits the traces that
    start in its range (see :mod:`netdiff_lib.segment.split`; pcapng files stay whole, in part 0)."""
    out = []
    for row in planned:
        size = storage.size(row[0]) if split_bytes > 0 else 0
        parts = max(1, -(-size // split_bytes)) if split_bytes > 0 else 1
        out += [(*row, k, parts) for k in range(parts)]
    return out


def split_size(split_bytes: int, traces: str | None) -> int:
    """The split size in effect: captures are cut only when they become traces by flow, host or window."""
    mode = (traces or "file").strip().lower()
    return int(split_bytes) if split_bytes and mode != "file" else 0


def check_output(output_uri: str) -> None:
    """Fail before any work when the output's bucket is missing or the credentials are refused."""
    if storage.is_remote(output_uri):
        storage.exists(output_uri)  # raises StorageError naming the cause


def list_inputs(input_uri: str, manifest_path: str | Path, *, shards: int, test_fraction: float, seed: int,
                output_uri: str = "", s3_endpoint: str = "", split_bytes: int = 0,
                traces: str = "file") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Check that the output is reachable, plan the inputs, write the manifest (JSON) and return
    ``(shard items, artifact metadata)``; ``split_bytes`` and ``traces``: see :func:`split_size`."""
    with storage.endpoint(s3_endpoint):
        plan = plan_inputs(input_uri, shards, test_fraction, seed, split_size(split_bytes, traces))
        if output_uri:
            check_output(output_uri)
    doc = plan.to_dict()
    write_json(manifest_path, doc)
    items = [shard_item(k, plan.shards, fingerprint=plan.fingerprint, captures=len(plan.shard(k)))
             for k in range(plan.shards)]
    meta = {"format": MANIFEST_FORMAT, "input_uri": plan.input_uri, "captures": len(plan.captures),
            "classes": len(plan.classes), "shards": plan.shards, "fingerprint": plan.fingerprint}
    return items, meta


def validated(plan: InputPlan) -> set[str]:
    """The captures (``dest``) whose validator reports the evaluation's compliance section uses: per split the
    class-stratified sample of :func:`netdiff_lib.evaluate.compliance.sample_files`, the same in every shard."""
    from netdiff_lib.evaluate.compliance import MAX_FILES, sample_files

    out: set[str] = set()
    for split in ("train", "test"):
        out.update(d for d, _ in sample_files([(c.dest, c.label) for c in plan.captures
                                               if c.split == split and c.part == 0],
                                              MAX_FILES))
    return out


def encode_shard(input_uri: str, out_dir: str | Path, shard: dict[str, Any], *, test_fraction: float, seed: int,
                 max_packets: int, s3_endpoint: str = "", traces: dict[str, Any] | None = None,
                 split_bytes: int = 0) -> dict[str, Any]:
    """Fetch one shard's captures and read each once: its nPrint trace (first ``max_packets`` packets) into
    ``out_dir/nprint/<split>/<label>/<file>.npz``, its transport payloads (for the payload profile) into
    ``out_dir/payloads/...``, its flows (nfstream, when installed; whole captures only) into
    ``out_dir/flows/....json`` and, for the evaluation's sample, the validator's report into
    ``out_dir/validation/....json``; writes ``out_dir/shard.json`` and returns its summary.  The captures
    themselves are not kept: training and evaluation read these files only.

    ``traces`` (the pipeline's ``traces``, ``flow_timeout``, ``local_net``, ``labels_uri`` (label files, separated
    by commas), ``labels_tz``,
    ``unlabelled`` and ``labels_keep_going``) cuts each capture into traces, written into one trace store per split,
    ``nprint/<split>/`` (:mod:`netdiff_lib.store`); the split stays by capture.  ``split_bytes`` must be the
    listing's: a capture cut into parts is encoded part by part, each by the pod its part was given to (payloads,
    flows and validation come from part 0)."""
    import tempfile

    from netdiff_lib.evaluate.compliance import run_validator
    from netdiff_lib.evaluate.flowrecords import save_flow_records
    from netdiff_lib.evaluate.flows import FlowMeter, unavailable
    from netdiff_lib.nprint.encode import encode_pcap
    from netdiff_lib.schema import NETDIFFUSION
    from netdiff_lib.trace import save_trace

    index, count = shard_of(shard)
    out, rows = Path(out_dir), []
    with (storage.endpoint(s3_endpoint), tempfile.TemporaryDirectory(prefix="netdiff-encode-") as tmp,
          SplitStores(out / NPRINT, NETDIFFUSION, max_packets=max_packets) as stores):
        split = split_size(split_bytes, (traces or {}).get("traces"))
        plan = plan_inputs(input_uri, count, test_fraction, seed, split)
        if plan.shards != count or shard.get("fingerprint") not in (None, plan.fingerprint):
            raise InputError(input_uri, "the captures changed after they were listed (the plan's fingerprint "
                                        "differs): run the pipeline again")
        check = validated(plan)
        opts = shard_trace_options(traces, tmp)
        meter = FlowMeter(Path(tmp), max_packets) if opts is None and unavailable() is None else None
        for cap in plan.shard(index):
            local = storage.get(cap.uri, Path(tmp, cap.dest))
            if opts is not None:
                rows.append(_encode_segmented(local, cap, opts, max_packets, stores))
            else:
                try:
                    result = encode_pcap(local, NETDIFFUSION, max_packets=max_packets, label=cap.label)
                except InputError as exc:  # name the user's capture, not the fetched copy
                    raise InputError(cap.uri, exc.cause) from None
                result.trace.source, result.trace.meta["max_packets"] = cap.dest, max_packets
                save_trace(out / NPRINT / f"{cap.dest}.npz", result.trace)
            if cap.part:
                continue  # the capture's other outputs come from its part 0
            save_payload_records(out / PAYLOADS / f"{cap.dest}.npz", scan_payloads(local))
            if cap.dest in check:
                write_json(out / VALIDATION / f"{cap.dest}.json", run_validator(str(local)))
            flows = meter.records(str(local)) if meter is not None else None
            if isinstance(flows, list):  # else the evaluation counts the capture as one nfstream could not read
                save_flow_records(out / FLOWS / f"{cap.dest}.json", flows)
            if opts is None:
                rows.append({"uri": cap.uri, "label": cap.label, "split": cap.split, "file": cap.dest,
                             "packets": len(result.trace), "skipped": dict(result.skipped)})
    skipped: Counter = Counter()
    for row in rows:
        skipped.update(row["skipped"])
    summary = {"format": "netdiff-shard/2", "shard": index, "shards": count, "captures": len(rows),
               "packets": sum(r["packets"] for r in rows), "skipped_packets": dict(skipped),
               "layout": NETDIFFUSION.describe(), "max_packets": max_packets,
               "classes": dict(sorted(Counter(r["label"] for r in rows).items()))}
    if opts is not None:
        summary["traces"] = {"mode": opts.spec.text, "per_class": dict(sum((Counter(r["traces"]) for r in rows),
                                                                           Counter()))}
    write_json(out / "shard.json", {**summary, "files": rows})
    return summary


def shard_trace_options(traces: dict[str, Any] | None, tmp: str) -> TraceOptions | None:
    """The pipeline's trace parameters as options (None: one trace per capture); the label file is fetched."""
    from netdiff_lib.segment.options import make_options

    traces = dict(traces or {})
    uris = [u.strip() for u in str(traces.pop("labels_uri", "") or "").split(",") if u.strip()]
    traces["labels"] = [str(storage.get(u, Path(tmp, ".labels", str(i), u.rsplit("/", 1)[-1])))
                        for i, u in enumerate(uris)]
    keep_going = bool(traces.pop("labels_keep_going", False))
    opts = make_options(**traces, keep_going=keep_going)
    return None if opts.whole_files else opts


def _encode_segmented(local: Path, cap: PlannedCapture, opts: TraceOptions, max_packets: int,
                      stores: SplitStores) -> dict[str, Any]:
    from netdiff_lib.schema import NETDIFFUSION
    from netdiff_lib.segment import SegmentStats
    from netdiff_lib.segment.split import segment_part

    stats = SegmentStats()
    try:
        for trace in segment_part(local, opts.spec, NETDIFFUSION, part=cap.part, parts=cap.parts,
                                  max_packets=max_packets or None, label=cap.label, labels=opts.index(),
                                  unlabelled=opts.unlabelled, source=cap.dest, stats=stats, packed=True,
                                  batched=True):
            stores.add(cap.split, trace)
    except InputError as exc:  # name the user's capture, not the fetched copy
        raise InputError(cap.uri, exc.cause) from None
    return {"uri": cap.uri, "label": cap.label, "split": cap.split, "file": cap.dest, "packets": stats.in_traces,
            "skipped": dict(stats.dropped), "traces": dict(stats.traces), "part": [cap.part, cap.parts]}
