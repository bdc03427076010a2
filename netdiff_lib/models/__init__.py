"""Generative backends behind one small interface (:mod:`netdiff_lib.models.base`).

Backends register by name with the module and class that implement them (``"package.module:Class"``),
imported only when asked for, so ``import netdiff_lib.models`` stays light (no torch).  A backend in this
package adds one line to :data:`BACKENDS`; one in another package calls :func:`register_backend` or declares
an entry point in the group ``netdiff.backends`` (``mine = "my_pkg.mine:MyBackend"``).  ``native`` is the
default; ``sd15`` is NetDiffusion's Stable Diffusion 1.5 + LoRA + ControlNet method.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.models.base import Backend, GeneratedTrace, Sampling, TraceGenerator, TrainingData

DEFAULT_BACKEND = "native"
#: name -> "module:Class"; a new backend adds one line.
BACKENDS: dict[str, str] = {
    "native": "netdiff_lib.models.native.backend:NativeBackend",
    "sd15": "netdiff_lib.models.sd15.backend:Sd15Backend",
}
ENTRY_POINTS = "netdiff.backends"


def known_backends() -> dict[str, str]:
    """Registered backends and those declared by installed packages' entry points (registered ones win)."""
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS)}
    return found | BACKENDS


def get_backend(name: str = DEFAULT_BACKEND) -> Backend:
    """The backend registered as ``name``."""
    known = known_backends()
    try:
        target = known[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(sorted(known))}") from None
    module, cls = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"backend {name!r} needs packages that are not installed ({exc}); "
                          "install netdiff[ml]") from None
    backend = getattr(mod, cls)()
    if not isinstance(backend, Backend):
        raise ConfigError(f"backend {name!r} ({target}) does not implement netdiff_lib.models.base.Backend")
    return backend


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
    """Add a backend (``"package.module:Class"``, a :class:`Backend` subclass made without arguments)."""
    if ":" not in target:
        raise ConfigError(f"backend target {target!r} must be 'package.module:Class'")
    BACKENDS[name] = target


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "GeneratedTrace", "Sampling", "TraceGenerator",
           "TrainingData", "backend_of", "get_backend", "known_backends", "register_backend"]
