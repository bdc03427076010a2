"""Data sets: labelled captures in a folder or object-store prefix, the class map, and train/test splits.

:func:`discover` finds the captures under a local folder or an ``s3://``/``minio://`` prefix and labels each one:

* ``"prefix"``: from the file name, NetDiffusion's convention: ``netflix_01.pcap`` -> ``netflix`` (one trailing
  ``_<digits>`` or ``-<digits>`` group is dropped);
* ``"folder"``: from the first folder under the root, the IoT Sentinel layout ``<label>/<file>.pcap``;
* ``"csv"``: from ``labels.csv`` (header ``file,label``; ``file`` is a path relative to the root or a bare file
  name that must be unique);
* ``"auto"``: ``labels.csv`` if the root has one, else ``"folder"`` when every capture is in a sub-folder, else
  ``"prefix"`` when none is.

:class:`ClassMap` maps labels to NetDiffusion's ``type-N`` names and captions and is persisted as
``class_map.json``, which every later stage reads. :func:`split_captures` makes a stratified, seeded split.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiff_lib import storage
from netdiff_lib.atomic import atomic_open
from netdiff_lib.errors import ConfigError, InputError, NetdiffError

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
LABELS_CSV = "labels.csv"
CLASS_MAP_FILE = "class_map.json"
CAPTION_PREFIX = "pixelated network data"
LABEL_MODES = ("auto", "prefix", "folder", "csv")
CLASS_MAP_FORMAT = "netdiff-class-map"
CLASS_MAP_VERSION = 1
_TRAILING_NUMBER = re.compile(r"[_-]\d+$")


class UnknownLabelError(NetdiffError, LookupError):
    """A label or class index that the class map does not know."""


@dataclass(frozen=True, order=True)
class Capture:
    """One capture file (local path or URI) and its class label."""

    uri: str
    label: str

    @property
    def name(self) -> str:
        return self.uri.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def label_from_name(name: str, suffixes: Sequence[str] = CAPTURE_SUFFIXES) -> str:
    """NetDiffusion's label for a file name: the stem without one trailing ``_<digits>``/``-<digits>`` group."""
    stem = name.rsplit("/", 1)[-1]
    suffix = next((s for s in sorted(suffixes, key=len, reverse=True) if stem.lower().endswith(s.lower())), None)
    stem = stem[: -len(suffix)] if suffix else stem.rsplit(".", 1)[0] or stem
    return _TRAILING_NUMBER.sub("", stem) or stem


def discover(uri: str | Path, label_from: str = "auto", labels_csv: str | Path | None = None,
             suffixes: Sequence[str] = CAPTURE_SUFFIXES) -> list[Capture]:
    """Labelled captures under a folder or prefix, sorted by their path relative to it (see the module doc)."""
    if label_from not in LABEL_MODES:
        raise ConfigError(f"label_from={label_from!r}: expected one of {', '.join(LABEL_MODES)}")
    root, suffixes = str(uri), (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
    if not storage.is_remote(root) and not storage.exists(root):
        raise InputError(root, "no such folder")
    found = [(storage.relative(u, root), u) for u in storage.list_uri(root, suffixes)]
    if not found:
        raise InputError(root, f"no captures found (looked for {', '.join(suffixes)} files)")
    mode, csv_uri = _choose_mode(root, label_from, labels_csv, [rel for rel, _ in found])
    if mode == "csv":
        labels = _csv_labels(csv_uri, [rel for rel, _ in found], root)
    elif mode == "folder":
        labels = [_folder_label(rel, u) for rel, u in found]
    else:
        labels = [label_from_name(rel, suffixes) for rel, _ in found]
    return [Capture(u, label) for (_, u), label in zip(found, labels, strict=True)]


def _choose_mode(root: str, label_from: str, labels_csv: str | Path | None, rels: list[str]) -> tuple[str, str]:
    if labels_csv is not None:
        if label_from not in ("auto", "csv"):
            raise ConfigError(f"labels_csv was given but label_from={label_from!r}")
        return "csv", str(labels_csv)
    csv_uri = storage.join(root, LABELS_CSV)
    if label_from == "csv":
        if not storage.exists(csv_uri):
            raise InputError(csv_uri, "no such file (label_from='csv' needs a labels.csv in the root)")
        return "csv", csv_uri
    if label_from != "auto":
        return label_from, csv_uri
    if storage.exists(csv_uri):
        return "csv", csv_uri
    nested = sum("/" in rel for rel in rels)
    if nested == len(rels):
        return "folder", csv_uri
    if nested == 0:
        return "prefix", csv_uri
    raise InputError(root, f"{nested} of {len(rels)} captures are in sub-folders and the rest are not: "
                           "choose label_from='prefix' or 'folder', or add a labels.csv")


def _folder_label(rel: str, uri: str) -> str:
    if "/" not in rel:
        raise InputError(uri, "not in a sub-folder: folder labels need the layout <label>/<file>")
    return rel.split("/", 1)[0]


def read_labels_csv(uri: str | Path) -> dict[str, str]:
    """The ``file -> label`` table of a ``labels.csv`` (local path or URI)."""
    return _read_labels_csv(uri)[0]


def _read_labels_csv(uri: str | Path) -> tuple[dict[str, str], dict[str, int]]:
    """The ``file -> label`` table of a ``labels.csv`` and the line number of each file's row."""
    with storage.open_local(uri) as path:
        text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    header = [cell.strip().lower() for cell in rows[0][1]] if rows else []
    if "file" not in header or "label" not in header:
        raise InputError(uri, "expected a header row with the columns file,label")
    fcol, lcol = header.index("file"), header.index("label")
    table: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, row in rows[1:]:
        cells = [cell.strip() for cell in row] + [""] * len(header)
        name, label = cells[fcol].replace("\\", "/"), cells[lcol]
        name = name[2:] if name.startswith("./") else name
        if not name or not label:
            raise InputError(uri, f"line {number}: needs a file and a label")
        if table.setdefault(name, label) != label:
            raise InputError(uri, f"line {number}: {name!r} has two labels ({table[name]!r} and {label!r})")
        lines.setdefault(name, number)
    return table, lines


def _csv_labels(csv_uri: str, rels: list[str], root: str) -> list[str]:
    table, lines = _read_labels_csv(csv_uri)
    names = Counter(rel.rsplit("/", 1)[-1] for rel in rels)
    labels, missing = [], []
    used: set[str] = set()
    for rel in rels:
        name = rel.rsplit("/", 1)[-1]
        if rel in table:
            labels.append(table[rel])
            used.add(rel)
        elif name in table and names[name] == 1:
            labels.append(table[name])
            used.add(name)
        elif name in table:
            raise InputError(csv_uri, f"{name!r} names {names[name]} captures: use paths relative to the root")
        else:
            missing.append(rel)
    if missing:
        raise InputError(csv_uri, f"no label for {len(missing)} capture(s): {', '.join(missing[:5])}"
                                  + (", ..." if len(missing) > 5 else ""))
    # a row naming a missing file would drop that capture, and maybe its whole class, without a word
    absent = sorted((lines[name], name) for name in set(table) - used if not storage.exists(storage.join(root, name)))
    if absent:
        line, name = absent[0]
        more = f" (and {len(absent) - 1} more row(s) naming a missing file)" if len(absent) > 1 else ""
        raise InputError(csv_uri, f"line {line}: {name!r}: no such file under {root}{more}")
    return labels


@dataclass(frozen=True)
class ClassMap:
    """Ordered labels; the label at position N is class ``type-N`` with caption ``pixelated network data, type-N``.

    Build it with :meth:`from_labels`/:meth:`from_captures` (labels sorted) or :meth:`load` (stored order).
    """

    labels: tuple[str, ...]
    source: str | None = field(default=None, compare=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        if not labels:
            raise ConfigError("a class map needs at least one label")
        bad = [repr(lb) for lb in labels if not isinstance(lb, str) or not lb.strip()]
        dups = sorted(lb for lb, n in Counter(labels).items() if n > 1)
        if bad or dups:
            raise ConfigError(f"class map labels must be unique non-empty strings: {', '.join(bad + dups)}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "_index", {lb: i for i, lb in enumerate(labels)})

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> ClassMap:
        return cls(tuple(sorted(set(labels))))

    @classmethod
    def from_captures(cls, captures: Iterable[Capture]) -> ClassMap:
        return cls.from_labels(c.label for c in captures)

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def _where(self) -> str:
        known = ", ".join(self.labels[:10]) + (", ..." if len(self) > 10 else "")
        return f"class map{' ' + self.source if self.source else ''} ({len(self)} classes: {known})"

    def index(self, label: str) -> int:
        try:
            return self._index[label]
        except KeyError:
            raise UnknownLabelError(f"label {label!r} is not in the {self._where()}") from None

    def label(self, index: int) -> str:
        if not 0 <= index < len(self):
            raise UnknownLabelError(f"class index {index} is not in the {self._where()}")
        return self.labels[index]

    def type_name(self, label: str) -> str:
        return f"type-{self.index(label)}"

    def caption(self, label: str) -> str:
        """NetDiffusion's training caption for ``label``: ``pixelated network data, type-N``."""
        return f"{CAPTION_PREFIX}, {self.type_name(label)}"

    def label_of_type(self, type_name: str) -> str:
        """The label of ``type-N``."""
        match = re.fullmatch(r"type-(\d+)", type_name.strip())
        if not match:
            raise UnknownLabelError(f"{type_name!r} is not a class name of the form type-N")
        return self.label(int(match.group(1)))

    def to_dict(self) -> dict[str, Any]:
        classes = [{"index": i, "label": lb, "type": f"type-{i}", "caption": f"{CAPTION_PREFIX}, type-{i}"}
                   for i, lb in enumerate(self.labels)]
        return {"format": CLASS_MAP_FORMAT, "version": CLASS_MAP_VERSION, "classes": classes}

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> ClassMap:
        where = source or "<class map>"
        if not isinstance(data, dict) or data.get("format") != CLASS_MAP_FORMAT:
            raise InputError(where, f"not a class map (no \"format\": \"{CLASS_MAP_FORMAT}\")")
        if data.get("version") != CLASS_MAP_VERSION:
            raise InputError(where, f"class map version {data.get('version')!r} is not {CLASS_MAP_VERSION}")
        classes = data.get("classes")
        try:
            ordered = sorted(classes, key=lambda c: c["index"])
            if [c["index"] for c in ordered] != list(range(len(ordered))):
                raise ValueError("indices are not 0..N-1")
            return cls(tuple(c["label"] for c in ordered), source=source)
        except (TypeError, KeyError, ValueError, ConfigError) as exc:
            raise InputError(where, f"bad class list: {exc}") from None

    def save(self, path: str | Path) -> str:
        """Write the map as JSON to a local path or URI, atomically; returns where it went."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if not storage.is_remote(path):
            with atomic_open(path, "w") as fh:
                fh.write(text)
            return str(path)
        with tempfile.TemporaryDirectory(prefix="netdiff-") as tmp:
            local = Path(tmp, CLASS_MAP_FILE)
            local.write_text(text)
            return storage.put(local, str(path))

    @classmethod
    def load(cls, path: str | Path) -> ClassMap:
        """Read a map written by :meth:`save` (local path or URI)."""
        if not storage.is_remote(path) and not storage.exists(path):
            raise InputError(path, "no such class map file")
        with storage.open_local(path) as local:
            try:
                data = json.loads(local.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(path, f"not valid JSON: {exc}") from None
        return cls.from_dict(data, source=str(path))


def split_captures(captures: Sequence[Capture], test_fraction: float = 0.2,
                   seed: int = 0) -> tuple[list[Capture], list[Capture]]:
    """Split by capture file, stratified per label, deterministic for a seed; keeps the input order.

    Each label puts ``round(n * test_fraction)`` captures in the test part, at least one and at most ``n - 1``
    when it has two or more; a label with a single capture goes to training.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction={test_fraction} must be between 0 and 1 (exclusive)")
    groups: dict[str, list[Capture]] = defaultdict(list)
    for cap in captures:
        groups[cap.label].append(cap)
    test: set[Capture] = set()
    for label, group in groups.items():
        members = sorted(set(group))
        if len(members) < 2:
            continue
        n_test = min(max(int(len(members) * test_fraction + 0.5), 1), len(members) - 1)
        random.Random(f"{seed}:{label}").shuffle(members)
        test.update(members[:n_test])
    return [c for c in captures if c not in test], [c for c in captures if c in test]
