"""Materialise a train/test split by capture file as labelled folders, plus ``split.json``.

The split itself is :func:`netdiff_lib.dataset.split_captures` (by file, stratified per label, deterministic
for a seed; re-exported here).  :func:`write_split` records it as ``split.json`` and can materialise it as
``train/<label>/<file>`` and ``test/<label>/<file>`` folders (symbolic links to local files, or copies), which
every stage reads as labelled folders (label = folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from netdiff_lib.atomic import atomic_open
from netdiff_lib.dataset import Capture, split_captures
from netdiff_lib.errors import ConfigError

__all__ = ["MODES", "split_captures", "write_split"]

SPLIT_FORMAT = "netdiff-split/1"
MODES = ("link", "copy", "none")


def _unique_name(folder: Path, name: str, used: set[Path]) -> Path:
    dest, i = folder / name, 1
    while dest in used:
        dest, i = folder / f"{Path(name).stem}-{i}{Path(name).suffix}", i + 1
    used.add(dest)
    return dest


def _materialise(caps: Sequence[Capture], folder: Path, mode: str) -> list[str]:
    from netdiff_lib import storage

    used: set[Path] = set()
    out = []
    for cap in caps:
        dest = _unique_name(folder / str(cap.label), str(cap.uri).rstrip("/").rsplit("/", 1)[-1], used)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        if mode == "link" and not storage.is_remote(cap.uri):
            os.symlink(Path(str(cap.uri).removeprefix("file://")).resolve(), dest)
        else:
            storage.get(cap.uri, dest)
        out.append(str(dest))
    return out


def write_split(
    train: Sequence[Capture], test: Sequence[Capture], out_dir: str | Path, mode: str = "link",
    info: dict | None = None,
) -> Path:
    """Write ``split.json`` (and with ``mode`` link/copy the ``train/`` and ``test/`` folders) into ``out_dir``."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, not {mode!r}")
    out = Path(out_dir)
    stale = [str(out / side) for side in ("train", "test") if mode != "none" and (out / side).exists()
             and any((out / side).iterdir())]
    if stale:
        raise ConfigError(f"{', '.join(stale)} already exist(s) and are not empty: choose a new --out folder")
    doc = {"format": SPLIT_FORMAT, **(info or {}),
           "train": [{"uri": str(c.uri), "label": str(c.label)} for c in train],
           "test": [{"uri": str(c.uri), "label": str(c.label)} for c in test]}
    if mode != "none":
        for side, caps in (("train", train), ("test", test)):
            for entry, path in zip(doc[side], _materialise(caps, out / side, mode), strict=True):
                entry["path"] = path
    path = out / "split.json"
    with atomic_open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
    return path
