"""Load, compile and submit the project's KFP pipelines (the one place besides kfp_local that imports kfp).

The pipelines and components are the top-level packages ``pipelines`` and ``components``, installed with
netdiff (and importable from a source checkout).  Compiling with ``NETDIFF_REGISTRY`` unset names the default
images (``components/_image.py``): :func:`compile_pipeline` says so on stderr, since pods cannot pull an image
that was never pushed.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netdiff_lib.errors import ConfigError, NetdiffError


def load_pipeline(name: str = "netdiff", *, queue: str = "", gpu_retries: int | None = None) -> Any:
    """Build pipeline ``name`` (see ``pipelines.PIPELINES``) with its compile-time options."""
    try:
        from pipelines import PIPELINES
    except ImportError as exc:
        raise ConfigError(f"the netdiff pipelines are not installed ({exc}): reinstall netdiff") from None

    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; choose one of {', '.join(sorted(PIPELINES))}")
    module, factory = PIPELINES[name].split(":")
    options: dict[str, Any] = {"queue": queue}
    if gpu_retries is not None:
        options["gpu_retries"] = gpu_retries
    return getattr(importlib.import_module(module), factory)(**options)


_COERCE = {"Integer": int, "Float": float, "Boolean": lambda v: json.loads(v.lower()), "Dict": json.loads,
           "List": json.loads, "String": str}


def base_arguments(pipeline: str, *, output: str, input: str | None = None, model: str | None = None,
                   config: str | None = None) -> dict[str, Any]:
    """The arguments every command line maps the same way: ``--input``, ``--output``, ``--model`` (netdiff:
    where the model folder and checkpoints go; generate: the model to use) and ``--config`` (netdiff only)."""
    if pipeline != "netdiff" and (input or config):
        raise ConfigError(f"--input and --config are for the netdiff pipeline, not {pipeline!r} (it takes --model)")
    if pipeline == "netdiff":
        return {"input_uri": input, "output_uri": output, "model_uri": model, "config": config}
    return {"model_uri": model, "output_uri": output}


_SEED_MAX = 2**32 - 1  # numpy's seeds


def _bad_value(key: str, value: Any) -> str | None:
    """Why ``value`` cannot work for pipeline parameter ``key`` (``None``: it can, or the key is not checked)."""
    from netdiff_lib.config import PRESETS
    from netdiff_lib.models import known_backends
    from netdiff_lib.models.base import TIMINGS
    from netdiff_lib.schema import MAX_PACKETS

    at_least = {"traces_per_class": 1, "shards": 1, "gpu_count": 1, "train_steps": 0, "sample_steps": 0, "seed": 0}
    if key in at_least and (isinstance(value, bool) or not isinstance(value, int) or value < at_least[key]):
        return f"must be an integer >= {at_least[key]}" + (" (0: the default)" if key.endswith("steps") else "")
    rules: dict[str, tuple[Callable[[Any], bool], str]] = {
        "seed": (lambda v: v <= _SEED_MAX, f"must be at most {_SEED_MAX}"),
        "test_fraction": (lambda v: isinstance(v, int | float) and 0 < v < 1, "must be between 0 and 1"),
        "max_packets": (lambda v: isinstance(v, int) and 1 <= v <= MAX_PACKETS, f"must be in 1..{MAX_PACKETS}"),
        "timing": (lambda v: v in TIMINGS, f"must be one of {', '.join(TIMINGS)}"),
        "privacy": (lambda v: v in ("", "on", "off"), "must be on, off or \"\" (the preset's)"),
        "config": (lambda v: v in PRESETS, f"must be one of {', '.join(PRESETS)}"),
        "backend": (lambda v: str(v) in known_backends(), f"must be one of {', '.join(sorted(known_backends()))}"),
        "input_uri": (bool, "must name the captures"), "output_uri": (bool, "must name a folder or URI"),
    }
    ok, rule = rules.get(key, (lambda v: True, ""))
    return None if ok(value) else rule


def check_parameters(params: dict[str, Any]) -> None:
    """Refuse pipeline parameters that would fail a later step (no traces to generate, no shard, a negative
    count...) before any step runs: ``netdiff run`` and ``netdiff submit`` check what they are given,
    ``netdiff compile`` the pipeline's defaults."""
    bad = [f"{key}={params[key]!r} {why}" for key in sorted(params) if (why := _bad_value(key, params[key]))]
    if bad:
        raise ConfigError("bad pipeline parameter(s): " + "; ".join(bad))


def pipeline_arguments(name: str, given: dict[str, Any], pairs: list[str] = ()) -> dict[str, Any]:
    """``given`` plus ``KEY=VALUE`` ``pairs`` (values converted to the parameter's type), checked against the
    pipeline's parameters: unknown names and missing required ones are errors. ``None`` values are dropped."""
    inputs = load_pipeline(name).component_spec.inputs
    args = {k: v for k, v in given.items() if v is not None}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key.strip() not in inputs:
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE with KEY one of {', '.join(inputs)}")
        key = key.strip()
        try:
            args[key] = _COERCE.get(inputs[key].type, str)(raw)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise ConfigError(f"--param {key}: {raw!r} is not a valid {inputs[key].type} ({exc})") from None
    unknown = sorted(set(args) - set(inputs))
    missing = sorted(k for k, spec in inputs.items() if not spec.optional and k not in args)
    if unknown or missing:
        raise ConfigError(f"pipeline {name!r}: " + "; ".join(
            ([f"unknown parameter(s) {', '.join(unknown)}"] if unknown else [])
            + ([f"missing {', '.join(missing)}"] if missing else [])))
    check_parameters(args)
    return args


#: kfp.Client says this on every construction (kfp/client/client.py); netdiff's docs require KFP >= 2.0 anyway
_CLIENT_VERSION_NOTE = r"This client only works with Kubeflow Pipeline v2\.0\.0-beta\.2 and later"


def default_image_warning() -> str | None:
    """A warning when the compiled pipeline names the default registry's images because NETDIFF_REGISTRY (and
    NETDIFF_IMAGE / NETDIFF_GPU_IMAGE) are unset; None otherwise."""
    from components._image import DEFAULT_REGISTRY, GPU_IMAGE, IMAGE

    if os.environ.get("NETDIFF_REGISTRY"):
        return None
    defaults = [ref for ref in (IMAGE, GPU_IMAGE) if ref.startswith(f"{DEFAULT_REGISTRY}/")]
    if not defaults:
        return None
    return (f"netdiff: warning: NETDIFF_REGISTRY is not set, so the pipeline runs the default image(s) "
            f"{' and '.join(defaults)}; unless they exist and the cluster can pull them, its pods end in "
            "ImagePullBackOff. Push your images (scripts/build-images.sh, docs/deploy.md) and set "
            "NETDIFF_REGISTRY=<registry>/<path>.")


def compile_pipeline(name: str, path: str | Path, *, queue: str = "", kubernetes_manifest: bool = False) -> Path:
    """Write pipeline ``name`` as KFP IR YAML (or as Pipeline/PipelineVersion resources) to ``path``; warn on
    stderr when it names the default images (:func:`default_image_warning`)."""
    from kfp import compiler

    pipeline = load_pipeline(name, queue=queue)
    note = default_image_warning()
    if note:
        print(note, file=sys.stderr)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if kubernetes_manifest:
        from kfp.compiler.compiler_utils import KubernetesManifestOptions

        options = {"kubernetes_manifest_format": True,
                   "kubernetes_manifest_options": KubernetesManifestOptions(include_pipeline_manifest=True)}
    compiler.Compiler().compile(pipeline, str(path), **options)
    return path


def compile_to(name: str, path: str | Path, **options: Any) -> Path:
    """``netdiff compile``: :func:`compile_pipeline` to ``path``, or to ``<path>/<pipeline name>.yaml``
    (``netdiff.yaml``, ``netdiff-generate.yaml``) when ``path`` is a folder; the pipeline's default parameters
    are checked first (:func:`check_parameters`)."""
    pipeline = load_pipeline(name)
    inputs = pipeline.component_spec.inputs
    check_parameters({key: spec.default for key, spec in inputs.items() if spec.default is not None})
    path = Path(path)
    if path.is_dir():
        path = path / f"{pipeline.name}.yaml"
    return compile_pipeline(name, path, **options)


def disable_caching(path: str | Path) -> None:
    """Turn caching off for every task of a compiled IR file, inside ParallelFor bodies too (kfp.Client's
    ``enable_caching=False`` reaches only the top-level tasks)."""
    import yaml

    docs = list(yaml.safe_load_all(Path(path).read_text()))
    spec = docs[0]
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task["cachingOptions"] = {}
    Path(path).write_text(yaml.safe_dump_all(docs, sort_keys=True))


def submit_pipeline(*, host: str, namespace: str, experiment: str, arguments: dict[str, Any], name: str = "netdiff",
                    run_name: str | None = None, queue: str = "", token: str | None = None,
                    cache: bool = True) -> dict[str, str]:
    """Compile pipeline ``name`` and start a run through ``kfp.Client``; returns run id and URL."""
    import kfp

    with tempfile.TemporaryDirectory(prefix="netdiff-submit-") as tmp:
        package = compile_pipeline(name, Path(tmp, f"{name}.yaml"), queue=queue)
        if not cache:
            disable_caching(package)
        from pipelines._placement import SERVICE_ACCOUNT  # importable: compile_pipeline loaded the pipelines

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _CLIENT_VERSION_NOTE, FutureWarning)
            client = kfp.Client(host=host, namespace=namespace, existing_token=token)
        try:
            result = client.create_run_from_pipeline_package(
                str(package), arguments=arguments, run_name=run_name, experiment_name=experiment,
                namespace=namespace, service_account=SERVICE_ACCOUNT or None)
        except Exception as exc:  # the client raises urllib3, ApiException and OSError subclasses
            raise NetdiffError(f"submitting to {host} failed: {_cause(exc)}") from exc
    run_id = result.run_id
    return {"run_id": run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run_id}"}


def _cause(exc: Exception) -> str:
    """One line for the usual failures: unreachable host, HTTP status from the API server, others."""
    import urllib3.exceptions as ux

    reason = getattr(exc, "reason", None)
    if isinstance(exc, ux.MaxRetryError) and isinstance(reason, ux.NewConnectionError):
        return f"cannot connect to the KFP API ({str(reason).rsplit(': ', 1)[-1]}); check --host"
    if isinstance(exc, ux.MaxRetryError):
        return f"cannot reach the KFP API ({reason}); check --host"
    status = getattr(exc, "status", None)
    if status is not None:
        hint = {401: "check the token", 403: "check --namespace and your access to it", 404: "check --host"}
        body = str(getattr(exc, "body", "") or "").strip().replace("\n", " ")[:200]
        return f"the KFP API answered HTTP {status} {getattr(exc, 'reason', '')}: {body} ({hint.get(status, '')})"
    return f"{type(exc).__name__}: {exc}"
