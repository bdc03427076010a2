"""The native backend's training loop, generic over the representation: ``train(cfg, data, out=MODEL_DIR)``.

The loop knows the seam (:mod:`~netdiff_lib.models.native.representation`), not the representation: it fits
the representation on a bounded sample of the training traces and packs their model rows on the device, or
streams them batch by batch from the trace source for a large data set (:func:`~netdiff_lib.models.native.data.
prepare_data`, config section ``data``), builds the representation's network, and steps: a length-bucketed
batch, the representation's loss (for ``tokens``: the masked-token cross-entropy of the two-stage discrete
diffusion plus the min-SNR weighted error of the inter-arrival estimate), backward, gradient clipping, a fused
AdamW step, an EMA of the weights.  It logs the loss and the representation's ``metric`` (``token_ce``) every
``train.log_every`` steps.

One process or several: under ``accelerate launch [--num_processes N]`` (the pipeline's train stage,
:mod:`netdiff_lib.stages.launch`) :class:`accelerate.Accelerator` sets up DDP; every rank builds the same data
and the same batch plan and takes every N-th batch (:mod:`~netdiff_lib.models.native.data`), so the effective
batch grows with N.

Exact resume: every random draw of a step (the representation's loss draws from it) comes from a generator
seeded by ``(seed, step, rank)``, and the batch plan by ``(seed, epoch)``, so a run resumed from a checkpoint
(model, optimizer, LR schedule, EMA, RNG states, data position, loop state) takes exactly the same steps as
one never stopped.

Stopping: after ``train.steps`` steps or ``train.time_budget_s`` seconds, whichever comes first.  With a time
budget the cosine LR horizon is estimated from the measured step rate early on and re-estimated every
``HORIZON_REFRESH`` steps from the rate since then (the first steps are slower: CUDA start-up and kernel
selection), and saved in the loop state.

Non-finite steps: a step whose gradient is not finite (a NaN/inf loss gives one) is skipped (:func:`skip_nonfinite`:
the fused AdamW takes ``found_inf``, so no device sync is needed; under fp16 the loss scaler skips it itself) and
counted in the loss history and the model card; a whole logging window of them means training diverged and
stops with a :class:`TrainingError`, and a model whose weights are not finite is never written.

``train.compile``: only the forward pass runs through the ``torch.compile`` wrapper; the optimizer, the EMA,
checkpoints and the model folder see the plain network, so no ``_orig_mod.`` prefix reaches a saved key (and
one from an older run is removed when loading or resuming).

Evaluation hook: ``train(..., hook=StepHook)`` calls the hook every ``hook.every`` steps on the main process
with a :class:`~netdiff_lib.models.native.model.NativeModel` of the current EMA weights; the numbers it
returns go into the loop state's ``evaluations`` (checkpointed; in the model card), and the global random
states are restored after it, so a hook never changes training.  The hook also runs at the run's last step.

Privacy gate (``privacy.mode=on``, :mod:`~netdiff_lib.models.native.privacy`): part of the captures is held out
before anything is fitted, and the gate is the hook.  After each evaluation the best gate-holding one is chosen
again; when it is the new one its EMA weights are kept (and saved in every checkpoint, beside the EMA, under the
prefix ``gate_best.``, so a resumed run keeps the same choice).  The model folder gets the chosen weights; when
no evaluation held the gate, none is written (TrainingError).

At the end the EMA weights, config, the representation's fitted state, class map, statistics, model card and
loss curve are written to the model folder (local, or staged locally and uploaded to an ``s3://`` URI).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from netdiff_lib import checkpoint
from netdiff_lib.config import Config
from netdiff_lib.errors import ConfigError, TrainingError
from netdiff_lib.models.base import TrainingData
from netdiff_lib.models.native.data import BucketPlan, Prepared, batches, prepare_data, step_generator
from netdiff_lib.models.native.layers import count_parameters
from netdiff_lib.models.native.model import NativeModel, plain_state, write_model_folder
from netdiff_lib.models.native.privacy import PrivacyGate, choose, gate_entries, holdout_of

BEST = "gate_best."  # checkpoint key prefix of the kept (gate-holding) EMA weights

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
    evaluations: list[dict[str, float]] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """Steps skipped so far for a non-finite loss or gradient (counted per logging window)."""
        return sum(int(h.get("skipped", 0)) for h in self.history)


class StepHook(Protocol):
    """Called every ``every`` steps with the step and a model of the current EMA weights; returns numbers to
    record (e.g. a privacy gate's DCR ratio and membership-inference AUC on held-out traces)."""

    every: int

    def __call__(self, step: int, model: NativeModel) -> dict[str, float]: ...


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, embeddings and the position table."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed" not in name and name != "pos" else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per step, and it honours ``found_inf`` (see skip_nonfinite)
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.99), fused=True)


def skip_nonfinite(opt: torch.optim.Optimizer, grad_norm: torch.Tensor, scaler: Any = None) -> torch.Tensor:
    """The flag (1.0 = skipped) of a step whose gradient norm is not finite (a NaN/inf loss gives one), without a
    device sync, and the step skipped: without a loss ``scaler`` the next ``opt.step()`` becomes a no-op through
    the fused AdamW's ``found_inf`` (``opt`` a fused AdamW, unwrapped); with one (fp16's GradScaler, gradients
    unscaled before the norm was taken) the scaler skips a step with a non-finite gradient itself and lowers its
    scale, and the flag still counts it, so fp16 training detects divergence too."""
    bad = (~torch.isfinite(grad_norm.detach().float())).float().reshape(())
    if scaler is None:
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


def _staging(out: str) -> tuple[Path, bool]:
    from netdiff_lib import storage

    if storage.is_remote(out):
        return Path(tempfile.mkdtemp(prefix="netdiff-model-")), True
    return Path(out), False


def _resume(cfg: Config, ckpt_root: str, model: torch.nn.Module, ema: list[torch.Tensor],
            opt: torch.optim.Optimizer, sched: Any, data_fp: str, metric: str,
            best: list[torch.Tensor]) -> LoopState | None:
    """Load the latest checkpoint into the objects (the kept gate weights into ``best``); None when there is none."""
    if checkpoint.latest(ckpt_root) is None:
        return None
    ck = checkpoint.load(ckpt_root)
    saved = Config.from_dict(ck.meta["config"])
    if saved.model != cfg.model or saved.diffusion != cfg.diffusion:
        raise ConfigError(f"checkpoint {ck.name} was trained with another model/diffusion config "
                          f"(preset {saved.preset}); resume with the same --config")
    if saved.data.sample_per_class != cfg.data.sample_per_class:
        raise ConfigError(f"checkpoint {ck.name} fitted its representation on data.sample_per_class="
                          f"{saved.data.sample_per_class} traces per class; resume with the same")
    if (saved.privacy.mode, saved.privacy.holdout) != (cfg.privacy.mode, cfg.privacy.holdout):
        raise ConfigError(f"checkpoint {ck.name} was trained with --privacy {saved.privacy.mode} (holdout "
                          f"{saved.privacy.holdout}), on other traces; resume with the same privacy settings")
    if ck.meta.get("data_fingerprint") != data_fp:
        raise ConfigError(f"checkpoint {ck.name} was trained on other data (fingerprint differs)")
    model.load_state_dict(plain_state(ck.model))  # plain keys also from a run that saved compiled ones
    names, saved_ema = [n for n, _ in model.named_parameters()], plain_state(ck.ema)
    for e, n in zip(ema, names, strict=True):
        e.copy_(saved_ema[n])
    if BEST + names[0] in saved_ema:
        best[:] = [saved_ema[BEST + n].to(ema[0].device) for n in names]
    opt.load_state_dict(ck.optimizer)
    for group in opt.param_groups:  # a checkpoint from before the fused optimizer carries fused=None
        group["fused"] = True
    sched.load_state_dict(ck.meta["lr_scheduler"])
    checkpoint.set_rng_state(ck.rng)
    loop = LoopState(**ck.meta["loop"])
    for row in loop.history:  # checkpoints from before the metric was named by its representation
        if "mse" in row:
            row[metric] = row.pop("mse")
    return loop


def _save(ckpt_root: str, cfg: Config, state: LoopState, model: torch.nn.Module, ema: list[torch.Tensor],
          opt: torch.optim.Optimizer, sched: Any, data_fp: str, best: list[torch.Tensor]) -> None:
    names = [n for n, _ in model.named_parameters()]
    kept = {BEST + n: b for n, b in zip(names, best, strict=True)} if best else {}
    meta = {"backend": cfg.backend, "config": cfg.to_dict(), "loop": asdict(state), "data_fingerprint": data_fp,
            "data_position": {"epoch": state.epoch, "batch": state.batch}, "lr_scheduler": sched.state_dict()}
    checkpoint.save(ckpt_root, state.step, meta, model.state_dict(), dict(zip(names, ema, strict=True)) | kept,
                    opt.state_dict(), keep=cfg.train.keep_checkpoints)


def _precision(cfg: Config) -> str:
    mp = cfg.train.mixed_precision
    return ("bf16" if torch.cuda.is_available() else "no") if mp == "auto" else mp


def train(cfg: Config, data: TrainingData, out: str, *, resume: bool = False, progress: bool = True,
          until_step: int | None = None, hook: StepHook | None = None) -> str:
    """Train on ``data``, write the model folder ``out``; returns ``out``.

    ``until_step`` ends this process at that step as if it were stopped there (checkpoint and model folder
    written; the LR schedule still follows the config), so a run can be trained in slices with ``resume``.
    ``hook``: an evaluation every ``hook.every`` steps and at the last (see the module docstring); with
    ``privacy.mode=on`` the privacy gate is the hook.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    tc = cfg.train
    if not torch.cuda.is_available() and tc.cpu_threads:
        torch.set_num_threads(tc.cpu_threads)
    holdout = holdout_of(cfg, data, hook)
    prep = prepare_data(cfg, data if holdout is None else holdout.training_data(data))
    rep = prep.representation
    acc = Accelerator(mixed_precision=_precision(cfg), cpu=not torch.cuda.is_available())
    rank, world, dev = acc.process_index, acc.num_processes, acc.device
    if holdout is not None:
        prep.data_info["holdout"] = holdout.describe()
        hook = PrivacyGate(cfg, prep, holdout, dev)
        acc.print(f"privacy gate on: {len(holdout.held_idx)} traces held out ({cfg.privacy.holdout:.0%} of each "
                  f"class's captures), DCR ratio and membership AUC every {cfg.privacy.every} steps; --privacy off: "
                  "none")
    else:
        acc.print("privacy gate off: trained on every trace, no DCR/membership check (--privacy on: the gate)")
    best: list[torch.Tensor] = []  # the EMA weights of the chosen gate-holding evaluation
    torch.manual_seed(tc.seed)
    fp = prep.data_info["fingerprint"]
    plan = BucketPlan(prep.lengths, tc.buckets, tc.batch_tokens, tc.seed, world)
    net = rep.network(cfg, len(prep.labels)).to(dev)  # the plain network: optimizer, EMA, checkpoints, folder
    ema = [p.detach().clone().float() for p in net.parameters()]
    opt = make_optimizer(net, cfg)
    state = LoopState(horizon=tc.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, state, cfg))
    stage, remote = _staging(out)
    ckpt_root = f"{out.rstrip('/')}/{CHECKPOINTS}" if remote else str(stage / CHECKPOINTS)
    if not resume and checkpoint.latest(ckpt_root) is not None:
        raise ConfigError(f"{out} already holds training checkpoints: pass --resume to continue, or use a new folder")
    if resume and (loaded := _resume(cfg, ckpt_root, net, ema, opt, sched, fp, rep.metric, best)) is not None:
        keep_horizon = tc.time_budget_s is not None and loaded.step >= HORIZON_PROBE[1]
        state.__dict__.update({**loaded.__dict__, "horizon": loaded.horizon if keep_horizon else tc.steps})
        acc.print(f"resumed from step {state.step} (epoch {state.epoch}, batch {state.batch})")
    model, opt = acc.prepare(torch.compile(net, dynamic=True) if tc.compile else net, opt)  # runs the forward pass
    params = list(net.parameters())
    acc.print(f"native model ({rep.name}): {count_parameters(net) / 1e6:.2f}M parameters, {len(prep.labels)} "
              f"classes, {prep.data_info['traces']} traces / {prep.data_info['packets']} packets, {world} "
              f"process(es), {plan.batches_per_epoch()} steps per epoch, precision {_precision(cfg)}, data "
              f"{'streamed' if prep.packed is None else 'packed on the device'}")
    bar = tqdm(total=state.horizon, initial=state.step, disable=not (progress and acc.is_main_process),
               desc="train", unit="step", dynamic_ncols=True)
    feed = batches(prep, cfg, plan, rank, state.epoch, state.batch, dev)
    window = torch.zeros(4, device=dev)  # loss, metric and count of the finite steps; skipped steps
    t_start, elapsed0 = time.perf_counter(), state.elapsed_s
    stop = min(tc.steps, until_step or tc.steps)
    while state.step < stop and state.step < state.horizon:
        state.epoch, state.batch, bucket, idx, x0, labels, lengths, padded = next(feed)
        gen = step_generator(tc.seed, state.step, rank, dev)
        model.train()
        with acc.autocast():
            loss, metric = rep.loss(model, net, cfg, x0, labels, lengths, gen, padded)
        acc.backward(loss)
        norm = acc.clip_grad_norm_(model.parameters(), tc.grad_clip)
        bad = skip_nonfinite(opt.optimizer, norm, acc.scaler)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        decay = min(tc.ema_decay, (1 + state.step) / (10 + state.step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1.0 - decay)
            good = torch.stack([loss.detach().float(), metric.float(), torch.ones((), device=dev)])
            window += torch.cat([torch.where(bad > 0, torch.zeros_like(good), good), bad[None]])
        state.step, state.batch = state.step + 1, state.batch + 1
        state.tokens += int(np.minimum(prep.lengths[idx], bucket).sum()) * world
        state.elapsed_s = elapsed0 + time.perf_counter() - t_start
        if state.step % tc.log_every == 0 or state.step in (stop, state.horizon):
            _log(state, window, rep.metric, float(sched.get_last_lr()[0]), ckpt_root, bar)
        bar.update(1)
        if tc.time_budget_s is not None:
            _apply_budget(state, cfg, acc, bar)
        if hook is not None and (state.step % hook.every == 0 or state.step == min(tc.steps, state.horizon)):
            _evaluate(hook, state, cfg, prep, net, ema, acc)
            if holdout is not None and choose(state.evaluations, cfg.privacy) == len(state.evaluations) - 1:
                best[:] = [e.detach().clone() for e in ema]  # the new choice (main process only)
        if state.step % tc.checkpoint_every == 0 and state.step < min(stop, state.horizon):
            acc.wait_for_everyone()
            if acc.is_main_process:
                _save(ckpt_root, cfg, state, net, ema, opt, sched, fp, best)
    bar.close()
    feed.close()  # stops the reader processes of a streamed run
    acc.wait_for_everyone()
    if acc.is_main_process:
        _save(ckpt_root, cfg, state, net, ema, opt, sched, fp, best)
        gated = {"privacy": "off"} if holdout is None else gate_entries(
            cfg, state.evaluations, holdout, bool(best), state.step >= min(tc.steps, state.horizon), ckpt_root)
        if gated is not None:
            _finish(stage, cfg, prep, net, best or ema, state, world, _precision(cfg), gated)
        if remote:
            _upload(stage, out)
    acc.wait_for_everyone()
    acc.end_training()
    return out


def _log(state: LoopState, window: torch.Tensor, metric: str, lr: float, ckpt_root: str, bar: Any) -> None:
    """One row of the loss history from the window's sums (then cleared); stop if the window diverged."""
    lw, mw, cnt, skipped = window.tolist()
    row = {"step": state.step, "loss": lw / max(cnt, 1), metric: mw / max(cnt, 1), "lr": lr,
           "elapsed_s": round(state.elapsed_s, 2)}
    state.history.append({**row, "skipped": int(skipped)} if skipped else row)
    _check_diverged(state, int(cnt), int(skipped), ckpt_root)
    bar.set_postfix({"loss": f"{row['loss']:.4f}", metric: f"{row[metric]:.4f}"})
    window.zero_()


def _evaluate(hook: StepHook, state: LoopState, cfg: Config, prep: Prepared, net: torch.nn.Module,
              ema: list[torch.Tensor], acc: Any) -> None:
    """Run ``hook`` on the main process with a model of the EMA weights; keep the global RNG states."""
    acc.wait_for_everyone()
    if acc.is_main_process:
        rng = checkpoint.rng_state()
        names = [n for n, _ in net.named_parameters()]
        copy = prep.representation.network(cfg, len(prep.labels)).to(acc.device)
        copy.load_state_dict(dict(zip(names, ema, strict=True)))
        model = NativeModel(copy.eval(), cfg, prep.representation, prep.labels, prep.stats)
        with torch.no_grad():
            result = hook(state.step, model)
        state.evaluations.append({"step": state.step, **{k: float(v) for k, v in result.items()}})
        checkpoint.set_rng_state(rng)
    acc.wait_for_everyone()


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


def _finish(stage: Path, cfg: Config, prep: Prepared, net: torch.nn.Module, ema: list[torch.Tensor],
            state: LoopState, world: int, precision: str, privacy: dict[str, Any]) -> None:
    """Write the model folder (:func:`~netdiff_lib.models.native.model.write_model_folder`) with the EMA weights
    ``ema`` (the gate's choice when it is on; ``privacy``: the card's entries about it)."""
    metric = prep.representation.metric
    last = state.history[-1] if state.history else {}
    training = {"steps": state.step, "elapsed_s": round(state.elapsed_s, 1), "processes": world,
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                "precision": precision, "parameters": count_parameters(net), "tokens_seen": state.tokens,
                "tokens_per_s": round(state.tokens / max(state.elapsed_s, 1e-9)),
                "final_loss": last.get("loss"), f"final_{metric}": last.get(metric), "skipped_steps": state.skipped}
    if state.evaluations and "privacy_gate" not in privacy:
        training["evaluations"] = state.evaluations
    training |= privacy
    if torch.cuda.is_available():
        training["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    names = [n for n, _ in net.named_parameters()]
    write_model_folder(stage, cfg, prep, dict(zip(names, ema, strict=True)), training, state.history)
    if "privacy_gate" in privacy:
        from netdiff_lib.models.native.privacy import write_gate_plot

        write_gate_plot(stage, state.evaluations, privacy["privacy_step"], cfg.privacy)


def _upload(stage: Path, out: str) -> None:
    from netdiff_lib import storage

    for path in sorted(stage.iterdir()):
        if path.is_file():
            storage.put(path, storage.join(out, path.name))
    shutil.rmtree(stage, ignore_errors=True)
