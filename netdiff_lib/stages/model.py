"""Model stages: train (resumable, every GPU of the pod), import a trained model, generate raw traces.

Training writes its model folder and checkpoints to a stable URI (``model_uri``, by default
``<output>/model``), not to the run's artifact folder: a retried pod, or the same pipeline submitted again,
finds the latest checkpoint there and resumes (:func:`netdiff_lib.train.train` with ``resume=True``).  The
finished folder, less its checkpoints, is then copied into the task's Model artifact.

With more than one CUDA device the stage runs the same ``netdiff train`` arguments under
``accelerate launch --multi_gpu --num_processes <devices>``; otherwise it runs them in this process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from netdiff_lib.errors import ConfigError, InputError, NetdiffError
from netdiff_lib.stages.common import (
    gather_split,
    read_json,
    shard_count,
    shard_item,
    shard_name,
    use_endpoint,
)

CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"  # the model folder under the output URI
CARD = "model_card.json"


def train_argv(data: str, out: str, *, backend: str, config: str, steps: int, seed: int) -> list[str]:
    """The ``netdiff train`` arguments of a pipeline run (``steps`` 0 = the preset's)."""
    argv = ["train", "--backend", backend, "--data", data, "--out", out, "--config", config, "--seed", str(seed),
            "--resume", "--no-progress"]
    return argv + (["--steps", str(steps)] if steps > 0 else [])


def cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _train_here(argv: list[str]) -> None:
    from netdiff_lib.cli import build_parser

    args = build_parser().parse_args(argv)
    args._run(args)


def _train_launched(argv: list[str], processes: int) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--dynamo_backend", "no", "-m", "netdiff_lib.cli", *argv]
    print("running:", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise NetdiffError(f"training with {processes} processes failed (exit status {rc}; see the log above)")


def copy_model(src: str, dest: str | Path) -> list[Path]:
    """Copy a model folder (local or URI) without its checkpoints; checks that it names its backend."""
    from netdiff_lib import storage
    from netdiff_lib.models import backend_of

    files = [(storage.relative(u, src), u) for u in storage.list_uri(src)]
    files = [(rel, u) for rel, u in files if rel.split("/", 1)[0] != CHECKPOINTS]
    if not files:
        raise InputError(src, "no model files there")
    out = [storage.get(u, Path(dest, rel)) for rel, u in files]
    backend_of(dest)  # raises a clear error for a folder that is not a model
    return out


def model_summary(model_dir: str | Path, model_uri: str) -> dict[str, Any]:
    """Artifact metadata from the model card: backend, preset, classes, training numbers, where it lives."""
    card = read_json(Path(model_dir) / CARD)
    training = {k: v for k, v in card.get("training", {}).items() if isinstance(v, (int, float, str))}
    return {"backend": card.get("backend"), "preset": card.get("config", {}).get("preset"),
            "classes": sorted(card.get("class_map", {})), "model_uri": model_uri,
            "data_fingerprint": card.get("data", {}).get("fingerprint"), **training}


def train_model(data_dirs: list[str], model_dir: str | Path, *, model_uri: str, output_uri: str = "",
                backend: str, config: str, steps: int, seed: int, s3_endpoint: str = "",
                processes: int | None = None) -> dict[str, Any]:
    """Train on the train split of the encoded shards into ``model_uri`` (empty: ``<output_uri>/model``),
    resuming from its checkpoints; copy the finished folder to ``model_dir``."""
    from netdiff_lib import storage

    use_endpoint(s3_endpoint)
    model_uri = model_uri or (storage.join(output_uri, MODEL_DIR) if output_uri else "")
    if not model_uri:
        raise ConfigError("training needs a model URI or an output URI (for the model folder and its checkpoints)")
    with tempfile.TemporaryDirectory(prefix="netdiff-train-") as tmp:
        data = gather_split(data_dirs, "train", Path(tmp, "train"))
        argv = train_argv(str(data), model_uri, backend=backend, config=config, steps=steps, seed=seed)
        n = cuda_devices() if processes is None else processes
        try:
            if n > 1:
                _train_launched(argv, n)
            else:
                _train_here(argv)
        except ConfigError as exc:
            raise ConfigError(f"{exc} [checkpoints in {model_uri}/{CHECKPOINTS}: to start afresh, use another "
                              "output or model URI]") from exc
    copy_model(model_uri, model_dir)
    return {**model_summary(model_dir, model_uri), "processes": max(1, n)}


def import_model(model_uri: str, model_dir: str | Path, *, output_uri: str = "",
                 s3_endpoint: str = "") -> dict[str, Any]:
    """Copy a trained model folder from ``model_uri`` into ``model_dir`` (a Model artifact); checks first that
    ``output_uri`` (when given) is reachable."""
    from netdiff_lib.stages.data import check_output

    use_endpoint(s3_endpoint)
    copy_model(model_uri, model_dir)
    if output_uri:
        check_output(output_uri)
    return model_summary(model_dir, model_uri)


def generate_shards(model_dir: str | Path, out_dir: str | Path, *, per_class: int, seed: int,
                    shards: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample ``per_class`` traces of every class; save them as ``out_dir/shard-NNN/<label>_<n>.npz`` (raw,
    before reconstruction, timestamps from the generated inter-arrival times); returns ``(items, metadata)``."""
    import torch

    from netdiff_lib.generate import trace_names
    from netdiff_lib.models import backend_of, get_backend
    from netdiff_lib.payloads import FILE_NAME as PAYLOADS_FILE
    from netdiff_lib.repair.timing import timestamps
    from netdiff_lib.trace import Trace, save_trace

    if per_class < 1:
        raise ConfigError(f"traces per class must be >= 1, not {per_class}")
    backend = backend_of(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = get_backend(backend).load(str(model_dir), device=device)
    layout = getattr(model, "layout", None) or model.codec.layout
    traces = model.generate(per_class, seed=seed, progress=False)
    n = shard_count(shards, len(traces))
    for i, (g, name) in enumerate(zip(traces, trace_names(traces), strict=True)):
        ts = timestamps(len(g.matrix), g.iat_us, seed=seed + i)
        save_trace(Path(out_dir, shard_name(i % n), f"{name}.npz"),
                   Trace(g.matrix, layout, ts, g.label, f"netdiff-{backend}"))
    profile = Path(model_dir, PAYLOADS_FILE)
    if profile.is_file():  # reconstruction synthesises payloads as the training captures showed them
        shutil.copyfile(profile, Path(out_dir, PAYLOADS_FILE))
    counts: dict[str, int] = {}
    for g in traces:
        counts[g.label] = counts.get(g.label, 0) + 1
    meta = {"backend": backend, "device": device, "traces": len(traces), "shards": n, "per_class": per_class,
            "seed": seed, "packets": int(sum(len(g.matrix) for g in traces)), "classes": counts}
    return [shard_item(k, n) for k in range(n)], meta
