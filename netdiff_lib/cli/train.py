"""``netdiff train``: train a generator (backend ``native`` by default) on labelled captures.

The captures are encoded once (first ``--max-packets`` packets each) and handed to the backend as
:class:`~netdiff_lib.models.base.TrainingData`; its config comes from ``backend.config(preset, ...)``.
Without ``--config`` the preset follows the device (``base`` on a GPU, ``tiny`` on a CPU); Ctrl-C names the last
checkpoint and the command that resumes from it.

Several GPUs: ``--gpus N|all`` (default: every GPU of the machine) trains data-parallel in one process per GPU
(:func:`netdiff_lib.stages.launch.launch`, the pipeline's train stage's launcher); the captures are encoded
once, here.  The hidden ``--cpu-processes N`` does the same with N processes on the CPU (DDP over gloo), so the
launch path can be tested without GPUs.  Inside a launcher's process (``torch.distributed.run``, ``accelerate
launch``) this command trains as that process's rank and launches nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

from netdiff_lib.cli._options import add_out, add_quiet

NAME = "train"
HELP = "train a generator on labelled captures (<label>/*.pcap) into a model folder"
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdiff_lib.config import PRESETS
    from netdiff_lib.schema import MAX_PACKETS

    p.add_argument("--data", required=True, help="folder (or s3:// prefix) of <label>/*.pcap captures, or a trace "
                                                 "store (netdiff encode --format store)")
    add_out(p, "model folder to write (local or s3://)", metavar="MODEL_DIR")
    p.add_argument("--backend", default="native", help="generator backend (default: native)")
    p.add_argument("--config", choices=PRESETS,
                   help="the backend's preset (default: base on a GPU, tiny on a CPU; as netdiff run)")
    p.add_argument("--weights", metavar="PATH_OR_URI",
                   help="pretrained weights (sd15: Stable Diffusion 1.5 as a diffusers folder, .safetensors/.ckpt "
                        "file, Hugging Face cache folder or s3:// URI)")
    p.add_argument("--controlnet", metavar="PATH_OR_URI", help="ControlNet weights (sd15: canny), as --weights")
    p.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps")
    p.add_argument("--privacy", choices=("on", "off"),
                   help="hold out part of the captures and keep only a checkpoint that passes the privacy gate "
                        "(DCR ratio >= 1, membership AUC <= 0.6; native backend; default: the preset's, on except "
                        "for tiny); off: no gate")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. model.port_slots=0 (repeatable)")
    from netdiff_lib.segment.options import add_trace_arguments

    add_trace_arguments(p)
    p.add_argument("--max-packets", type=int, default=MAX_PACKETS, metavar="N",
                   help=f"packets encoded per capture (default {MAX_PACKETS})")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--workers", type=int, help="processes encoding captures (default: up to 8)")
    p.add_argument("--gpus", metavar="N|all",
                   help="train on N GPUs of this machine, one process each (default: all of them)")
    p.add_argument("--cpu-processes", type=int, default=0, help=argparse.SUPPRESS)  # DDP over gloo, for tests
    add_quiet(p, "no progress bar", aliases=("--no-progress",))


def settings(args: argparse.Namespace) -> list[str]:
    """``--set`` values plus the flags that are config values too."""
    extra = [f"train.time_budget_s={args.time_budget}"] if args.time_budget is not None else []
    extra += [f"train.checkpoint_every={args.checkpoint_every}"] if args.checkpoint_every is not None else []
    return [*args.settings, *extra]


def pretrained(args: argparse.Namespace) -> dict[str, str]:
    """``--weights`` / ``--controlnet`` as the backend interface's weights by role."""
    given = {"base": getattr(args, "weights", None), "controlnet": getattr(args, "controlnet", None)}
    return {role: uri for role, uri in given.items() if uri}


def interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C left: the last checkpoint under ``--out`` and the command that continues from it."""
    import shlex

    from netdiff_lib import checkpoint

    root = checkpoint.root_of(args.out)
    name = checkpoint.latest(root)
    if name is None:
        return f"netdiff train: interrupted before the first checkpoint; nothing to resume in {args.out}"
    given = getattr(args, "argv", None) or sys.argv[1:]
    command = shlex.join(["netdiff", *given, *([] if "--resume" in given else ["--resume"])])
    return f"netdiff train: interrupted; last checkpoint {root}/{name}; to continue:\n  {command}"


def run(args: argparse.Namespace) -> int:
    try:
        return _train(args)
    except KeyboardInterrupt:
        print(interrupted(args), file=sys.stderr)
        return 130


def _train(args: argparse.Namespace) -> int:
    from netdiff_lib.config import cpu_warning, default_preset
    from netdiff_lib.destination import check_output_dir
    from netdiff_lib.encoded import from_captures, training_data_from_store
    from netdiff_lib.models import get_backend
    from netdiff_lib.models.base import privacy_settings
    from netdiff_lib.segment import SegmentStats
    from netdiff_lib.segment.options import options_from_args
    from netdiff_lib.store import is_store, open_store

    check_output_dir(args.out, "model folder")  # before the captures are encoded and the model trained
    traces = options_from_args(args)
    backend = get_backend(args.backend)
    processes = _processes(args, backend.distributed)  # a bad --gpus fails before the captures are encoded
    preset = args.config or default_preset()
    extra = privacy_settings(backend, args.privacy)
    cfg = backend.config(preset, steps=args.steps, seed=args.seed, settings=[*settings(args), *extra],
                         weights=pretrained(args))
    if warning := cpu_warning(preset):
        print(warning, file=sys.stderr)
    workers = args.workers or max(1, min(8, os.cpu_count() or 1))
    stats = SegmentStats()
    store = is_store(args.data)  # already cut into traces: --traces and --max-packets were given to encode
    if store:
        data = training_data_from_store(open_store(args.data), name=str(args.data))
    else:
        data = from_captures(args.data, args.max_packets, workers=workers, traces=traces, stats=stats)
    if not traces.whole_files and not store:
        stats.report()
    if processes > 1:
        from netdiff_lib.stages.launch import TrainJob, launch

        job = TrainJob((), args.out, args.backend, preset, steps=args.steps, seed=args.seed,
                       settings=(*settings(args), *extra), weights=pretrained(args), progress=not args.quiet,
                       resume=args.resume)
        launch(job, processes, data=data, cpu=args.cpu_processes > 1)
        out = args.out
    else:
        out = backend.train(data, args.out, cfg, resume=args.resume, progress=not args.quiet)
    print(f"model written to {out}")
    return 0


def _processes(args: argparse.Namespace, distributed: bool) -> int:
    """How many training processes to launch (1: train here): ``--gpus``, else every GPU of the machine."""
    from netdiff_lib.errors import ConfigError
    from netdiff_lib.stages.launch import cuda_devices, launched

    available = cuda_devices()
    if args.gpus not in (None, "all") and not (args.gpus.isdigit() and int(args.gpus) >= 1):
        raise ConfigError(f"--gpus must be a number >= 1 or 'all', not {args.gpus!r}")
    wanted = available if args.gpus in (None, "all") else int(args.gpus)
    if args.gpus not in (None, "all") and wanted > max(available, 1):
        raise ConfigError(f"--gpus {wanted}: this machine has {available} GPU(s)")
    if args.cpu_processes:
        wanted = args.cpu_processes
    if launched() or not distributed:
        return 1  # a rank of a launch already, or a backend that trains in one process
    return max(1, wanted)
