"""Helpers shared by the pipeline stages: shard items, JSON files, folder merges."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from netdiff_lib.atomic import atomic_open, read_json, write_json  # noqa: F401  (stages import them from here)
from netdiff_lib.errors import ConfigError, InputError

# Pipeline defaults (the pipelines take them from here).
SHARDS = 4
TRACES_PER_CLASS = 20
GENERATOR = "generator.json"  # beside generated traces and their pcaps: which model, which privacy mode
TEST_FRACTION = 0.2  # as netdiff_lib.dataset.split_captures


def shard_item(index: int, count: int, **extra: Any) -> dict[str, Any]:
    """One ``ParallelFor`` item: the shard's index and the number of shards (plus ``extra``)."""
    return {"index": index, "count": count, **extra}


def shard_of(item: dict[str, Any]) -> tuple[int, int]:
    """``(index, count)`` of a shard item (KFP may hand numbers over as floats)."""
    try:
        index, count = int(item["index"]), int(item["count"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"bad shard item {item!r}: expected {{'index': i, 'count': n}}") from None
    if not 0 <= index < count:
        raise ConfigError(f"shard index {index} is not in 0..{count - 1}")
    return index, count


def shard_count(requested: int, items: int) -> int:
    """How many shards ``items`` things fill: at most ``requested``, at least 1."""
    if requested < 1:
        raise ConfigError(f"shards={requested}: need at least 1")
    return max(1, min(requested, items))


def shard_name(index: int) -> str:
    return f"shard-{index:03d}"


def link_files(files: Iterable[tuple[str, Path]], dest: Path) -> int:
    """Make ``dest/<rel>`` point at each file (symbolic link, or a copy where links fail); returns the count."""
    n = 0
    for rel, src in files:
        target = dest / rel
        if target.exists() or target.is_symlink():
            raise InputError(target, f"two inputs map to the same file {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(Path(src).resolve())
        except OSError:
            shutil.copyfile(src, target)
        n += 1
    return n


def files_under(root: Path, suffix: str = "") -> list[tuple[str, Path]]:
    """``(relative path, path)`` of the non-hidden files under ``root`` ending in ``suffix``, sorted."""
    if not root.is_dir():
        return []
    out = [(p.relative_to(root).as_posix(), p) for p in root.rglob(f"*{suffix}") if p.is_file()]
    return sorted((rel, p) for rel, p in out if not any(part.startswith(".") for part in rel.split("/")))
