"""Where the ``sd15`` backend's pretrained weights come from, and loading them offline.

``weights.base`` (Stable Diffusion 1.5) and ``weights.controlnet`` (ControlNet canny) each accept:

* a diffusers folder (``model_index.json`` with ``unet/ vae/ text_encoder/ tokenizer/ scheduler/``; for a
  ControlNet ``config.json`` and ``diffusion_pytorch_model.safetensors``);
* a single-file checkpoint (``.safetensors``, ``.ckpt``, ``.pt``, ``.pth``: A1111's ``v1-5-pruned``,
  ``control_sd15_canny``), loaded with ``from_single_file``; offline it needs ``weights.config`` (base) or
  ``weights.controlnet_config`` (ControlNet): a local diffusers folder holding the configs;
* a Hugging Face cache folder (``.../hub/models--ORG--NAME``: the snapshot ``refs/main`` names, else the newest);
* an ``s3://`` (or ``minio://``) URI of any of these, downloaded once into the cache folder
  (``weights.cache``, ``$NETDIFF_WEIGHTS_CACHE`` or ``~/.cache/netdiff/weights``) and found there next time.

Nothing goes to the network but the object store: every diffusers/transformers call has ``local_files_only``.
A missing or wrong location raises :class:`~netdiff_lib.errors.InputError` naming it and saying what is expected.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from netdiff_lib import storage
from netdiff_lib.errors import ConfigError, InputError, NetdiffError

SINGLE_FILE = (".safetensors", ".ckpt", ".pt", ".pth")
BASE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
COMPLETE = ".netdiff-complete"
HOW = {
    "base": "pass --weights (or --set weights.base=...) with a diffusers Stable Diffusion 1.5 folder "
            "(model_index.json), a .safetensors/.ckpt checkpoint, a Hugging Face cache folder "
            "(models--stable-diffusion-v1-5--stable-diffusion-v1-5) or an s3:// URI of one",
    "controlnet": "pass --controlnet (or --set weights.controlnet=...) with a diffusers ControlNet folder "
                  "(config.json + diffusion_pytorch_model.safetensors, e.g. lllyasviel/sd-controlnet-canny), "
                  "a control_sd15_canny .pth/.safetensors file, a Hugging Face cache folder or an s3:// URI of one",
}


def cache_root(cache: str = "") -> Path:
    return Path(cache or os.environ.get("NETDIFF_WEIGHTS_CACHE") or Path.home() / ".cache" / "netdiff" / "weights")


def download(uri: str, cache: str = "") -> Path:
    """An object-store file or prefix, downloaded once into the cache (a marker file says it is complete)."""
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "weights"
    dest = cache_root(cache) / f"{digest}-{name}"
    if (dest / COMPLETE).is_file():
        return _content(dest, name)
    try:
        files = [(storage.relative(u, uri), u) for u in storage.list_uri(uri)]
    except NetdiffError as exc:
        raise InputError(uri, f"cannot read the weights ({exc})") from None
    if not files:
        raise InputError(uri, "no weights there (an empty prefix)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        single = len(files) == 1 and files[0][1].rstrip("/") == uri.rstrip("/")
        for rel, u in files:
            storage.get(u, tmp / (name if single else rel))
        (tmp / COMPLETE).write_text(uri)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except NetdiffError as exc:
        raise InputError(uri, f"cannot download the weights ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _content(dest, name)


def _content(dest: Path, name: str) -> Path:
    """A downloaded single file is ``dest/name``; a prefix is the folder itself."""
    single = dest / name
    return single if single.is_file() else dest


def hf_snapshot(folder: Path) -> Path:
    """The snapshot folder of a Hugging Face cache folder (``models--ORG--NAME``)."""
    snaps = folder / "snapshots"
    ref = folder / "refs" / "main"
    if ref.is_file() and (snaps / ref.read_text().strip()).is_dir():
        return snaps / ref.read_text().strip()
    found = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not found:
        raise InputError(snaps, "a Hugging Face cache folder without a snapshot (download the model first)")
    return found[-1]


def resolve(uri: str, what: str, cache: str = "") -> Path:
    """The local path of weights ``what`` (``base`` or ``controlnet``): a checked diffusers folder or a file."""
    if not uri:
        raise ConfigError(f"backend sd15 needs {what} weights: {HOW[what]}")
    path = download(uri, cache) if storage.is_remote(uri) else Path(uri).expanduser()
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE:
            raise InputError(path, f"not a checkpoint file (expected {', '.join(SINGLE_FILE)}); {HOW[what]}")
        return path
    if not path.is_dir():
        raise InputError(path, f"no such file or folder; {HOW[what]}")
    if (path / "snapshots").is_dir():
        path = hf_snapshot(path)
    return check_folder(path, what)


def check_folder(path: Path, what: str) -> Path:
    """A diffusers folder with the files ``what`` needs, or InputError naming the first one missing."""
    if what == "base":
        if not (path / "model_index.json").is_file():
            raise InputError(path / "model_index.json", f"missing: not a diffusers pipeline folder; {HOW[what]}")
        for part in BASE_PARTS:
            if not (path / part).is_dir() or not any((path / part).iterdir()):
                raise InputError(path / part, "missing: a diffusers Stable Diffusion folder has "
                                              f"{', '.join(p + '/' for p in BASE_PARTS)} beside model_index.json")
        return path
    if not (path / "config.json").is_file():
        raise InputError(path / "config.json", f"missing: not a diffusers ControlNet folder; {HOW[what]}")
    if not any(p.name.startswith("diffusion_pytorch_model") for p in path.iterdir()):
        raise InputError(path / "diffusion_pytorch_model.safetensors", "missing: the ControlNet weights")
    return path


def _config_dir(uri: str, key: str, file: Path, cache: str) -> str:
    if not uri:
        raise ConfigError(f"{file}: a single-file checkpoint needs, offline, a local diffusers folder with its "
                          f"configs: --set weights.{key}=DIR (the model's folder without weights is enough)")
    path = download(uri, cache) if storage.is_remote(uri) else Path(uri).expanduser()
    if (path / "snapshots").is_dir():
        path = hf_snapshot(path)
    need = "model_index.json" if key == "config" else "config.json"
    if not (path / need).is_file():
        raise InputError(path / need, f"missing: weights.{key} must be a diffusers folder with {need}")
    return str(path)


def load_pipeline(weights: Any, dtype: Any) -> Any:
    """The Stable Diffusion 1.5 pipeline (no safety checker) from ``weights.base``, on the CPU in ``dtype``."""
    from diffusers import StableDiffusionPipeline

    path = resolve(weights.base, "base", weights.cache)
    kw = {"dtype": dtype, "local_files_only": True, "safety_checker": None, "requires_safety_checker": False}
    try:
        if path.is_file():
            cfg = _config_dir(weights.config, "config", path, weights.cache)
            return StableDiffusionPipeline.from_single_file(str(path), config=cfg, **kw)
        return StableDiffusionPipeline.from_pretrained(str(path), **kw)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(path, f"cannot load Stable Diffusion weights ({str(exc).splitlines()[0]})") from None


def load_controlnet(weights: Any, dtype: Any) -> Any:
    """The ControlNet from ``weights.controlnet``."""
    from diffusers import ControlNetModel

    path = resolve(weights.controlnet, "controlnet", weights.cache)
    try:
        if path.is_file():
            cfg = _config_dir(weights.controlnet_config, "controlnet_config", path, weights.cache)
            return ControlNetModel.from_single_file(str(path), config=cfg, dtype=dtype, local_files_only=True)
        return ControlNetModel.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(path, f"cannot load ControlNet weights ({str(exc).splitlines()[0]})") from None
