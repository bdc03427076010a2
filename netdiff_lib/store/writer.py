"""Writing a trace store: traces go into shard files rolled at a packet or byte size, each written atomically.

A store is a folder (or ``s3://`` prefix) holding ``shard-NNNNN.nts`` files (many traces each: the packed rows of
:mod:`netdiff_lib.store.codec`, timestamps, per-trace offsets, labels, sources and meta), ``index.nts`` (every
trace's length, label and source, so a reader knows them without opening a shard) and ``store.json``, written last:
the shards' sizes and sha256 digests and the store's content fingerprint.  A folder without ``store.json`` is not
a store, so a writer that fails part way leaves nothing a reader would take for one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from netdiff_lib import storage
from netdiff_lib.atomic import write_json
from netdiff_lib.errors import InputError
from netdiff_lib.schema import Layout
from netdiff_lib.store.codec import (
    PackedRows,
    PackedTrace,
    PackedTraces,
    byte_offsets,
    check_values,
    pack_rows,
    row_plan,
)
from netdiff_lib.store.container import STORE_FORMAT, write_container
from netdiff_lib.trace import Trace

INDEX_JSON = "store.json"
INDEX_FILE = "index.nts"
SHARD_SUFFIX = ".nts"
#: Default shard roll sizes: whichever comes first.
SHARD_PACKETS = 1 << 20
SHARD_BYTES = 64 << 20
#: Rows packed at a time (traces added are packed together once this many rows wait).
PACK_ROWS = 16384


def shard_name(i: int) -> str:
    return f"shard-{i:05d}{SHARD_SUFFIX}"


def store_fingerprint(layout: Layout, digests: list[str]) -> str:
    """sha256 over the format, the layout and the shards' digests in order: what a store holds, traces and labels
    included, known without reading a packet."""
    return hashlib.sha256(json.dumps([STORE_FORMAT, layout.to_dict(), digests]).encode()).hexdigest()


def _coded(values: list[str | None]) -> tuple[list[str | None], np.ndarray]:
    """The distinct values (in order of appearance) and each value's index among them."""
    vocab: dict[str | None, int] = {}
    codes = np.array([vocab.setdefault(v, len(vocab)) for v in values], np.int32)
    return list(vocab), codes


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _split_meta(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """``meta_common`` (the items every trace has alike, e.g. the trace mode) and ``meta`` (the rest, per trace)."""
    common = {k: v for k, v in metas[0].items() if all(k in m and m[k] == v for m in metas[1:])}
    return {"meta_common": common, "meta": [{k: v for k, v in m.items() if k not in common} for m in metas]}


class _Columns:
    """What a shard keeps of traces once their rows are packed (not their int8 matrices), per trace in lists."""

    def __init__(self, items: list[Trace | PackedTrace | PackedTraces]) -> None:
        self.lengths: list[int] = []
        self.ts: list[np.ndarray] = []  # times, every trace's (zeros for a trace without), back to back
        self.has_ts: list[bool] = []
        self.labels: list[str | None] = []
        self.sources: list[str | None] = []
        self.metas: list[dict[str, Any]] = []
        for t in items:
            if type(t) is PackedTraces:
                n = len(t)
                self.lengths += t.lengths.tolist()
                self.ts.append(t.ts_ns)
                self.has_ts += [True] * n
                self.labels += t.labels
                self.sources += [t.source] * n
                self.metas += t.metas
            else:
                self.lengths.append(len(t))
                self.ts.append(t.ts_ns if t.ts_ns is not None else np.zeros(len(t), np.int64))
                self.has_ts.append(t.ts_ns is not None)
                self.labels.append(t.label)
                self.sources.append(t.source)
                self.metas.append(t.meta)


class StoreWriter:
    """Write traces of one ``layout`` into a store at ``dest`` (a folder, created, or an ``s3://`` prefix: shards
    are then staged in a temporary folder and uploaded as they roll, ``store.json`` last).

    Use as a context manager (an exception removes what was written locally) or call :meth:`close`.
    """

    def __init__(self, dest: str | Path, layout: Layout, *, shard_packets: int = SHARD_PACKETS,
                 shard_bytes: int = SHARD_BYTES, meta: dict[str, Any] | None = None) -> None:
        if shard_packets < 1 or shard_bytes < 1:
            raise ValueError("shard sizes must be >= 1")
        self.dest, self.layout, self.plan = str(dest), layout, row_plan(layout)
        self.remote = storage.is_remote(dest)
        self.dir = Path(tempfile.mkdtemp(prefix="netdiff-store-")) if self.remote else Path(dest)
        if not self.remote and (self.dir / INDEX_JSON).is_file():  # rewriting a store: the old one goes first
            (self.dir / INDEX_JSON).unlink()
            for old in [self.dir / INDEX_FILE, *self.dir.glob(f"shard-*{SHARD_SUFFIX}")]:
                old.unlink(missing_ok=True)
        self.shard_packets, self.shard_bytes, self.meta = shard_packets, shard_bytes, dict(meta or {})
        self.shards: list[dict[str, Any]] = []
        self._raw: list[Trace | PackedTrace | PackedTraces] = []  # added, not yet packed (all of one kind)
        self._raw_packed = False  # whether those are PackedTrace(s) (rows packed already)
        self._chunks: list[tuple[_Columns, PackedRows]] = []  # packed, not yet in a shard
        self._raw_packets = self._raw_traces = self._pending_packets = self._pending_bytes = 0
        self._lengths, self._label_codes, self._source_codes = array("q"), array("i"), array("i")
        self._labels: dict[str, int] = {}
        self._sources: dict[str, int] = {}
        self._written: list[Path] = []
        self.closed = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def traces(self) -> int:
        return len(self._lengths)

    @property
    def packets(self) -> int:
        return int(sum(s["packets"] for s in self.shards)) + self._pending_packets

    def add(self, trace: Trace | PackedTrace | PackedTraces) -> None:
        """Append one trace (its layout must be the store's; its values -1, 0 or 1).  A :class:`PackedTrace` (the
        trace builders' rows for a store) is written as it is, without expanding its rows; so are
        :class:`PackedTraces` (several traces, in order): the store is the same as from one trace at a time."""
        if self.closed:
            raise ValueError("the store writer is closed")
        if trace.layout is not self.layout and trace.layout != self.layout:
            raise ValueError(f"trace layout {trace.layout.describe()} differs from the store's "
                             f"{self.layout.describe()}")
        if type(trace) is PackedTraces:
            self._add_many(trace)
            return
        packed = type(trace) is PackedTrace
        if not packed:
            check_values(trace.matrix)
        if packed != self._raw_packed:
            self._pack()
            self._raw_packed = packed
        self._raw.append(trace)
        n = len(trace)
        self._raw_traces += 1
        self._raw_packets += n
        self._pending_packets += n
        self._lengths.append(n)
        label, source = str(trace.label), str(trace.source or "")
        labels, sources = self._labels, self._sources
        self._label_codes.append(labels[label] if label in labels else labels.setdefault(label, len(labels)))
        self._source_codes.append(sources[source] if source in sources else sources.setdefault(source, len(sources)))
        if self._raw_packets >= PACK_ROWS:
            self._pack()
        if self._pending_packets >= self.shard_packets or self._pending_bytes >= self.shard_bytes:
            self._flush()

    def _add_many(self, batch: PackedTraces) -> None:
        """:meth:`add` for each trace of ``batch``, a run of traces at a time: up to where one trace at a time would
        have packed the waiting rows or rolled the shard."""
        if not len(batch):
            return
        if not self._raw_packed:
            self._pack()
            self._raw_packed = True
        ends = np.cumsum(batch.lengths)
        i, n = 0, len(batch)
        while i < n:
            base = int(ends[i - 1]) if i else 0
            j = n - 1 if self._pending_bytes < self.shard_bytes else i  # a byte roll is due at the next trace
            for room in (PACK_ROWS - self._raw_packets, self.shard_packets - self._pending_packets):
                j = min(j, int(np.searchsorted(ends, base + room, "left")))
            part = batch.part(i, j + 1) if (i, j) != (0, n - 1) else batch
            rows = int(ends[j]) - base
            self._raw.append(part)
            self._raw_traces += len(part)
            self._raw_packets += rows
            self._pending_packets += rows
            self._lengths.frombytes(part.lengths.astype(np.int64).tobytes())
            labels, sources = self._labels, self._sources
            self._label_codes.extend([labels[x] if x in labels else labels.setdefault(x, len(labels))
                                      for x in map(str, part.labels)])
            source = str(part.source or "")
            code = sources[source] if source in sources else sources.setdefault(source, len(sources))
            self._source_codes.extend([code] * len(part))
            if self._raw_packets >= PACK_ROWS:
                self._pack()
            if self._pending_packets >= self.shard_packets or self._pending_bytes >= self.shard_bytes:
                self._flush()
            i = j + 1

    def _pack(self) -> None:
        """Encode the traces added since the last call, all rows at once (a flow trace is a few rows)."""
        if not self._raw:
            return
        if self._raw_packed:
            none = np.zeros((0, self.plan.nbytes), np.uint8)
            packed = PackedRows(_joined([t.counts for t in self._raw]), _joined([t.data for t in self._raw]),
                                np.zeros(0, np.int64), none, none)
        else:
            rows = _joined([t.matrix for t in self._raw])
            packed = pack_rows(rows, self.plan, check=False)
        self._chunks.append((_Columns(self._raw), packed))  # the matrices (1,088 bytes a row) need not wait
        self._pending_bytes += (packed.data.nbytes + packed.counts.nbytes + 2 * packed.fb_values.nbytes
                                + 8 * len(packed.counts) + 64 * self._raw_traces)
        self._raw, self._raw_packets, self._raw_traces = [], 0, 0

    def _flush(self) -> None:
        self._pack()
        if not self._chunks:
            return
        cols = [c for c, _ in self._chunks]
        lengths = [n for c in cols for n in c.lengths]
        packed = [p for _, p in self._chunks]
        rows = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=rows[1:])
        first = np.cumsum([0] + [len(p.counts) for p in packed])
        counts = np.concatenate([p.counts for p in packed])
        width = self.plan.nbytes
        arrays = {
            "trace_rows": rows, "trace_bytes": byte_offsets(counts)[rows],
            "has_ts": np.array([h for c in cols for h in c.has_ts], bool),
            "ts_ns": np.concatenate([np.zeros(0, np.int64)] + [t for c in cols for t in c.ts]),
            "counts": counts,
            "data": np.concatenate([p.data for p in packed]),
            "fb_rows": np.concatenate([p.fb_rows + first[i] for i, p in enumerate(packed)]),
            "fb_values": np.concatenate([np.zeros((0, width), np.uint8)] + [p.fb_values for p in packed]),
            "fb_present": np.concatenate([np.zeros((0, width), np.uint8)] + [p.fb_present for p in packed]),
        }
        labels, arrays["label_codes"] = _coded([x for c in cols for x in c.labels])
        sources, arrays["source_codes"] = _coded([x for c in cols for x in c.sources])
        header = {"kind": "shard", "layout": self.layout.to_dict(), "traces": len(lengths), "packets": int(rows[-1]),
                  "labels": labels, "sources": sources, **_split_meta([m for c in cols for m in c.metas])}
        name = shard_name(len(self.shards))
        size, sha = self._write(name, header, arrays)
        self.shards.append({"name": name, "bytes": size, "sha256": sha, "traces": len(lengths),
                            "packets": int(rows[-1])})
        self._chunks, self._pending_packets, self._pending_bytes = [], 0, 0

    def _write(self, name: str, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[int, str]:
        path = self.dir / name
        out = write_container(path, header, arrays)
        self._written.append(path)
        if self.remote:
            storage.put(path, storage.join(self.dest, name))
            path.unlink()
        return out

    def close(self) -> dict[str, Any]:
        """Write the last shard, the index and ``store.json``; returns what ``store.json`` says.  A store without
        a trace is refused (:class:`InputError`) and nothing is left."""
        if self.closed:
            raise ValueError("the store writer is closed")
        try:
            if not self.traces:
                raise InputError(self.dest, "no trace to store (an empty trace store is refused)")
            self._flush()
            header = {"kind": "index", "layout": self.layout.to_dict(), "labels": list(self._labels),
                      "sources": list(self._sources)}
            arrays = {"lengths": np.frombuffer(self._lengths, np.int64),
                      "label_codes": np.frombuffer(self._label_codes, np.int32),
                      "source_codes": np.frombuffer(self._source_codes, np.int32),
                      "shard_traces": np.array([s["traces"] for s in self.shards], np.int64)}
            size, sha = self._write(INDEX_FILE, header, arrays)
            doc = {"format": STORE_FORMAT, "layout": self.layout.to_dict(), "traces": self.traces,
                   "packets": self.packets, "labels": sorted(self._labels),
                   "index": {"name": INDEX_FILE, "bytes": size, "sha256": sha}, "shards": self.shards,
                   "fingerprint": store_fingerprint(self.layout, [s["sha256"] for s in self.shards]),
                   "meta": self.meta}
            self._publish(doc)
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return doc

    def _publish(self, doc: dict[str, Any]) -> None:
        write_json(self.dir / INDEX_JSON, doc)
        if self.remote:
            storage.put(self.dir / INDEX_JSON, storage.join(self.dest, INDEX_JSON))
            shutil.rmtree(self.dir, ignore_errors=True)

    def abort(self) -> None:
        """Remove the files written so far (uploaded shards of an ``s3://`` store stay, without a ``store.json``
        no reader takes them for a store)."""
        self.closed = True
        for path in self._written:
            path.unlink(missing_ok=True)
        if self.remote:
            shutil.rmtree(self.dir, ignore_errors=True)
