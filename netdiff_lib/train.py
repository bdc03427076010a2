"""Train the native generator: ``train(cfg, data, out=MODEL_DIR)`` on :class:`~netdiff_lib.models.base.TrainingData`.

One process or several: under ``accelerate launch [--num_processes N]`` (the pipeline's train stage,
:mod:`netdiff_lib.stages.launch`) :class:`accelerate.Accelerator` sets up DDP; every rank builds the same data
and the same batch plan and takes every N-th batch (:mod:`netdiff_lib.models.data`), so the effective batch
grows with N.

Noise comes from diffusers' ``DDPMScheduler`` (``add_noise``); the network predicts the clean sample, and the
loss is the masked per-token MSE weighted by min-SNR-γ (``min(SNR, γ)`` for x0 prediction).  Every random
draw of a step (timesteps, noise, class dropout) comes from a generator seeded by ``(seed, step, rank)``, and
the batch plan by ``(seed, epoch)``, so a run resumed from a checkpoint (model, optimizer, LR schedule, EMA,
RNG states, data position, loop state) takes exactly the same steps as one never stopped.

Stopping: after ``train.steps`` steps or ``train.time_budget_s`` seconds, whichever comes first.  With a time
budget the cosine LR horizon is estimated from the measured step rate early on and re-estimated every
``HORIZON_REFRESH`` steps from the rate since then (the first steps are slower: CUDA start-up and kernel
selection), and saved in the loop state.

Non-finite steps: a step whose loss or gradient is not finite is skipped (the fused AdamW takes ``found_inf``,
so no device sync is needed) and counted in the loss curve and the model card; a whole logging window of them
means training diverged and stops with a :class:`TrainingError`, and a model whose weights are not finite is
never written.  At the end the EMA weights, config, feature maps, class map, statistics, model card and loss curve
are written to the model folder (local, or staged locally and uploaded to an ``s3://`` URI).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netdiff_lib import checkpoint
from netdiff_lib.config import Config
from netdiff_lib.errors import ConfigError, TrainingError
from netdiff_lib.models.base import TrainingData
from netdiff_lib.models.card import build_card, write_card, write_loss_curve
from netdiff_lib.models.data import BucketPlan, PackedTraces, trace_stats
from netdiff_lib.models.discrete import token_loss
from netdiff_lib.models.features import FeatureCodec
from netdiff_lib.models.layers import count_parameters
from netdiff_lib.models.native import build_network, fit_codec, save_model_dir
from netdiff_lib.models.tokens import FieldTokenizer

CHECKPOINTS = "checkpoints"
HORIZON_PROBE = (20, 60)  # steps between which the step rate is measured when a time budget is set
HORIZON_REFRESH = 500  # then re-estimate the horizon every this many steps, from the rate since HORIZON_PROBE[1]


@dataclass
class LoopState:
    """Everything about the loop that a resume needs besides tensors."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    elapsed_s: float = 0.0
    horizon: int = 0
    tokens: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    probe_s: float = 0.0
    probe_hi_s: float = 0.0

    @property
    def skipped(self) -> int:
        """Steps skipped so far for a non-finite loss or gradient (counted per logging window)."""
        return sum(int(h.get("skipped", 0)) for h in self.history)


@dataclass
class Prepared:
    """The training data, ready for the loop."""

    labels: list[str]
    codec: FeatureCodec | FieldTokenizer
    packed: PackedTraces
    stats: dict[str, Any]
    data_info: dict[str, Any]
    payloads: Any = None  # a PayloadProfile, saved as payloads.json


def prepare_data(cfg: Config, data: TrainingData) -> Prepared:
    """Cut the traces to the model's ``max_packets``, fit the feature maps, pack the features."""
    traces = [t.head(cfg.model.max_packets) for t in data.traces]
    labels = data.labels
    codec = fit_codec(cfg, [t.matrix for t in traces], [str(t.label) for t in traces])
    packed = PackedTraces.build(traces, codec, labels)
    info = {"source": data.source, "fingerprint": data.fingerprint, "captures": data.captures,
            "traces": len(traces), "packets": int(packed.lengths.sum()), "max_packets": cfg.model.max_packets,
            "encoded_max_packets": data.max_packets, "representation": cfg.model.representation}
    if isinstance(codec, FieldTokenizer):
        info["vocabulary"] = dict(zip(codec.fields, codec.sizes, strict=True))
        info["exact_token_share"] = codec.coverage
    return Prepared(labels, codec, packed, trace_stats(traces, labels), info, data.payloads)


def noise_scheduler(cfg: Config) -> Any:
    from diffusers import DDPMScheduler

    d = cfg.diffusion
    return DDPMScheduler(num_train_timesteps=d.num_train_timesteps, beta_schedule=d.beta_schedule,
                         prediction_type="sample", clip_sample=False)


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, embeddings and the position table."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed" not in name and name != "pos" else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per step, and it honours ``found_inf`` (see skip_nonfinite)
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.99), fused=True)


def skip_nonfinite(opt: torch.optim.Optimizer, grad_norm: torch.Tensor) -> torch.Tensor:
    """Make the next ``opt.step()`` a no-op when ``grad_norm`` is not finite (a NaN/inf loss gives one), without
    a device sync; returns the flag (1.0 = skipped) for counting.  ``opt`` must be a fused AdamW, unwrapped."""
    bad = (~torch.isfinite(grad_norm.detach().float())).float().reshape(())
    opt.found_inf = bad  # type: ignore[attr-defined]  # read by the fused kernel, as GradScaler sets it
    return bad


def lr_factor(step: int, state: LoopState, cfg: Config) -> float:
    """Linear warm-up, then constant or cosine down to 10% at ``state.horizon``."""
    warm = cfg.train.warmup_steps
    if step < warm:
        return (step + 1) / warm
    if cfg.train.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, state.horizon - warm))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))
    return g


def diffusion_loss(model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor,
                   noise_sched: Any, cfg: Config, null_class: int, gen: torch.Generator,
                   padded: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(min-SNR weighted loss, plain x0 MSE) of one batch; padding positions are masked out."""
    b, n, _ = x0.shape
    dev = x0.device
    t = torch.randint(0, cfg.diffusion.num_train_timesteps, (b,), generator=gen, device=dev)
    noise = torch.randn(x0.shape, generator=gen, device=dev)
    drop = torch.rand(b, generator=gen, device=dev) < cfg.diffusion.class_dropout
    labels = torch.where(drop, torch.full_like(labels, null_class), labels)
    x_t = noise_sched.add_noise(x0, noise, t)
    ab = noise_sched.alphas_cumprod[t].float()
    pred = model(x_t, t, labels, lengths, ab.sqrt(), padded=padded)
    valid = (torch.arange(n, device=dev)[None] < lengths[:, None]).float()
    err = ((pred - x0) ** 2).mean(dim=-1) * valid
    weight = torch.clamp(ab / (1 - ab), max=cfg.diffusion.min_snr_gamma)
    denom = valid.sum()
    return (err * weight[:, None]).sum() / denom, err.sum().detach() / denom


def make_loss(cfg: Config, codec: FeatureCodec | FieldTokenizer, raw: torch.nn.Module, dev: torch.device) -> Any:
    """``loss(model, x0, labels, lengths, generator, padded) -> (loss, logged error)`` of the representation:
    masked-token cross-entropy (tokens) or the plain x0 MSE (features) is the logged error."""
    if isinstance(codec, FieldTokenizer):
        applicable = torch.from_numpy(codec.applicable()).to(dev)
        return lambda model, x0, labels, lengths, gen, padded: token_loss(
            model, raw, x0, labels, lengths, cfg, applicable, gen, padded)
    noise_sched = noise_scheduler(cfg)
    noise_sched.alphas_cumprod = noise_sched.alphas_cumprod.to(dev)
    return lambda model, x0, labels, lengths, gen, padded: diffusion_loss(
        model, x0, labels, lengths, noise_sched, cfg, raw.null_class, gen, padded)


def _staging(out: str) -> tuple[Path, bool]:
    from netdiff_lib import storage

    if storage.is_remote(out):
        return Path(tempfile.mkdtemp(prefix="netdiff-model-")), True
    return Path(out), False


def _resume(cfg: Config, ckpt_root: str, model: torch.nn.Module, ema: list[torch.Tensor],
            opt: torch.optim.Optimizer, sched: Any, data_fp: str) -> LoopState | None:
    """Load the latest checkpoint into the objects; None when there is none."""
    if checkpoint.latest(ckpt_root) is None:
        return None
    ck = checkpoint.load(ckpt_root)
    saved = Config.from_dict(ck.meta["config"])
    if saved.model != cfg.model or saved.diffusion != cfg.diffusion:
        raise ConfigError(f"checkpoint {ck.name} was trained with another model/diffusion config "
                          f"(preset {saved.preset}); resume with the same --config")
    if ck.meta.get("data_fingerprint") != data_fp:
        raise ConfigError(f"checkpoint {ck.name} was trained on other data (fingerprint differs)")
    model.load_state_dict(ck.model)
    names = [n for n, _ in model.named_parameters()]
    for e, n in zip(ema, names, strict=True):
        e.copy_(ck.ema[n])
    opt.load_state_dict(ck.optimizer)
    for group in opt.param_groups:  # a checkpoint from before the fused optimizer carries fused=None
        group["fused"] = True
    sched.load_state_dict(ck.meta["lr_scheduler"])
    checkpoint.set_rng_state(ck.rng)
    return LoopState(**ck.meta["loop"])


def _save(ckpt_root: str, cfg: Config, state: LoopState, model: torch.nn.Module, ema: list[torch.Tensor],
          opt: torch.optim.Optimizer, sched: Any, data_fp: str) -> None:
    names = [n for n, _ in model.named_parameters()]
    meta = {"backend": cfg.backend, "config": cfg.to_dict(), "loop": asdict(state), "data_fingerprint": data_fp,
            "data_position": {"epoch": state.epoch, "batch": state.batch}, "lr_scheduler": sched.state_dict()}
    checkpoint.save(ckpt_root, state.step, meta, model.state_dict(), dict(zip(names, ema, strict=True)),
                    opt.state_dict(), keep=cfg.train.keep_checkpoints)


def _precision(cfg: Config) -> str:
    mp = cfg.train.mixed_precision
    return ("bf16" if torch.cuda.is_available() else "no") if mp == "auto" else mp


def train(cfg: Config, data: TrainingData, out: str, *, resume: bool = False, progress: bool = True,
          until_step: int | None = None) -> str:
    """Train on ``data``, write the model folder ``out``; returns ``out``.

    ``until_step`` ends this process at that step as if it were stopped there (checkpoint and model folder
    written; the LR schedule still follows the config), so a run can be trained in slices with ``resume``.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    tc = cfg.train
    if not torch.cuda.is_available() and tc.cpu_threads:
        torch.set_num_threads(tc.cpu_threads)
    prep = prepare_data(cfg, data)
    acc = Accelerator(mixed_precision=_precision(cfg), cpu=not torch.cuda.is_available())
    rank, world, dev = acc.process_index, acc.num_processes, acc.device
    torch.manual_seed(tc.seed)
    fp = prep.data_info["fingerprint"]
    plan = BucketPlan(prep.packed.lengths, tc.buckets, tc.batch_tokens, tc.seed, world)
    packed = prep.packed.to(dev)
    model = build_network(cfg, prep.codec, len(prep.labels)).to(dev)
    ema = [p.detach().clone().float() for p in model.parameters()]
    opt = make_optimizer(model, cfg)
    state = LoopState(horizon=tc.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, state, cfg))
    stage, remote = _staging(out)
    ckpt_root = f"{out.rstrip('/')}/{CHECKPOINTS}" if remote else str(stage / CHECKPOINTS)
    if not resume and checkpoint.latest(ckpt_root) is not None:
        raise ConfigError(f"{out} already holds training checkpoints: pass --resume to continue, or use a new folder")
    if resume and (loaded := _resume(cfg, ckpt_root, model, ema, opt, sched, fp)) is not None:
        keep_horizon = tc.time_budget_s is not None and loaded.step >= HORIZON_PROBE[1]
        state.__dict__.update({**loaded.__dict__, "horizon": loaded.horizon if keep_horizon else tc.steps})
        acc.print(f"resumed from step {state.step} (epoch {state.epoch}, batch {state.batch})")
    if tc.compile:
        model = torch.compile(model, dynamic=True)
    model, opt = acc.prepare(model, opt)
    raw = acc.unwrap_model(model)
    params = list(raw.parameters())
    loss_fn = make_loss(cfg, prep.codec, raw, dev)
    acc.print(f"native model: {count_parameters(raw) / 1e6:.2f}M parameters, {len(prep.labels)} classes, "
              f"{prep.data_info['traces']} traces / {prep.data_info['packets']} packets, {world} process(es), "
              f"{plan.batches_per_epoch()} steps per epoch, precision {_precision(cfg)}")
    bar = tqdm(total=state.horizon, initial=state.step, disable=not (progress and acc.is_main_process),
               desc="train", unit="step", dynamic_ncols=True)
    epoch_batches = plan.epoch(state.epoch)
    window = torch.zeros(4, device=dev)  # loss, error and count of the finite steps; skipped steps
    t_start, elapsed0 = time.perf_counter(), state.elapsed_s
    stop = min(tc.steps, until_step or tc.steps)
    while state.step < stop and state.step < state.horizon:
        if state.batch >= len(epoch_batches) // world:
            state.epoch, state.batch = state.epoch + 1, 0
            epoch_batches = plan.epoch(state.epoch)
        bucket, idx = epoch_batches[state.batch * world + rank]
        x0, labels, lengths, padded = packed.batch(idx, bucket)
        gen = step_generator(tc.seed, state.step, rank, dev)
        model.train()
        with acc.autocast():
            loss, mse = loss_fn(model, x0, labels, lengths, gen, padded)
        acc.backward(loss)
        norm = acc.clip_grad_norm_(model.parameters(), tc.grad_clip)
        bad = skip_nonfinite(opt.optimizer, norm) if acc.scaler is None else torch.zeros((), device=dev)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        decay = min(tc.ema_decay, (1 + state.step) / (10 + state.step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1.0 - decay)
            good = torch.stack([loss.detach().float(), mse.float(), torch.ones((), device=dev)])
            window += torch.cat([torch.where(bad > 0, torch.zeros_like(good), good), bad[None]])
        state.step, state.batch = state.step + 1, state.batch + 1
        state.tokens += int(np.minimum(packed.lengths[idx], bucket).sum()) * world
        state.elapsed_s = elapsed0 + time.perf_counter() - t_start
        if state.step % tc.log_every == 0 or state.step in (stop, state.horizon):
            lw, mw, cnt, skipped = window.tolist()
            row = {"step": state.step, "loss": lw / max(cnt, 1), "mse": mw / max(cnt, 1),
                   "lr": float(sched.get_last_lr()[0]), "elapsed_s": round(state.elapsed_s, 2)}
            state.history.append({**row, "skipped": int(skipped)} if skipped else row)
            _check_diverged(state, int(cnt), int(skipped), ckpt_root)
            bar.set_postfix(loss=f"{row['loss']:.4f}", mse=f"{row['mse']:.4f}")
            window.zero_()
        bar.update(1)
        if tc.time_budget_s is not None:
            _apply_budget(state, cfg, acc, bar)
        if state.step % tc.checkpoint_every == 0 and state.step < min(stop, state.horizon):
            acc.wait_for_everyone()
            if acc.is_main_process:
                _save(ckpt_root, cfg, state, raw, ema, opt, sched, fp)
    bar.close()
    acc.wait_for_everyone()
    if acc.is_main_process:
        _save(ckpt_root, cfg, state, raw, ema, opt, sched, fp)
        _finish(stage, cfg, prep, raw, ema, state, world, _precision(cfg))
        if remote:
            _upload(stage, out)
    acc.wait_for_everyone()
    acc.end_training()
    return out


def _check_diverged(state: LoopState, finite: int, skipped: int, ckpt_root: str) -> None:
    """A logging window with no finite step at all means training diverged."""
    if skipped and not finite:
        raise TrainingError(
            f"training diverged: none of the {skipped} steps up to step {state.step} had a finite loss and gradient "
            f"({state.skipped} skipped in all; no model written, checkpoints in {ckpt_root}); lower train.lr "
            "(--set train.lr=...) or change train.seed")


def _apply_budget(state: LoopState, cfg: Config, acc: Any, bar: Any) -> None:
    """Estimate the LR horizon from the step rate (at HORIZON_PROBE[1], then every HORIZON_REFRESH steps and one
    step before the horizon, from the rate since HORIZON_PROBE[1]); stop everyone when the time budget is spent."""
    budget = cfg.train.time_budget_s
    lo, hi = HORIZON_PROBE
    refresh = state.step > hi and state.probe_hi_s > 0 and (
        (state.step - hi) % HORIZON_REFRESH == 0 or state.step + 1 == state.horizon)  # also before stopping early
    if acc.num_processes > 1 and state.step % 10 and state.step != hi and not refresh:
        return  # agree on stopping every 10 steps only: the check is a collective
    if state.step == lo:
        state.probe_s = state.elapsed_s
    rate = 0.0
    if state.step == hi and state.probe_s > 0:
        rate = (hi - lo) / max(1e-6, state.elapsed_s - state.probe_s)
        state.probe_hi_s = state.elapsed_s
    elif refresh:
        rate = (state.step - hi) / max(1e-6, state.elapsed_s - state.probe_hi_s)
    if rate > 0:
        est = torch.tensor([-(state.step + rate * (budget - state.elapsed_s))], device=acc.device)
        slowest = -acc.reduce(est, "max").item()  # the slowest rank's estimate (accelerate has no "min")
        state.horizon = max(state.step + 1, min(cfg.train.steps, int(slowest)))
        bar.total = state.horizon
    over = state.elapsed_s >= budget
    if acc.num_processes > 1:  # all stop once any rank's clock says so
        flag = torch.tensor([float(over)], device=acc.device)
        over = bool(acc.reduce(flag, "max").item() > 0)
    if over:
        state.horizon = state.step


def _finish(stage: Path, cfg: Config, prep: Prepared, raw: torch.nn.Module, ema: list[torch.Tensor],
            state: LoopState, world: int, precision: str) -> None:
    """Write the model folder: EMA weights, config, features, statistics, class map, card, loss curve."""
    from netdiff_lib.dataset import ClassMap

    names = [n for n, _ in raw.named_parameters()]
    if bad := [n for n, e in zip(names, ema, strict=True) if not torch.isfinite(e).all()]:
        raise TrainingError(f"not writing {stage}: the averaged weights of {len(bad)} tensors ({bad[0]}, ...) are "
                            "not finite")
    save_model_dir(stage, raw, dict(zip(names, ema, strict=True)), cfg, prep.codec, prep.labels, prep.stats)
    class_map = ClassMap.from_labels(prep.labels)
    if list(class_map.labels) != prep.labels:
        raise ConfigError("class order differs from the class map's")  # both sort: cannot happen
    class_map.save(stage / "class_map.json")
    last = state.history[-1] if state.history else {}
    training = {"steps": state.step, "elapsed_s": round(state.elapsed_s, 1), "processes": world,
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                "precision": precision, "parameters": count_parameters(raw), "tokens_seen": state.tokens,
                "tokens_per_s": round(state.tokens / max(state.elapsed_s, 1e-9)),
                "final_loss": last.get("loss"), "final_mse": last.get("mse"), "skipped_steps": state.skipped}
    if torch.cuda.is_available():
        training["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    card = build_card(backend=cfg.backend, config=cfg.to_dict(), data=prep.data_info,
                      class_map={lab: class_map.type_name(lab) for lab in class_map}, stats=prep.stats,
                      training=training)
    write_card(stage, card)
    write_loss_curve(stage, state.history)
    if prep.payloads is not None:  # payload structure per class, for reconstruction
        from netdiff_lib.payloads import FILE_NAME

        prep.payloads.save(stage / FILE_NAME)


def _upload(stage: Path, out: str) -> None:
    from netdiff_lib import storage

    for path in sorted(stage.iterdir()):
        if path.is_file():
            storage.put(path, storage.join(out, path.name))
    shutil.rmtree(stage, ignore_errors=True)
