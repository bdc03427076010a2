"""Trace sets for the evaluation: captures found under a folder or object-store prefix, encoded once each.

:func:`load_trace_set` discovers the labelled captures (:func:`netdiff_lib.dataset.discover`), fetches
object-store ones into a work folder, encodes every capture once into a :class:`~netdiff_lib.trace.Trace`
(first ``max_packets`` packets) and keeps the traces in memory; every metric then works on the same traces.
A capture that cannot be read is recorded (path and cause), not fatal; an empty trace is counted and dropped.
A :class:`TraceSet` can also wrap traces that are already in memory (tests, a generator in the same process).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netdiff_lib.dataset import ClassMap, discover
from netdiff_lib.errors import InputError, NetdiffError
from netdiff_lib.schema import NETDIFFUSION, Layout
from netdiff_lib.trace import Trace

TYPE_NAME = re.compile(r"type-\d+")


@dataclass
class TraceSet:
    """Traces of one role (real-train, real-test, synthetic) and where they came from."""

    name: str
    traces: list[Trace]
    uri: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)  # (local pcap path, label) per kept trace
    failed: list[dict] = field(default_factory=list)  # {"uri", "cause"} per capture that could not be read
    reports: dict[str, dict] = field(default_factory=dict)  # validator reports made earlier, by file
    flows: dict[str, list[dict]] = field(default_factory=dict)  # flow records metered earlier, by file
    empty: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def labels(self) -> list[str]:
        return [str(t.label) for t in self.traces]

    def summary(self) -> dict:
        """What the report says about the set: sizes, class counts and problems."""
        return {
            "uri": self.uri,
            "traces": len(self.traces),
            "packets": int(sum(len(t) for t in self.traces)),
            "classes": dict(sorted(Counter(self.labels).items())),
            "failed": self.failed,
            "empty_traces": self.empty,
            "skipped_packets": dict(self.skipped),
        }


def _local(uri: str, workdir: Path) -> str:
    """A local path for a capture URI (object-store captures are fetched into ``workdir``)."""
    from netdiff_lib import storage

    if not storage.is_remote(uri):
        return uri.removeprefix("file://")
    dest = workdir / hashlib.sha1(uri.encode()).hexdigest()[:16] / uri.rstrip("/").rsplit("/", 1)[-1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    return str(storage.get(uri, dest))


def load_trace_set(name: str, uri: str, workdir: Path, *, layout: Layout = NETDIFFUSION,
                   max_packets: int | None = 1024, progress: Callable | None = None) -> TraceSet:
    """Discover, fetch and encode every capture under ``uri``."""
    from netdiff_lib.nprint.encode import encode_pcap

    captures = discover(uri)
    if not captures:
        raise InputError(uri, "no captures found")
    out = TraceSet(name, [], uri=str(uri))
    for cap in progress(captures) if progress else captures:
        try:
            local = _local(cap.uri, workdir)
            result = encode_pcap(local, layout, max_packets=max_packets, label=cap.label)
        except (NetdiffError, OSError, ValueError) as exc:
            out.failed.append({"uri": cap.uri, "cause": str(getattr(exc, "cause", exc))})
            continue
        out.skipped.update(result.skipped)
        if len(result.trace) == 0:
            out.empty += 1
            continue
        out.traces.append(result.trace)
        out.files.append((local, str(cap.label)))
    if not out.traces:
        raise InputError(uri, f"no capture gave a trace ({len(out.failed)} unreadable, {out.empty} empty)")
    return out


def in_memory(name: str, traces: Sequence[Trace], layout: Layout = NETDIFFUSION) -> TraceSet:
    """Wrap traces that are already encoded (converted to ``layout``); their ``source`` files, when they all
    exist, feed the validator."""
    traces = [t if t.layout == layout else t.with_layout(layout) for t in traces if len(t)]
    files = [(t.source, str(t.label)) for t in traces if t.source and Path(t.source).is_file()]
    return TraceSet(name, traces, files=files if len(files) == len(traces) else [])


def encoded_trace_set(name: str, dirs: Sequence[str | Path], split: str) -> TraceSet:
    """The ``split`` of the pipeline's encode outputs ``dirs`` (:mod:`netdiff_lib.encoded`): the traces, the
    validator reports the encode step made for the compliance sample and its flow records (no capture is read
    again)."""
    from netdiff_lib.atomic import read_json
    from netdiff_lib.encoded import FLOWS, VALIDATION, encoded_files, encoded_stores, iter_encoded
    from netdiff_lib.evaluate.flowrecords import load_flow_records

    if not encoded_files(dirs, split) and not encoded_stores(dirs, split):
        raise InputError(dirs[0] if dirs else split, f"no encoded {split} traces")
    out = TraceSet(name, [], uri=f"{split} split of the encoded inputs")
    for d in dirs:
        root = Path(d) / VALIDATION / split
        for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
            out.reports[f"{split}/{path.relative_to(root).as_posix().removesuffix('.json')}"] = read_json(path)
        root = Path(d) / FLOWS / split
        for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
            out.flows[f"{split}/{path.relative_to(root).as_posix().removesuffix('.json')}"] = load_flow_records(path)
    for rel, trace in iter_encoded(dirs, split):  # array files and trace stores
        if len(trace) == 0:
            out.empty += 1
            continue
        out.traces.append(trace)
        out.files.append((f"{split}/{rel}", str(trace.label)))
    return out


def relabel(trace_set: TraceSet, class_map: ClassMap) -> TraceSet:
    """Translate NetDiffusion class names (``type-N``) to labels with a class map; other labels stay."""

    def label(old: str) -> str:
        return class_map.label_of_type(old) if TYPE_NAME.fullmatch(old) else old

    traces = [dataclasses.replace(t, label=label(str(t.label))) for t in trace_set.traces]
    files = [(path, label(lab)) for path, lab in trace_set.files]
    return dataclasses.replace(trace_set, traces=traces, files=files)


class TraceCache:
    """Encode each URI once per evaluation, whatever roles it plays.

    ``bar(desc)`` makes the progress wrapper of a set's encoding; ``load_kwargs`` go to :func:`load_trace_set`.
    """

    def __init__(self, workdir: Path, layout: Layout = NETDIFFUSION, bar: Callable | None = None,
                 **load_kwargs) -> None:
        self.workdir = workdir
        self.layout = layout
        self.bar = bar
        self.load_kwargs = load_kwargs
        self._sets: dict[str, TraceSet] = {}

    def get(self, name: str, source: str | Path | Sequence[Trace] | TraceSet) -> TraceSet:
        if isinstance(source, TraceSet):
            return dataclasses.replace(source, name=name)
        if not isinstance(source, (str, Path)):
            return in_memory(name, source, self.layout)
        key = str(source).rstrip("/")
        if key not in self._sets:
            progress = self.bar(f"encoding {name}") if self.bar else None
            self._sets[key] = load_trace_set(name, str(source), self.workdir, layout=self.layout,
                                             progress=progress, **self.load_kwargs)
        return dataclasses.replace(self._sets[key], name=name)
