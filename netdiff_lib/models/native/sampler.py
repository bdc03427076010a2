"""The native sampler: trace requests -> length-bucketed batches -> the representation's sampler and decoder.

:func:`generate_traces` draws each requested trace's length from its class's training traces (so padding is
never generated), groups the requests into the training length buckets and, batch by batch, asks the model's
representation to sample on the device
(:meth:`~netdiff_lib.models.native.representation.Representation.sample`: for ``tokens``, the ancestral sampler
of masked diffusion over the two-stage grid, packet kinds first, with classifier-free guidance on the logits,
and DDIM for the inter-arrival time) and to decode the batch into nPrint rows and inter-arrival times on the host
(:meth:`~netdiff_lib.models.native.representation.Representation.decode`, in worker processes or a thread:
:mod:`~netdiff_lib.models.native.host_decode`) while the device samples the next batch (the run's last batch is
cut in two, 3/4 then 1/4, so that only a small batch is decoded after sampling ends).  Each batch's generator is
seeded by ``(seed, batch number)``, so a seed gives the same traces, whichever decodes them.  It never looks
inside the network: on CUDA a large request samples through ``torch.compile`` by default
(``generate.compile``, :mod:`~netdiff_lib.models.native.compiled`; eager again, with a warning, when compiling
fails), drawing the same random numbers as eager sampling.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from netdiff_lib.errors import ConfigError
from netdiff_lib.models.base import GeneratedTrace

if TYPE_CHECKING:
    from netdiff_lib.models.native.model import NativeModel


def _requests(model: NativeModel, per_class: int | dict[str, int], rng: np.random.Generator,
              length: int | None) -> list[tuple[str, int]]:
    counts = {lab: per_class for lab in model.labels} if isinstance(per_class, int) else dict(per_class)
    unknown = sorted(set(counts) - set(model.labels))
    if unknown:
        raise ConfigError(f"labels {unknown} are not in this model (it knows {', '.join(model.labels)})")
    if any(c < 0 for c in counts.values()):
        raise ConfigError("trace counts must be >= 0")
    cap = model.config.model.max_packets
    out = []
    for lab in model.labels:
        k = counts.get(lab, 0)
        pool = model.length_pool(lab)
        if length is not None:
            lens = np.full(k, min(length, cap))
        elif len(pool):
            lens = np.minimum(rng.choice(pool, size=k), cap)
        else:
            raise ConfigError(f"class {lab} has no training lengths to draw from")
        out.extend((lab, int(n)) for n in lens)
    return out


def generate_traces(model: NativeModel, per_class: int | dict[str, int], *, steps: int | None = None,
                    guidance: float | None = None, seed: int = 0, batch_tokens: int | None = None,
                    length: int | None = None, progress: bool = True, compile: str | None = None,
                    timings: dict[str, float] | None = None,
                    decode_workers: int | None = None) -> list[GeneratedTrace]:
    """``per_class`` traces per label (or ``{label: n}``), in label order; ``length`` fixes every trace's
    length (else drawn from the class's training traces); ``compile`` (``auto``/``on``/``off``) and
    ``decode_workers`` override the model's ``generate.compile`` and ``generate.decode_workers``.  ``timings``
    (a dict) receives the seconds spent sampling on the device (``device_s``, up to the copy to the host) and
    decoding on the host (``host_s``, summed over the decoding processes; it overlaps the sampling)."""
    from tqdm.auto import tqdm

    from netdiff_lib.models.native.compiled import run_with_fallback, sampling_networks
    from netdiff_lib.models.native.host_decode import HostDecoder, auto_workers

    cfg = model.config
    steps = steps or cfg.diffusion.sample_steps
    guidance = cfg.diffusion.guidance if guidance is None else guidance
    if steps < 1:
        raise ConfigError("steps must be >= 1")
    if guidance < 0:
        raise ConfigError("guidance must be >= 0")
    budget = batch_tokens or cfg.train.batch_tokens
    rng = np.random.default_rng(seed)
    reqs = _requests(model, per_class, rng, length)
    buckets = np.array(cfg.train.buckets)
    dev = next(model.net.parameters()).device
    order = sorted(range(len(reqs)), key=lambda i: (int(buckets[np.searchsorted(buckets, reqs[i][1])]), i))
    index = {lab: i for i, lab in enumerate(model.labels)}
    out: list[GeneratedTrace | None] = [None] * len(reqs)
    bar = tqdm(total=len(reqs), desc="generate", unit="trace", disable=not progress, dynamic_ncols=True)
    pos, batch_no = 0, 0
    rep = model.representation
    clock = timings if timings is not None else {}
    clock.update(device_s=0.0, host_s=0.0)
    pending: list[tuple[list[int], np.ndarray, Future]] = []
    nets = sampling_networks(model, compile, sum(n for _, n in reqs))
    workers = cfg.generate.decode_workers if decode_workers is None else decode_workers
    if workers < 0:
        workers = auto_workers(dev, -(-sum(n for _, n in reqs) // budget))
    with HostDecoder(rep, workers, clock, owner=model) as host:
        while pos < len(order):
            bucket = int(buckets[np.searchsorted(buckets, reqs[order[pos]][1])])
            size = max(1, budget // bucket)
            chunk = [i for i in order[pos : pos + size]
                     if int(buckets[np.searchsorted(buckets, reqs[i][1])]) == bucket]
            if batch_no and pos + len(chunk) == len(order) and len(chunk) > max(3, size // 4):
                chunk = chunk[: len(chunk) * 3 // 4]  # the last batch in two, so most of its decoding overlaps
            lens = np.array([reqs[i][1] for i in chunk])
            state = int(np.random.SeedSequence([seed, batch_no]).generate_state(1)[0])
            labels = torch.tensor([index[reqs[i][0]] for i in chunk], device=dev)
            run = partial(_sample_batch, model, state, labels, torch.from_numpy(lens).to(dev), bucket,
                          steps=steps, guidance=guidance, padded=bool((lens < bucket).any()))
            t0 = time.perf_counter()
            arrays, nets = run_with_fallback(model, nets, run)
            clock["device_s"] += time.perf_counter() - t0
            pending.append((chunk, lens, host.submit(arrays, lens, [reqs[i][0] for i in chunk], state)))
            pos, batch_no = pos + len(chunk), batch_no + 1
            bar.update(len(chunk))
        for chunk, lens, job in pending:
            matrices, iats = job.result()
            ends = np.cumsum(lens)[:-1]
            for i, matrix, iat in zip(chunk, np.split(matrices, ends), np.split(iats, ends), strict=True):
                iat[0] = 0.0
                out[i] = GeneratedTrace(matrix, iat, reqs[i][0])
    bar.close()
    return [t for t in out if t is not None]


def _sample_batch(model: NativeModel, state: int, labels: torch.Tensor, lengths: torch.Tensor, bucket: int,
                  net: torch.nn.Module, **opts: Any) -> Any:
    """One batch through ``net``; its generator seeded afresh from ``state`` (a failed compiled attempt is
    repeated eagerly with the same draws)."""
    gen = torch.Generator(device=labels.device)
    gen.manual_seed(state)
    return model.representation.sample(net, model.config, labels, lengths, bucket, gen=gen, **opts)
