"""Training checkpoints: save, find the latest, load; keep the last ``k``; local folders or ``s3://`` URIs.

A checkpoint is a folder ``ckpt-<step:08d>/`` holding everything an exact resume needs:

* ``model.safetensors`` and ``ema.safetensors``: the live weights and their exponential moving average;
* ``optimizer.pt``: the optimizer state (``torch.save``);
* ``rng.pt``: the Python, numpy, torch (and CUDA) generator states of the process that saved it;
* ``meta.json``: the resolved config, the step, the data position (epoch, next batch), the LR-schedule state
  and the loop state (loss history, elapsed time, LR horizon), the netdiff version and the backend name.

Writing is atomic: a local checkpoint is written under a hidden temporary name and renamed; a remote one is
written to a local staging folder and uploaded through :mod:`netdiff_lib.storage`.  The file ``latest`` (the
folder name) is replaced last, so a process killed mid-save leaves the previous checkpoint current.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netdiff_lib import __version__
from netdiff_lib.atomic import atomic_path
from netdiff_lib.errors import InputError

PREFIX = "ckpt-"
#: The folder of a model folder that holds its checkpoints.
FOLDER = "checkpoints"
LATEST = "latest"
FORMAT = "netdiff-checkpoint/1"


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on the CPU)."""

    name: str
    meta: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def _storage() -> Any:
    from netdiff_lib import storage

    return storage


def _is_remote(root: str | Path) -> bool:
    return _storage().is_remote(root)


def rng_state() -> dict[str, Any]:
    """The global generator states as plain lists and tensors (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write(folder: Path, meta: dict[str, Any], model: dict, ema: dict, optimizer: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.items()}, str(folder / "model.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, str(folder / "ema.safetensors"))
    torch.save(optimizer, folder / "optimizer.pt")
    torch.save(rng_state(), folder / "rng.pt")
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def save(root: str | Path, step: int, meta: dict[str, Any], model: dict, ema: dict, optimizer: dict,
         keep: int = 2) -> str:
    """Write checkpoint ``ckpt-<step>`` under ``root`` (local or URI), point ``latest`` at it, keep ``keep``."""
    name = f"{PREFIX}{step:08d}"
    meta = {**meta, "format": FORMAT, "step": step, "netdiff_version": __version__}
    if _is_remote(root):
        st = _storage()
        with tempfile.TemporaryDirectory(prefix="netdiff-ckpt-") as tmp:
            _write(Path(tmp, name), meta, model, ema, optimizer)
            st.put_dir(Path(tmp, name), st.join(str(root), name))
            Path(tmp, LATEST).write_text(name)
            st.put(Path(tmp, LATEST), st.join(str(root), LATEST))
        _prune_remote(str(root), keep)
        return st.join(str(root), name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        _write(tmp / name, meta, model, ema, optimizer)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        (tmp / name).rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with atomic_path(root / LATEST) as t:
        t.write_text(name)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(root / old, ignore_errors=True)
    return str(root / name)


def _prune_remote(root: str, keep: int) -> None:
    """Remove old remote checkpoints where the storage module can delete (otherwise they stay)."""
    st = _storage()
    remove = getattr(st, "remove", None) or getattr(st, "delete", None)
    if remove is None:
        return
    for old in list_checkpoints(root)[:-keep]:
        for uri in st.list_uri(st.join(root, old)):
            remove(uri)


def root_of(model_dir: str | Path) -> str:
    """Where the checkpoints of the model folder (or ``s3://`` URI) ``model_dir`` are."""
    return f"{str(model_dir).rstrip('/')}/{FOLDER}"


def list_checkpoints(root: str | Path) -> list[str]:
    """Checkpoint folder names under ``root``, oldest first (empty when ``root`` does not exist)."""
    if _is_remote(root):
        st = _storage()
        if not st.exists(root):
            return []
        names = {st.relative(u, root).split("/", 1)[0] for u in st.list_uri(root)}
    else:
        root = Path(root)
        names = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    return sorted(n for n in names if n.startswith(PREFIX) and n[len(PREFIX):].isdigit())


def latest(root: str | Path) -> str | None:
    """The name of the current checkpoint under ``root`` (from ``latest``, else the highest step), or None."""
    names = list_checkpoints(root)
    if not names:
        return None
    try:
        if _is_remote(root):
            st = _storage()
            with st.open_local(st.join(str(root), LATEST)) as path:
                pointed = Path(path).read_text().strip()
        else:
            pointed = (Path(root) / LATEST).read_text().strip()
    except Exception:  # a missing or unreadable pointer: fall back to the listing
        pointed = ""
    return pointed if pointed in names else names[-1]


def load(root: str | Path, name: str | None = None) -> Checkpoint:
    """Load checkpoint ``name`` (default: the latest) from ``root`` onto the CPU."""
    name = name or latest(root)
    if name is None:
        raise InputError(root, "no checkpoint to resume from")
    if _is_remote(root):
        st = _storage()
        with tempfile.TemporaryDirectory(prefix="netdiff-ckpt-") as tmp:
            st.get_dir(st.join(str(root), name), Path(tmp, name))
            return _read(Path(tmp, name), name)
    return _read(Path(root) / name, name)


def _read(folder: Path, name: str) -> Checkpoint:
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            raise InputError(folder, f"unknown checkpoint format {meta.get('format')!r}")
        return Checkpoint(
            name, meta, load_file(str(folder / "model.safetensors")), load_file(str(folder / "ema.safetensors")),
            torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True),
            torch.load(folder / "rng.pt", map_location="cpu", weights_only=True),
        )
    except FileNotFoundError as exc:
        raise InputError(folder, f"incomplete checkpoint ({Path(exc.filename or '').name} missing)") from None
