"""``netdiff run``: the Kubeflow pipeline on this machine (kfp.local), ending with a one-screen summary."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from netdiff_lib.cli._options import add_out, add_quiet, add_sample_steps

NAME = "run"
HELP = "run the pipeline locally (kfp.local): captures in, model + synthetic pcaps + report out"
DESCRIPTION = (
    "Runs the same KFP pipeline that `netdiff compile` writes for clusters, here, through kfp.local's "
    "SubprocessRunner: list, encode, train, generate, reconstruct, evaluate, publish. --input and --out take "
    "folders or s3:// URIs (object-store settings from NETDIFF_S3_ENDPOINT, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY). OUTPUT gets model/, pcaps/<label>/*.pcap, report/report.html and summary.json; "
    "kfp.local's artifacts and full log go to --work."
)
ORDER = 80
LOCAL_SHARDS = 2
RESULTS = ("summary.json", "model", "pcaps", "report", "inputs.json")  # an earlier run's, refused without a flag


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdiff_lib.config import PRESETS
    from netdiff_lib.models import DEFAULT_BACKEND
    from netdiff_lib.stages.common import TRACES_PER_CLASS

    p.add_argument("--input", metavar="DIR_OR_S3", help="labelled captures <label>/*.pcap (netdiff pipeline)")
    add_out(p, "where the results go", aliases=("--output",), metavar="DIR_OR_S3")
    p.add_argument("--pipeline", default="netdiff", choices=("netdiff", "generate"),
                   help="end-to-end (default) or generate-only from --model")
    p.add_argument("--model", metavar="DIR_OR_S3", help="generate: the trained model; netdiff: where it goes "
                                                        "(default OUTPUT/model, where training resumes)")
    p.add_argument("--config", choices=PRESETS,
                   help="model preset (default: base on a GPU, tiny on a CPU; as netdiff train)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, help=f"generator backend (default {DEFAULT_BACKEND})")
    p.add_argument("--weights", metavar="PATH_OR_URI", help="pretrained weights (backend sd15: Stable Diffusion 1.5)")
    p.add_argument("--controlnet", metavar="PATH_OR_URI", help="ControlNet weights (backend sd15: canny)")
    p.add_argument("--steps", type=int, default=0, help="training steps (default: the preset's)")
    p.add_argument("--privacy", choices=("on", "off"), help="the privacy gate, as netdiff train --privacy "
                                                            "(default: the preset's; pipeline parameter privacy)")
    add_sample_steps(p, "sampler steps (default: the model's)", default=0)
    add_quiet(p, "no line per finished or running step (the summary is still printed)")
    p.add_argument("--traces-per-class", type=int, default=TRACES_PER_CLASS, metavar="N",
                   help=f"synthetic traces per class (default {TRACES_PER_CLASS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, training and sampling (default 0)")
    p.add_argument("--shards", type=int, default=LOCAL_SHARDS,
                   help=f"parallel encode/reconstruct shards (default {LOCAL_SHARDS})")
    p.add_argument("--split-bytes", type=int, default=None, metavar="N",
                   help="with --traces other than file, a capture bigger than N bytes is cut into byte ranges "
                        "encoded by several shards (default 256 MiB; pipeline parameter split_bytes)")
    p.add_argument("--work", metavar="DIR", help="kfp.local artifacts and run.log (default OUTPUT/.kfp, or a "
                                                 "temporary folder for an s3:// output)")
    p.add_argument("--cache", action="store_true", help="reuse results of earlier identical steps")
    p.add_argument("--retries", type=int, default=0, help="retries of the GPU steps (default 0 here)")
    from netdiff_lib.segment.options import add_trace_arguments

    add_trace_arguments(p)
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="OUTPUT holds an earlier run: keep it and continue training its model")
    again.add_argument("--overwrite", action="store_true",
                       help="OUTPUT holds an earlier run: delete its results first")


def _local(uri: str | None) -> str | None:
    from netdiff_lib import storage

    return uri if uri is None or storage.is_remote(uri) else str(Path(uri).resolve())


def arguments(args: argparse.Namespace) -> dict:
    """The pipeline arguments of a ``netdiff run`` command line (local paths made absolute)."""
    from netdiff_lib.config import default_preset
    from netdiff_lib.errors import ConfigError
    from netdiff_lib.kfp_pipelines import base_arguments, pipeline_arguments

    if args.retries < 0:
        raise ConfigError(f"--retries {args.retries}: must be >= 0")
    config = args.config or (default_preset() if args.pipeline == "netdiff" else None)
    given = base_arguments(args.pipeline, output=_local(args.out), input=_local(args.input),
                           model=_local(args.model), config=config)
    given |= {"traces_per_class": args.traces_per_class, "seed": args.seed, "shards": args.shards,
              "sample_steps": args.sample_steps, "s3_endpoint": ""}  # "": the storage settings of this environment
    if args.pipeline == "netdiff":
        from netdiff_lib.models import get_backend
        from netdiff_lib.models.base import privacy_settings

        if args.privacy:  # --privacy on with sd15: refused here, before the pipeline runs
            privacy_settings(get_backend(args.backend), args.privacy)
        given |= trace_arguments(args)
        if args.split_bytes is not None:
            given["split_bytes"] = args.split_bytes
        given |= {"backend": args.backend, "train_steps": args.steps, "privacy": args.privacy,
                  "weights": _local(args.weights),
                  "controlnet": _local(args.controlnet)}
    return pipeline_arguments(args.pipeline, given)


def trace_arguments(args: argparse.Namespace) -> dict:
    """The pipeline's trace and label parameters from ``--traces`` and friends (checked here, before the run)."""
    from netdiff_lib import storage
    from netdiff_lib.segment.options import options_from_args

    opts = options_from_args(args)
    if not any(storage.is_remote(f) for f in opts.labels):
        opts.index()  # a bad local label file fails before the pipeline starts
    return {"traces": opts.spec.text, "flow_timeout": opts.spec.flow_timeout_s, "local_net": args.local_net,
            "labels_uri": ",".join(_local(f) for f in opts.labels), "labels_tz": opts.labels_tz,
            "unlabelled": opts.unlabelled, "labels_keep_going": opts.keep_going}


def work_dir(args: argparse.Namespace) -> Path:
    from netdiff_lib import storage

    if args.work:
        return Path(args.work)
    if storage.is_remote(args.out):
        return Path(tempfile.mkdtemp(prefix="netdiff-run-"))
    return Path(args.out, ".kfp")


def run(args: argparse.Namespace) -> int:
    from netdiff_lib import storage
    from netdiff_lib.config import cpu_warning
    from netdiff_lib.destination import check_output_dir, existing_results, reuse_policy
    from netdiff_lib.kfp_local import run_local
    from netdiff_lib.stages import summary_text
    from netdiff_lib.stages.common import read_json

    pipeline_args = arguments(args)  # every parameter checked before any step runs
    check_output_dir(args.out)
    if args.work:
        check_output_dir(args.work, "work folder")
    reuse_policy(args.out, existing_results(args.out, RESULTS), resume=args.resume, overwrite=args.overwrite)
    if args.pipeline == "netdiff" and (warning := cpu_warning(pipeline_args["config"])):
        print(warning, file=sys.stderr)
    work = work_dir(args)
    print(f"netdiff run: pipeline {args.pipeline!r} on kfp.local; artifacts and log in {work}", file=sys.stderr)
    start = time.monotonic()
    log = run_local(pipeline_args, work, pipeline=args.pipeline, cache=args.cache, retries=args.retries,
                    console=None if args.quiet else "stderr")
    with storage.open_local(storage.join(pipeline_args["output_uri"], "summary.json")) as path:
        summary = read_json(path)
    print(summary_text(summary, time.monotonic() - start))
    print(f"full log    {log}")
    return 0
