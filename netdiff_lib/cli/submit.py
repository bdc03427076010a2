"""``netdiff submit``: compile a pipeline and start a run on a Kubeflow Pipelines server (``kfp.Client``)."""

from __future__ import annotations

import argparse
import os

from netdiff_lib.cli._options import add_out, add_sample_steps

NAME = "submit"
HELP = "start a pipeline run on a Kubeflow cluster"
DESCRIPTION = (
    "Compiles the pipeline and starts a run in --namespace under --experiment. Common parameters have flags; "
    "any other pipeline parameter goes with --param KEY=VALUE (JSON for dicts), e.g. --param gpu_count=8 "
    "--param 'gpu_node_selector={\"nvidia.com/gpu.product\": \"NVIDIA-H100-80GB-HBM3\"}'. The token comes from "
    "--token or NETDIFF_KFP_TOKEN; without one, kfp.Client's own lookup applies."
)
ORDER = 90


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdiff_lib.config import PRESETS

    p.add_argument("--host", required=True, metavar="URL", help="KFP API endpoint, e.g. https://kubeflow.example/pipeline")
    p.add_argument("--namespace", required=True, help="Kubeflow profile namespace to run in")
    p.add_argument("--experiment", default="netdiff", help="experiment name (default: netdiff)")
    p.add_argument("--pipeline", default="netdiff", choices=("netdiff", "generate"), help="which pipeline")
    p.add_argument("--input", metavar="URI", help="s3://bucket/prefix of labelled captures (netdiff pipeline)")
    p.add_argument("--model", metavar="URI", help="generate: the trained model folder or Model artifact; netdiff: "
                                                  "where the model and its checkpoints go (default OUTPUT/model)")
    add_out(p, "s3://bucket/prefix for model, pcaps, report", aliases=("--output",), metavar="URI")
    p.add_argument("--config", choices=PRESETS, help="model preset (default: the pipeline's, base)")
    add_sample_steps(p, "sampler steps (default: the model's; pipeline parameter sample_steps)")
    p.add_argument("--privacy", choices=("on", "off"), help="the privacy gate, as netdiff train --privacy "
                                                            "(default: the preset's; pipeline parameter privacy)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="any pipeline parameter")
    p.add_argument("--kueue-queue", default="", metavar="NAME", help="Kueue LocalQueue for the GPU steps")
    p.add_argument("--run-name", help="run name (default: chosen by KFP)")
    p.add_argument("--token", help="bearer token for the KFP API (default: NETDIFF_KFP_TOKEN)")
    p.add_argument("--no-cache", action="store_true", help="run every step, ignoring KFP's cache")


def arguments(args: argparse.Namespace) -> dict:
    """The pipeline arguments of a ``netdiff submit`` command line, checked against the pipeline."""
    from netdiff_lib.errors import ConfigError
    from netdiff_lib.kfp_pipelines import base_arguments, pipeline_arguments

    given = base_arguments(args.pipeline, output=args.out, input=args.input, model=args.model, config=args.config)
    if args.privacy and args.pipeline != "netdiff":
        raise ConfigError(f"--privacy is for the netdiff pipeline (training), not {args.pipeline!r}")
    given |= {"privacy": args.privacy} if args.privacy else {}
    return pipeline_arguments(args.pipeline, given | {"sample_steps": args.sample_steps}, args.param)


def run(args: argparse.Namespace) -> int:
    from netdiff_lib.kfp_pipelines import submit_pipeline

    result = submit_pipeline(host=args.host, namespace=args.namespace, experiment=args.experiment,
                             arguments=arguments(args), name=args.pipeline, run_name=args.run_name,
                             queue=args.kueue_queue, token=args.token or os.environ.get("NETDIFF_KFP_TOKEN"),
                             cache=not args.no_cache)
    print(f"run {result['run_id']} started: {result['url']}")
    return 0
