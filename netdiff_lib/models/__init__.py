"""Generative backends behind one small interface (:mod:`netdiff_lib.models.base`).

Backends register by name with the module and class that implement them, imported only when asked for, so
``import netdiff_lib.models`` stays light (no torch).  ``native`` is the default.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.models.base import Backend, GeneratedTrace, TraceGenerator

DEFAULT_BACKEND = "native"
#: name -> "module:Class"; a new backend adds one line.
BACKENDS: dict[str, str] = {
    "native": "netdiff_lib.models.native:NativeBackend",
}


def get_backend(name: str = DEFAULT_BACKEND) -> Backend:
    """The backend registered as ``name``."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None
    module, cls = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"backend {name!r} needs packages that are not installed ({exc}); "
                          "install netdiff[ml]") from None
    return getattr(mod, cls)()


def backend_of(model_dir: str | Path) -> str:
    """The backend that wrote a model folder (from ``model_card.json``, else ``config.json``)."""
    root = Path(model_dir)
    if not root.is_dir():
        raise InputError(root, "model folder not found")
    for name in ("model_card.json", "config.json"):
        path = root / name
        if path.is_file():
            try:
                return str(json.loads(path.read_text())["backend"])
            except (ValueError, KeyError) as exc:
                raise InputError(path, f"no backend recorded ({exc})") from None
    raise InputError(root, "not a model folder: neither model_card.json nor config.json is there")


def register_backend(name: str, target: str) -> None:
    """Add a backend (``"package.module:Class"``)."""
    BACKENDS[name] = target


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "GeneratedTrace", "TraceGenerator", "backend_of",
           "get_backend", "register_backend"]
