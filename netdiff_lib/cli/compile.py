"""``netdiff compile``: write a pipeline as KFP IR YAML (or as Kubernetes Pipeline resources)."""

from __future__ import annotations

import argparse
import sys

from netdiff_lib.cli._options import add_out

NAME = "compile"
HELP = "write a KFP pipeline (netdiff or generate) as YAML for a Kubeflow cluster"
DESCRIPTION = (
    "Compiles a pipeline to KFP's intermediate representation (upload it in the Kubeflow UI or with `netdiff "
    "submit`), or with --kubernetes-manifest to Pipeline and PipelineVersion resources for KFP's "
    "Kubernetes-native API. Images: NETDIFF_REGISTRY / NETDIFF_IMAGE_TAG (see components/_image.py)."
)
ORDER = 85


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_out(p, "YAML file to write; an existing folder gets FOLDER/<pipeline>.yaml (netdiff.yaml, "
               "netdiff-generate.yaml)", aliases=("--output",), metavar="FILE_OR_DIR")
    p.add_argument("--pipeline", default="netdiff", choices=("netdiff", "generate"),
                   help="end-to-end (default) or generate-only from a trained model")
    p.add_argument("--kueue-queue", default="", metavar="NAME",
                   help="Kueue LocalQueue for the GPU steps (pod label kueue.x-k8s.io/queue-name)")
    p.add_argument("--kubernetes-manifest", action="store_true",
                   help="Pipeline + PipelineVersion resources instead of the IR")


def run(args: argparse.Namespace) -> int:
    from netdiff_lib.kfp_pipelines import compile_to

    path = compile_to(args.pipeline, args.out, queue=args.kueue_queue, kubernetes_manifest=args.kubernetes_manifest)
    print(f"pipeline {args.pipeline!r} written to {path}", file=sys.stderr)
    return 0
