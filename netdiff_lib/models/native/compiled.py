"""Compiled sampling: the network the sampler runs, through ``torch.compile`` where that is wanted.

``generate.compile`` (:class:`~netdiff_lib.config.GenerateConfig`): ``auto`` compiles on CUDA for a request of
at least :data:`AUTO_MIN_PACKETS` packets and never on the CPU, ``on`` always, ``off`` never.  Compiling costs
20-45 s on an H100 (inductor, every graph; less with its on-disk cache warm) and then saves about 40 % of the
sampling time (BENCHMARKS.md), so it pays back from several million packets on: below that ``auto`` samples
eagerly.  The wrapper is made once per loaded model and backend and kept on the model,
so every batch of every call reuses its compiled graphs.  Shapes: the sampler's batches vary in size (the last
batch of a length bucket is short) and in length (one bucket each), so the network is compiled with dynamic
shapes: one graph serves every batch size and bucket (one more for unpadded batches, whose attention has no
mask), instead of one compilation per shape.  Only the forward pass is compiled; the sampler's loop (reveals,
categorical draws, DDIM) stays as it is, so a seed draws the same random numbers either way and eager and
compiled sampling give the same traces up to float rounding.

A compilation that fails (no C++ compiler for inductor on the CPU, an unsupported operator, a backend error)
is reported once as a warning, and the sampler goes on eagerly (:func:`run_with_fallback`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from netdiff_lib.errors import NetdiffError

if TYPE_CHECKING:
    from netdiff_lib.models.native.model import NativeModel

T = TypeVar("T")
#: ``auto`` compiles for requests of at least this many packets (about 8,000 traces of 1,024 packets: eager
#: sampling of those takes ~50 s on an H100, compiled ~30 s plus the compilation)
AUTO_MIN_PACKETS = 8_000_000
_CACHE = "_compiled_nets"  # attribute of the NativeModel: {(id(net), backend): compiled wrapper}


def wanted(setting: str, device: torch.device | str, packets: int = AUTO_MIN_PACKETS) -> bool:
    """Whether ``generate.compile`` = ``setting`` compiles on ``device`` for a request of ``packets`` packets."""
    auto = torch.device(device).type == "cuda" and packets >= AUTO_MIN_PACKETS
    return setting == "on" or (setting == "auto" and auto)


def sampling_networks(model: NativeModel, setting: str | None = None,
                      packets: int = AUTO_MIN_PACKETS) -> list[torch.nn.Module]:
    """The networks to sample ``packets`` packets with, in order of preference: the compiled wrapper (when
    ``setting``, default the model's ``generate.compile``, asks for it), then the plain network."""
    gen_cfg = model.config.generate
    setting = setting or gen_cfg.compile
    dev = next(model.net.parameters()).device
    if not wanted(setting, dev, packets):
        return [model.net]
    cache: dict[tuple[int, str], torch.nn.Module] = model.__dict__.setdefault(_CACHE, {})
    key = (id(model.net), gen_cfg.compile_backend)
    if key not in cache:
        try:
            cache[key] = torch.compile(model.net, backend=gen_cfg.compile_backend, dynamic=True)
        except Exception as exc:  # e.g. an unknown backend name: report it and sample eagerly
            _warn(gen_cfg.compile_backend, exc)
            cache[key] = model.net
    return [cache[key], model.net] if cache[key] is not model.net else [model.net]


def run_with_fallback(model: NativeModel, nets: list[torch.nn.Module],
                      run: Callable[[torch.nn.Module], T]) -> tuple[T, list[torch.nn.Module]]:
    """``run(nets[0])``; when that raises for a compiled network, warn, forget it and ``run`` the plain one.
    Returns the result and the networks left to use.  ``run`` must start its random draws afresh (it is called
    again with the same seed)."""
    while True:
        try:
            return run(nets[0]), nets
        except NetdiffError:
            raise
        except Exception as exc:
            if len(nets) == 1:
                raise
            _warn(model.config.generate.compile_backend, exc)
            model.__dict__.get(_CACHE, {})[(id(model.net), model.config.generate.compile_backend)] = model.net
            nets = nets[1:]


def _warn(backend: str, exc: Any) -> None:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    warnings.warn(f"compiled sampling (torch.compile, backend {backend}) failed: {type(exc).__name__}: {first}; "
                  "sampling eagerly (set generate.compile=off to skip the attempt)", RuntimeWarning, stacklevel=3)
