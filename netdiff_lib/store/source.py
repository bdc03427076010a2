"""Reading a trace store: :class:`StoreSource`, a :class:`~netdiff_lib.tracesource.TraceSource` over one or more
stores in local folders or under ``s3://`` prefixes.

Opening reads ``store.json`` and ``index.nts`` only: every trace's label, source and length are then known.
:meth:`StoreSource.read` loads the shards that hold the traces asked for, one at a time, checking each against
the digest ``store.json`` recorded; shards of an object store are downloaded into a local cache folder bounded in
bytes (the least recently used shard goes first), so the data set is never held whole, in memory or on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netdiff_lib import storage
from netdiff_lib.atomic import read_json
from netdiff_lib.errors import InputError
from netdiff_lib.schema import Layout
from netdiff_lib.store.codec import row_plan, unpack_rows
from netdiff_lib.store.container import STORE_FORMAT, read_container
from netdiff_lib.store.writer import INDEX_JSON
from netdiff_lib.trace import Trace

#: Default bound of the local shard cache of an object-store store, and shards kept loaded in memory.
CACHE_BYTES = 2 << 30
MEMORY_SHARDS = 2


@contextlib.contextmanager
def _as_input_error() -> Iterator[None]:
    try:
        yield
    except storage.StorageError as exc:
        raise InputError(exc.uri, exc.cause) from None


class _Files:
    """The files of one store: local paths as they are, object-store ones fetched into a bounded cache."""

    def __init__(self, root: str, cache: Path, cache_bytes: int) -> None:
        self.root, self.remote = str(root).rstrip("/"), storage.is_remote(root)
        self.cache = cache / hashlib.sha1(self.root.encode()).hexdigest()[:16]
        self.cache_bytes, self._held = cache_bytes, OrderedDict()

    def uri(self, name: str) -> str:
        return storage.join(self.root, name)

    def local(self, name: str, size: int = 0) -> Path:
        if not self.remote:
            return Path(self.uri(name))
        path = self.cache / name
        if name in self._held:
            self._held.move_to_end(name)
            return path
        while self._held and sum(self._held.values()) + size > self.cache_bytes:
            old, _ = self._held.popitem(last=False)
            (self.cache / old).unlink(missing_ok=True)
        with _as_input_error():
            storage.get(self.uri(name), path)
        self._held[name] = path.stat().st_size
        return path


class _Shard:
    """One loaded shard: its header and arrays (views of its bytes)."""

    def __init__(self, path: Path, uri: str, sha256: str, layout: Layout) -> None:
        header, a = read_container(path, "shard", sha256)
        self.header, self.a = header, a
        self.uri = uri
        try:
            rows, nb = a["trace_rows"], a["trace_bytes"]
            n, p = int(header["traces"]), int(header["packets"])
            ok = (len(rows) == n + 1 and rows[-1] == p and len(nb) == n + 1 and nb[-1] == len(a["data"])
                  and a["counts"].shape[0] == p and len(a["ts_ns"]) == p and len(header["meta"]) == n
                  and len(a["label_codes"]) == n and len(a["source_codes"]) == n
                  and Layout.from_dict(header["layout"]) == layout)
            self.labels = [header["labels"][c] for c in a["label_codes"].tolist()]
            self.sources = [header["sources"][c] for c in a["source_codes"].tolist()]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(uri, f"corrupt trace store shard ({exc})") from None
        if not ok:
            raise InputError(uri, "corrupt trace store shard (its arrays do not agree with each other)")

    def traces(self, first: int, last: int, plan: Any) -> list[Trace]:
        """Traces ``first..last-1`` of the shard, decoded in one pass."""
        a, h = self.a, self.header
        r0, r1 = int(a["trace_rows"][first]), int(a["trace_rows"][last])
        b0, b1 = int(a["trace_bytes"][first]), int(a["trace_bytes"][last])
        i0, i1 = np.searchsorted(a["fb_rows"], [r0, r1])
        try:
            matrix = unpack_rows(plan, a["counts"][r0:r1], a["data"][b0:b1], a["fb_rows"][i0:i1] - r0,
                                 a["fb_values"][i0:i1], a["fb_present"][i0:i1])
        except (ValueError, IndexError) as exc:
            raise InputError(self.uri, f"corrupt trace store shard ({exc})") from None
        out = []
        for i in range(first, last):
            s, e = int(a["trace_rows"][i]) - r0, int(a["trace_rows"][i + 1]) - r0
            ts = np.array(a["ts_ns"][r0 + s : r0 + e]) if a["has_ts"][i] else None
            out.append(Trace(matrix[s:e], plan.layout, ts, self.labels[i], self.sources[i], None,
                             {**h.get("meta_common", {}), **h["meta"][i]}))
        return out


def _load_index(files: _Files) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    doc_path = files.local(INDEX_JSON)
    if not doc_path.is_file():
        raise InputError(files.root, f"not a trace store (no {INDEX_JSON}; an unfinished or failed write?)")
    doc = read_json(doc_path)
    if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise InputError(files.uri(INDEX_JSON), f"unknown trace store format {found!r}, expected {STORE_FORMAT}")
    try:
        idx = doc["index"]
        header, arrays = read_container(files.local(idx["name"], idx["bytes"]), "index", idx["sha256"])
        if [int(s["traces"]) for s in doc["shards"]] != arrays["shard_traces"].tolist():
            raise ValueError("the index and the shard list disagree")
    except InputError as exc:
        raise InputError(files.uri(doc.get("index", {}).get("name", "?")), exc.cause) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(files.uri(INDEX_JSON), f"corrupt trace store index ({exc})") from None
    return doc, header, arrays


class StoreSource:
    """Labelled traces of one or more trace stores (local folders or ``s3://`` prefixes), read by index.

    ``labels``, ``sources`` and ``lengths`` (and ``fingerprint``: the stores' content digest, for a training's
    record of what it saw; ``metas``: what each store's writer recorded) come from the indexes; :meth:`read`
    decodes shards on demand.  ``cache_dir`` (default: a temporary folder removed by :meth:`close`) holds at most
    ``cache_bytes`` of downloaded shards.
    """

    def __init__(self, uris: Sequence[str | Path], *, cache_dir: str | Path | None = None,
                 cache_bytes: int = CACHE_BYTES) -> None:
        if not uris:
            raise ValueError("a store source needs at least one store")
        remote = any(storage.is_remote(u) for u in uris)
        self._tmp = tempfile.mkdtemp(prefix="netdiff-store-cache-") if remote and cache_dir is None else None
        cache = Path(cache_dir if cache_dir is not None else self._tmp or ".")  # local stores use no cache
        self.uris = [str(u) for u in uris]
        self.labels: list[str] = []
        self.sources: list[str] = []
        lengths, shard_first, self._shards = [], [0], []  # (files, entry) per shard, all stores
        fingerprints, layout, self.metas = [], None, []
        for uri in self.uris:
            files = _Files(uri, cache, cache_bytes)
            doc, header, arrays = _load_index(files)
            lay = Layout.from_dict(doc["layout"])
            if layout is not None and lay != layout:
                raise InputError(uri, f"layout {lay.describe()} differs from {self.uris[0]}'s {layout.describe()}")
            layout = lay
            self.labels += [header["labels"][c] for c in arrays["label_codes"].tolist()]
            self.sources += [header["sources"][c] for c in arrays["source_codes"].tolist()]
            lengths.append(np.array(arrays["lengths"], np.int64))
            for entry in doc["shards"]:
                self._shards.append((files, entry))
                shard_first.append(shard_first[-1] + int(entry["traces"]))
            fingerprints.append(doc["fingerprint"])
            self.metas.append(dict(doc.get("meta") or {}))
        assert layout is not None
        self.layout, self.plan = layout, row_plan(layout)
        self.lengths = np.concatenate(lengths)
        self._first = np.array(shard_first, np.int64)
        self.fingerprint = (fingerprints[0] if len(fingerprints) == 1
                            else hashlib.sha256("\n".join(fingerprints).encode()).hexdigest())
        self._loaded: OrderedDict[int, _Shard] = OrderedDict()

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def packets(self) -> int:
        return int(self.lengths.sum())

    def _shard(self, k: int) -> _Shard:
        if k in self._loaded:
            self._loaded.move_to_end(k)
            return self._loaded[k]
        files, entry = self._shards[k]
        while len(self._loaded) >= MEMORY_SHARDS:
            self._loaded.popitem(last=False)
        shard = _Shard(files.local(entry["name"], int(entry["bytes"])), files.uri(entry["name"]), entry["sha256"],
                       self.layout)
        self._loaded[k] = shard
        return shard

    def read(self, indices: Sequence[int]) -> list[Trace]:
        """The traces at ``indices``, in that order; runs of consecutive indices of one shard decode together."""
        idx = np.asarray(indices, np.int64).ravel()
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"trace index out of range (the store holds {len(self)} traces)")
        shard_of = np.searchsorted(self._first, idx, side="right") - 1
        out: list[Trace] = []
        start = 0
        while start < len(idx):
            k, end = int(shard_of[start]), start + 1
            while end < len(idx) and shard_of[end] == k and idx[end] == idx[end - 1] + 1:
                end += 1
            first = int(idx[start] - self._first[k])
            out += self._shard(k).traces(first, first + end - start, self.plan)
            start = end
        return out

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process (a pickled ``TrainingData``): no loaded shard, and not the owner of the cache
        folder, in which it keeps its own subfolder (:meth:`__setstate__`)."""
        return {**self.__dict__, "_loaded": OrderedDict(), "_tmp": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for files in {id(f): f for f, _ in self._shards}.values():
            files.cache, files._held = files.cache / f"pid-{os.getpid()}", OrderedDict()

    def close(self) -> None:
        """Drop loaded shards and remove the temporary cache folder."""
        self._loaded.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> StoreSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)


def open_store(uri: str | Path | Sequence[str | Path], **kwargs: Any) -> StoreSource:
    """A :class:`StoreSource` over the store at ``uri`` (a folder or ``s3://`` prefix), or over several stores
    read as one (same layout).  ``cache_dir``/``cache_bytes`` bound the local copy of object-store shards."""
    uris = [uri] if isinstance(uri, (str, Path)) else list(uri)
    return StoreSource(uris, **kwargs)


def is_store(uri: str | Path) -> bool:
    """Whether ``uri`` (a folder or prefix) holds a finished trace store (its ``store.json``)."""
    if storage.is_remote(uri):
        with _as_input_error():
            return storage.exists(storage.join(uri, INDEX_JSON))
    return Path(uri, INDEX_JSON).is_file()
