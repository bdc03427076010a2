"""Encoded data sets: labelled captures as nPrint traces plus their payload records, read once.

The pipeline's encode step writes, per capture, ``nprint/<split>/<label>/<file>.npz`` (the trace,
:func:`netdiff_lib.trace.save_trace`; when captures are cut into flow, host or window traces, all traces of a split
go into one trace store ``nprint/<split>/`` instead, :mod:`netdiff_lib.store`, :class:`SplitStores`),
``payloads/<split>/<label>/<file>.npz`` (the transport payloads the payload profile learns from,
:func:`save_payload_records`) and ``flows/<split>/<label>/<file>.json`` (its nfstream flows,
:func:`netdiff_lib.evaluate.flowrecords.save_flow_records`); training and evaluation read these and never the
captures again.  :func:`from_captures` does the same in one process, for ``netdiff train --data CAPTURES``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from netdiff_lib.atomic import atomic_path
from netdiff_lib.errors import InputError
from netdiff_lib.models.base import TrainingData
from netdiff_lib.payloads.profile import MAX_SCAN, PayloadProfile, transport_payloads
from netdiff_lib.schema import NETDIFFUSION, Layout
from netdiff_lib.trace import Trace, load_trace
from netdiff_lib.tracesource import ArrayFolderSource

if TYPE_CHECKING:
    from netdiff_lib.segment import SegmentStats
    from netdiff_lib.segment.options import TraceOptions
    from netdiff_lib.store import StoreSource, StoreWriter

NPRINT = "nprint"
PAYLOADS = "payloads"
VALIDATION = "validation"
FLOWS = "flows"
RECORDS_FORMAT = "netdiff-payload-records/1"
Record = tuple[str, int, int, bytes]


def save_payload_records(path: str | Path, records: Sequence[Record]) -> Path:
    """Write transport payloads ``(l4, sport, dport, payload)`` compactly (``.npz``), atomically."""
    data = [r[3] for r in records]
    offsets = np.zeros(len(records) + 1, np.int64)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    arrays = {"tcp": np.array([r[0] == "tcp" for r in records], bool),
              "ports": np.array([(r[1], r[2]) for r in records], np.uint16).reshape(-1, 2),
              "offsets": offsets, "data": np.frombuffer(b"".join(data), np.uint8),
              "header": np.frombuffer(json.dumps({"format": RECORDS_FORMAT}).encode(), np.uint8)}
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return Path(path)


def load_payload_records(path: str | Path) -> list[Record]:
    """Read a file written by :func:`save_payload_records`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(bytes(z["header"]).decode()).get("format") != RECORDS_FORMAT:
                raise ValueError(f"format {RECORDS_FORMAT!r} expected")
            tcp, ports, offsets, data = z["tcp"], z["ports"], z["offsets"], z["data"].tobytes()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"not a payload-record file ({exc})") from None
    return [("tcp" if t else "udp", int(p[0]), int(p[1]), data[offsets[i]:offsets[i + 1]])
            for i, (t, p) in enumerate(zip(tcp, ports, strict=True))]


def scan_payloads(path: str | Path) -> list[Record]:
    """The non-empty transport payloads of a capture that a payload profile learns from."""
    return [r for r in transport_payloads(path, MAX_SCAN) if r[3]]


def _files(root: Path) -> list[tuple[str, Path]]:
    if not root.is_dir():
        return []
    out = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*.npz") if p.is_file()]
    return sorted((rel, p) for rel, p in out if not any(part.startswith(".") for part in rel.split("/")))


def encoded_files(dirs: Sequence[str | Path], split: str) -> list[tuple[str, Path]]:
    """``(<label>/<file>.npz, path)`` of every encoded trace of ``split`` in the encode outputs ``dirs``."""
    return sorted(f for d in dirs for f in _files(Path(d) / NPRINT / split))


def encoded_stores(dirs: Sequence[str | Path], split: str) -> list[Path]:
    """The trace stores (``nprint/<split>/``) of ``split`` in the encode outputs ``dirs``."""
    from netdiff_lib.store import is_store

    return [Path(d) / NPRINT / split for d in dirs if is_store(Path(d) / NPRINT / split)]


def iter_encoded(dirs: Sequence[str | Path], split: str) -> Iterator[tuple[str, Trace]]:
    """``(<label>/<name>, trace)`` of every encoded trace of ``split``: array files, then trace-store traces (named
    as array files of cut traces are, ``<label>/<capture file>_<n>``)."""
    from netdiff_lib.segment.spec import safe_name
    from netdiff_lib.store import open_store
    from netdiff_lib.tracesource import iter_traces

    for rel, path in encoded_files(dirs, split):
        yield rel.removesuffix(".npz"), load_trace(path)
    for root in encoded_stores(dirs, split):
        seen: Counter = Counter()
        with open_store(root) as source:
            for trace in iter_traces(source):
                seen[trace.source] += 1
                name = str(trace.source or "trace").rsplit("/", 1)[-1]
                yield f"{safe_name(str(trace.label))}/{name}_{seen[trace.source]:05d}", trace


class SplitStores:
    """One trace store per split under ``root`` (``root/<split>/``), each opened at its split's first trace; a
    context manager that closes them all (or, on an error, removes what they wrote)."""

    def __init__(self, root: str | Path, layout: Layout, **meta: Any) -> None:
        self.root, self.layout, self.meta = Path(root), layout, meta
        self.writers: dict[str, StoreWriter] = {}

    def add(self, split: str, trace: Trace) -> None:
        from netdiff_lib.store import StoreWriter

        if split not in self.writers:
            self.writers[split] = StoreWriter(self.root / split, self.layout, meta=self.meta)
        self.writers[split].add(trace)

    def __enter__(self) -> SplitStores:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        for w in self.writers.values():
            if exc_type is None:
                w.close()
            else:
                w.abort()


def training_data_from_store(source: StoreSource, *, name: str, payloads: PayloadProfile | None = None,
                             max_packets: int = 0) -> TrainingData:
    """:class:`TrainingData` streamed from a trace store, with the store's content fingerprint (no packet is read
    for it)."""
    given = [int(m.get("max_packets") or 0) for m in source.metas]
    return TrainingData([], dataset=source, source=name,
                        max_packets=max([max_packets, *given]) or int(source.lengths.max()),
                        captures=len(set(source.sources)), fingerprint=source.fingerprint, payloads=payloads)


def _profile(dirs: Sequence[str | Path], split: str) -> PayloadProfile:
    def records() -> Iterator[tuple[str, list[Record]]]:
        for d in dirs:
            for rel, p in _files(Path(d) / PAYLOADS / split):
                yield rel.split("/", 1)[0], load_payload_records(p)
    return PayloadProfile.fit_records(records())


def load_split(dirs: Sequence[str | Path], split: str, *, payloads: bool = True) -> TrainingData:
    """The ``split`` (``train``/``test``) of the encode outputs ``dirs`` as :class:`TrainingData`, with the payload
    profile learned from the same captures' payload records when ``payloads``.  The traces stay on disk: array
    files through an :class:`~netdiff_lib.tracesource.ArrayFolderSource`, trace stores (captures cut into traces)
    through :func:`training_data_from_store`; both are read as training needs them."""
    from netdiff_lib.store import open_store

    files, stores = encoded_files(dirs, split), encoded_stores(dirs, split)
    if not files and not stores:
        raise InputError(dirs[0] if dirs else split, f"no encoded {split} traces in {len(dirs)} encode output(s)")
    name = ", ".join(str(d) for d in dirs)
    profile = _profile(dirs, split) if payloads else None
    if stores and not files:
        return training_data_from_store(open_store(stores), name=name, payloads=profile)
    if files and not stores:
        source = ArrayFolderSource(paths=[p for _, p in files])
        return TrainingData(dataset=source, source=name, max_packets=source.max_packets, captures=len(files),
                            payloads=profile)
    traces = [t for _, t in iter_encoded(dirs, split)]  # both kinds: a small mixed set, read into memory
    max_packets = max(int(t.meta.get("max_packets", len(t))) for t in traces)
    return TrainingData(traces, source=name, max_packets=max_packets,
                        captures=len(files) + len({t.source for t in traces[len(files):]}), payloads=profile)


def capture_traces(path: str | Path, label: str, layout: Layout, max_packets: int | None,
                   traces: TraceOptions | None = None, stats: SegmentStats | None = None) -> list[Trace]:
    """A capture's traces: the whole capture (first ``max_packets`` packets), or as ``traces`` cuts it."""
    from netdiff_lib.nprint.encode import encode_pcap
    from netdiff_lib.segment import segment_capture

    if traces is None or traces.whole_files:
        return [encode_pcap(path, layout, max_packets=max_packets, label=label).trace]
    return list(segment_capture(path, traces.spec, layout, max_packets=max_packets, label=label,
                                labels=traces.index(), unlabelled=traces.unlabelled, stats=stats))


def _encode_one(job: tuple[str, str, Layout, int, TraceOptions | None]) -> tuple[list[Trace], list[Record],
                                                                               SegmentStats]:
    from netdiff_lib.segment import SegmentStats
    from netdiff_lib.storage import open_local

    uri, label, layout, max_packets, traces = job
    stats = SegmentStats()
    with open_local(uri) as path:
        return capture_traces(path, label, layout, max_packets, traces, stats), scan_payloads(path), stats


def from_captures(uri: str, max_packets: int, *, workers: int = 1, layout: Layout = NETDIFFUSION,
                  traces: TraceOptions | None = None, stats: SegmentStats | None = None) -> TrainingData:
    """Discover the labelled captures under ``uri``, encode each once (first ``max_packets`` packets, or cut
    into traces as ``traces`` says; counts into ``stats``) and learn the payload profile from the same pass."""
    from netdiff_lib.dataset import discover

    captures = discover(uri)
    if not captures:
        raise InputError(uri, "no captures found (expected <label>/*.pcap)")
    if traces is not None:
        traces.index()  # a bad label file fails before any capture is read
    jobs = [(c.uri, c.label, layout, max_packets, traces) for c in captures]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            done: list[Any] = list(pool.map(_encode_one, jobs, chunksize=4))
    else:
        done = [_encode_one(j) for j in jobs]
    profile = PayloadProfile.fit_records((c.label, recs) for c, (_, recs, _) in zip(captures, done, strict=True))
    for _, _, part in done:
        if stats is not None:
            stats.update(part)
    traces_out = [t for ts, _, _ in done for t in ts if len(t)]
    if not traces_out:
        raise InputError(uri, "no capture held a packet the encoder keeps")
    return TrainingData(traces_out, source=str(uri), max_packets=max_packets, captures=len(captures), payloads=profile)
