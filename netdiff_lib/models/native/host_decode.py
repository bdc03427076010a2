"""Decoding sampled batches on the host, beside the sampling loop: in worker processes, or in one thread.

The sampler (:mod:`~netdiff_lib.models.native.sampler`) hands each batch to a :class:`HostDecoder` and samples
the next one while it decodes.  A decoding *thread* shares the interpreter lock with the thread that drives the
GPU: every numpy call of the decoding gives the lock up and then waits for it (up to ``sys.getswitchinterval()``,
5 ms, while the sampling loop runs Python), so a decode that takes 0.13 s alone took 2.8 s beside a busy Python
loop (BENCHMARKS.md), and the sampling loop lost time too.  Worker *processes* share no lock: each runs the
representation's host codec (:meth:`~netdiff_lib.models.native.representation.Representation.host_codec`, which
imports no torch) on whole batches and sends back a compact result (for ``tokens``: packed header bytes, 1/7 of
the nPrint rows, :class:`~netdiff_lib.models.native.token_decode.Packed`); one thread of the sampling process
expands it into nPrint rows (a few large numpy calls).  Batches are decoded in parallel and their results kept
in order; each batch's generator comes from its own seed, so the traces do not depend on the path.  When a worker
dies (killed, out of memory, or unable to start: a script that samples on CUDA at import time, without an
``if __name__ == "__main__":`` guard, cannot be re-imported by a spawned worker), the batches left are decoded in
the thread, with a warning.

``generate.decode_workers``: ``-1`` (auto) uses :func:`auto_workers` processes when sampling on CUDA a request of
at least :data:`AUTO_MIN_BATCHES` batches, else the thread; ``0`` always the thread; ``N`` N processes.  A pool is
started once per loaded model (spawned: no fork of a process holding CUDA) and reused by every later request.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
import weakref
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from netdiff_lib.models.native.representation import Representation

#: ``auto`` decodes in processes for requests of at least this many batches (512 traces of 1,024 packets in
#: batches of 131,072 packets; a small request would wait for the workers to start: a second or two)
AUTO_MIN_BATCHES = 4
MAX_AUTO_WORKERS = 4
_POOL = "_decode_pool"  # attribute of the NativeModel: (workers, representation, executor, start-up futures)
_codec: Any = None  # in a worker process: the representation's host codec


def auto_workers(device: Any, batches: int) -> int:
    """Worker processes ``generate.decode_workers=-1`` uses for ``batches`` batches sampled on ``device``."""
    import torch

    if torch.device(device).type != "cuda" or batches < AUTO_MIN_BATCHES:
        return 0
    return max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 2) // 2))


class HostDecoder:
    """Decodes batches in ``workers`` processes (0: in one thread of this process); :meth:`submit` returns a
    future of ``rep.decode``'s result.  ``clock["host_s"]`` adds up the seconds spent decoding (in all workers)
    and expanding.  Use it as a context manager (the thread ends with it; the process pool stays with ``owner``)."""

    def __init__(self, rep: Representation, workers: int, clock: dict[str, float], owner: Any = None) -> None:
        self.rep, self.clock = rep, clock
        self.codec = rep.host_codec() if workers > 0 else None
        self.thread = ThreadPoolExecutor(max_workers=1)
        self.owner = owner if owner is not None else self
        self.pool = _pool(self.owner, rep, self.codec, workers) if self.codec else None

    def submit(self, host: Any, lengths: np.ndarray, labels: list[str], state: int) -> Future:
        """Decode one batch (``state`` seeds its generator)."""
        args, pool = (host, lengths, labels, state), self.pool
        if pool is not None:
            try:
                return self.thread.submit(self._expand, pool.submit(_work, *args), args)
            except BrokenProcessPool as exc:
                self._broken(exc)
        return self.thread.submit(self._decode, *args)

    def _decode(self, host: Any, lengths: np.ndarray, labels: list[str], state: int) -> Any:
        t0 = time.perf_counter()
        try:
            return self.rep.decode(host, lengths, labels, np.random.default_rng(state))
        finally:
            self.clock["host_s"] += time.perf_counter() - t0

    def _expand(self, job: Future, args: tuple[Any, ...]) -> Any:
        try:
            compact, seconds = job.result()
        except BrokenProcessPool as exc:  # a worker died (killed, out of memory, could not start): decode here
            self._broken(exc)
            return self._decode(*args)
        t0 = time.perf_counter()
        try:
            return self.codec.expand(compact)
        finally:
            self.clock["host_s"] += seconds + time.perf_counter() - t0

    def _broken(self, exc: BaseException) -> None:
        if self.pool is not None:
            warnings.warn(f"decoding processes failed ({exc}); decoding in a thread instead", RuntimeWarning,
                          stacklevel=3)
            self.pool = None
            self.owner.__dict__.pop(_POOL, None)

    def __enter__(self) -> HostDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.shutdown(wait=True)


def _pool(owner: Any, rep: Representation, codec: Any, workers: int) -> ProcessPoolExecutor:
    """The owner's pool of ``workers`` processes running ``codec`` (started once, replaced when either changes)."""
    held = owner.__dict__.get(_POOL)
    if held is not None and held[0] == workers and held[1] is rep:
        return held[2]
    if held is not None:
        held[2].shutdown(wait=True, cancel_futures=True)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init, initargs=(codec,))
    ready = [pool.submit(_ready) for _ in range(workers)]  # start every worker now (the pool starts them on demand)
    owner.__dict__[_POOL] = (workers, rep, pool, ready)
    # shut down with its owner, in the owner's thread: a pool collected at exit races the interpreter's own shutdown
    # of pools on Python 3.11 ("OSError: Bad file descriptor" in _python_exit)
    weakref.finalize(owner, pool.shutdown, wait=True, cancel_futures=True)
    return pool


def wait_ready(owner: Any) -> None:
    """Wait until every decoding process of ``owner`` (a model) has started (benchmarks: before timing)."""
    held = owner.__dict__.get(_POOL)
    for job in held[3] if held is not None else []:
        job.result()


def _ready() -> None:
    return None


def _init(codec: Any) -> None:
    global _codec
    _codec = codec


def _work(host: Any, lengths: np.ndarray, labels: list[str], state: int) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = _codec.decode_compact(host, lengths, labels, np.random.default_rng(state))
    return out, time.perf_counter() - t0
