"""The native sampler: an unrolled loop over a diffusers scheduler, batched by trace length.

:func:`sample` is the continuous sampler, written out like diffusers' ``pipeline_ddpm.py``: start from Gaussian
noise, and at each of the scheduler's timesteps ask the network for the clean sample (twice, with and without
the class, for classifier-free guidance: ``x0 = x0_u + w (x0_c - x0_u)``), clip it to the data range and let
``DPMSolverMultistepScheduler`` (DPM-Solver++, data prediction, 16 steps by default) take the step.  The token
representation samples with :func:`netdiff_lib.models.discrete.sample_tokens`.

:func:`generate_traces` draws trace lengths from each class's training traces (so padding is never generated),
groups the requests into the training length buckets, samples batch by batch and decodes the features with the
model's reversible feature map (numbers snapped to integers, bits to {-1, 0, 1}, header blocks made whole).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from netdiff_lib.errors import ConfigError
from netdiff_lib.models.base import GeneratedTrace
from netdiff_lib.models.discrete import TokenDiT, sample_tokens
from netdiff_lib.models.layers import Trunk

if TYPE_CHECKING:
    from netdiff_lib.models.native import NativeModel


def sampling_scheduler(model: NativeModel, steps: int, device: torch.device | str = "cpu") -> Any:
    """DPM-Solver++ (2nd order, data prediction) over the training noise schedule, set to ``steps`` steps."""
    from diffusers import DPMSolverMultistepScheduler

    d = model.config.diffusion
    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=d.num_train_timesteps, beta_schedule=d.beta_schedule, prediction_type="sample",
        algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
    )
    reset(sched, steps, device)
    return sched


def reset(sched: Any, steps: int, device: torch.device | str = "cpu") -> None:
    """Set the timesteps (on ``device``) and clear the multistep history (once per batch)."""
    with warnings.catch_warnings():  # diffusers calls np.array on a tensor: harmless with numpy 2
        warnings.simplefilter("ignore", DeprecationWarning)
        sched.set_timesteps(steps, device=device)


@torch.no_grad()
def sample(net: Trunk, sched: Any, labels: torch.Tensor, lengths: torch.Tensor, n: int, guidance: float,
           generator: torch.Generator, padded: bool = True) -> torch.Tensor:
    """Clean feature samples (B, n, F) for ``labels`` (B,) of ``lengths`` (B,), guidance ``w`` (1 = none)."""
    dev = labels.device
    b = len(labels)
    x = torch.randn((b, n, net.n_features), generator=generator, device=dev) * sched.init_noise_sigma
    alphas = sched.alphas_cumprod.to(dev, torch.float32)
    guided = guidance != 1.0
    y = torch.cat([labels, torch.full_like(labels, net.null_class)]) if guided else labels
    if guidance == 0.0:
        y, guided = torch.full_like(labels, net.null_class), False
    lens = torch.cat([lengths, lengths]) if guided else lengths
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda"
                else contextlib.nullcontext())
    for t in sched.timesteps:
        tt = torch.full((len(y),), int(t), device=dev, dtype=torch.long)
        x_in = torch.cat([x, x]) if guided else x
        with autocast:
            x0 = net(x_in, tt, y, lens, alphas[tt].sqrt(), padded=padded)
        if guided:
            cond, uncond = x0.chunk(2)
            x0 = uncond + guidance * (cond - uncond)
        x = sched.step(x0.clamp(-1.0, 1.0), t, x, generator=generator).prev_sample
    return x.clamp(-1.0, 1.0)


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
                    length: int | None = None, progress: bool = True,
                    timings: dict[str, float] | None = None) -> list[GeneratedTrace]:
    """``per_class`` traces per label (or ``{label: n}``), in label order; ``length`` fixes every trace's
    length (else drawn from the class's training traces).  ``timings`` (a dict) receives the seconds spent
    sampling on the device (``device_s``, up to the copy to the host) and decoding on the host (``host_s``,
    which overlaps the next batch's sampling)."""
    from tqdm.auto import tqdm

    cfg = model.config
    steps = steps or cfg.diffusion.sample_steps
    guidance = cfg.diffusion.guidance if guidance is None else guidance
    if not 1 <= steps <= cfg.diffusion.num_train_timesteps:
        raise ConfigError(f"steps must be in 1..{cfg.diffusion.num_train_timesteps}")
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
    draw, decode = _batch_sampler(model, steps, guidance, dev)
    clock = timings if timings is not None else {}
    clock.update(device_s=0.0, host_s=0.0)
    pending: list[tuple[list[int], np.ndarray, Future]] = []
    with ThreadPoolExecutor(max_workers=1) as host:
        while pos < len(order):
            bucket = int(buckets[np.searchsorted(buckets, reqs[order[pos]][1])])
            size = max(1, budget // bucket)
            chunk = [i for i in order[pos : pos + size]
                     if int(buckets[np.searchsorted(buckets, reqs[i][1])]) == bucket]
            lens = np.array([reqs[i][1] for i in chunk])
            state = int(np.random.SeedSequence([seed, batch_no]).generate_state(1)[0])
            gen = torch.Generator(device=dev)
            gen.manual_seed(state)
            labels = torch.tensor([index[reqs[i][0]] for i in chunk], device=dev)
            t0 = time.perf_counter()
            arrays = draw(labels, lens, bucket, gen)
            clock["device_s"] += time.perf_counter() - t0
            pending.append((chunk, lens, host.submit(_timed, clock, decode, arrays, lens,
                                                     np.random.default_rng(state))))
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


def _timed(clock: dict[str, float], fn: Any, *args: Any) -> Any:
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        clock["host_s"] += time.perf_counter() - t0


def _batch_sampler(model: NativeModel, steps: int, guidance: float, dev: torch.device) -> tuple[Any, Any]:
    """(``sample(labels, lengths, bucket, generator) -> host arrays``, ``decode(host arrays, lengths, rng) ->
    (nPrint rows of all traces, inter-arrival µs)``): one batch on the device, then one vectorised decode of
    all its rows on the host (which runs in a thread while the device samples the next batch)."""
    padded = lambda lens, bucket: bool((lens < bucket).any())  # noqa: E731
    valid = lambda lens, bucket: (np.arange(bucket)[None] < lens[:, None]).ravel()  # noqa: E731
    if isinstance(model.net, TokenDiT):
        applicable = torch.from_numpy(model.codec.applicable()).to(dev)

        def sample_tok(labels: torch.Tensor, lens: np.ndarray, bucket: int, gen: torch.Generator) -> tuple:
            tokens, iat = sample_tokens(model.net, labels, torch.from_numpy(lens).to(dev), bucket, steps=steps,
                                        guidance=guidance, applicable=applicable, gen=gen, cfg=model.config,
                                        padded=padded(lens, bucket))
            keep = valid(lens, bucket)
            names = [model.labels[i] for i in labels.tolist()]
            rows = tokens.reshape(-1, tokens.shape[-1]).cpu().numpy()[keep]
            return rows, iat.float().cpu().numpy().ravel()[keep], names

        def decode_tok(host: tuple, lens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            rows, iat, names = host
            return model.codec.decode(rows, iat, np.repeat(np.arange(len(lens)), lens), rng, names)

        return sample_tok, decode_tok
    sched = sampling_scheduler(model, steps, dev)

    def sample_feat(labels: torch.Tensor, lens: np.ndarray, bucket: int, gen: torch.Generator) -> np.ndarray:
        reset(sched, steps, dev)
        feats = sample(model.net, sched, labels, torch.from_numpy(lens).to(dev), bucket, guidance, gen,
                       padded=padded(lens, bucket))
        return feats.float().cpu().numpy().reshape(-1, feats.shape[-1])[valid(lens, bucket)]

    def decode_feat(host: np.ndarray, lens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return model.codec.decode(host)

    return sample_feat, decode_feat
