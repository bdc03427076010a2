"""Model stages: train (resumable, every GPU of the pod), import a trained model, generate raw traces.

Training reads the encode step's outputs (the nPrint traces and payload records of the train split, never the
captures) and writes its model folder and checkpoints to a stable URI (``model_uri``, by default
``<output>/model``), not to the run's artifact folder: a retried pod, or the same pipeline submitted again,
finds the latest checkpoint there and resumes.  The finished folder, less its checkpoints, is then copied into
the task's Model artifact.

With more than one CUDA device the stage runs the same :class:`~netdiff_lib.stages.launch.TrainJob` under
``accelerate launch --multi_gpu --num_processes <devices>``; otherwise it runs it in this process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from netdiff_lib import storage
from netdiff_lib.atomic import write_json
from netdiff_lib.errors import ConfigError, InputError, NetdiffError
from netdiff_lib.generate import trace_names
from netdiff_lib.models import Sampling, backend_of, get_backend
from netdiff_lib.models.base import save_generated
from netdiff_lib.payloads import FILE_NAME as PAYLOADS_FILE
from netdiff_lib.stages.common import GENERATOR, read_json, shard_count, shard_item, shard_name
from netdiff_lib.stages.launch import TrainJob, run_job

CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"  # the model folder under the output URI
CARD = "model_card.json"


def cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _train_launched(job: TrainJob, processes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="netdiff-job-") as tmp:
        path = job.save(Path(tmp, "job.json"))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(processes), "--num_machines", "1", "--dynamo_backend", "no", "-m", "netdiff_lib.stages.launch",
               str(path)]
        print("running:", " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise NetdiffError(f"training with {processes} processes failed (exit status {rc}; see the log above)")


def copy_model(src: str, dest: str | Path) -> list[Path]:
    """Copy a model folder (local or URI) without its checkpoints; checks that it names its backend."""
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


def generator_info(model_dir: str | Path) -> dict[str, Any]:
    """What the report says about the model that made the traces: backend, preset, privacy mode and the privacy
    gate's history (from the model card)."""
    card = read_json(Path(model_dir) / CARD)
    training = card.get("training", {})
    info = {"backend": card.get("backend"), "preset": card.get("config", {}).get("preset"),
            "privacy": training.get("privacy", "off")}
    return info | {k: v for k, v in training.items() if k.startswith("privacy_")}


def train_model(data_dirs: list[str], model_dir: str | Path, *, model_uri: str, output_uri: str = "",
                backend: str, config: str, steps: int, seed: int, weights: dict[str, str] | None = None,
                s3_endpoint: str = "", processes: int | None = None, privacy: str = "") -> dict[str, Any]:
    """Train on the train split of the encode outputs ``data_dirs`` into ``model_uri`` (empty:
    ``<output_uri>/model``), resuming from its checkpoints; copy the finished folder to ``model_dir``.
    ``steps`` 0 means the preset's; ``weights``: pretrained weights by role (empty values: none); ``privacy``:
    ``on``/``off`` (the privacy gate; "": the preset's)."""
    from netdiff_lib.models.base import privacy_settings

    model_uri = model_uri or (storage.join(output_uri, MODEL_DIR) if output_uri else "")
    if not model_uri:
        raise ConfigError("training needs a model URI or an output URI (for the model folder and its checkpoints)")
    job = TrainJob(tuple(str(d) for d in data_dirs), model_uri, backend, config, steps=steps or None, seed=seed,
                   settings=tuple(privacy_settings(get_backend(backend), privacy)),
                   weights={k: v for k, v in (weights or {}).items() if v}, s3_endpoint=s3_endpoint)
    n = cuda_devices() if processes is None else processes
    if not get_backend(backend).distributed:
        n = min(n, 1)  # this backend trains in one process (one GPU)
    try:
        if n > 1:
            _train_launched(job, n)
        else:
            run_job(job)
    except ConfigError as exc:
        raise ConfigError(f"{exc} [checkpoints in {model_uri}/{CHECKPOINTS}: to start afresh, use another "
                          "output or model URI]") from exc
    with storage.endpoint(s3_endpoint):
        copy_model(model_uri, model_dir)
    return {**model_summary(model_dir, model_uri), "processes": max(1, n)}


def import_model(model_uri: str, model_dir: str | Path, *, output_uri: str = "",
                 s3_endpoint: str = "") -> dict[str, Any]:
    """Copy a trained model folder from ``model_uri`` into ``model_dir`` (a Model artifact); checks first that
    ``output_uri`` (when given) is reachable."""
    from netdiff_lib.stages.data import check_output

    with storage.endpoint(s3_endpoint):
        copy_model(model_uri, model_dir)
        if output_uri:
            check_output(output_uri)
    return model_summary(model_dir, model_uri)


def generate_shards(model_dir: str | Path, out_dir: str | Path, *, per_class: int, seed: int, shards: int,
                    steps: int = 0, guidance: float = -1.0, timing: str = "generated",
                    device: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample ``per_class`` traces of every class (``steps`` 0 and ``guidance`` < 0: the model's defaults;
    ``timing``: see :class:`~netdiff_lib.models.base.Sampling`); save them as ``out_dir/shard-NNN/<label>_<n>.npz``
    (:func:`~netdiff_lib.models.base.save_generated`: matrix, inter-arrival times, label) with the model's
    payload profile beside them; returns ``(items, metadata)``."""
    if per_class < 1:
        raise ConfigError(f"traces per class must be >= 1, not {per_class}")
    sampling = Sampling(steps=steps or None, guidance=None if guidance < 0 else guidance, timing=timing, seed=seed,
                        progress=False)
    backend = backend_of(model_dir)
    device = device or ("cuda" if cuda_devices() else "cpu")
    model = get_backend(backend).load(str(model_dir), device=device)
    traces = model.generate(per_class, sampling)
    n = shard_count(shards, len(traces))
    for i, (g, name) in enumerate(zip(traces, trace_names(traces), strict=True)):
        save_generated(Path(out_dir, shard_name(i % n), f"{name}.npz"), g, model.layout)
    profile = Path(model_dir, PAYLOADS_FILE)
    if profile.is_file():  # reconstruction synthesises payloads as the training captures showed them
        shutil.copyfile(profile, Path(out_dir, PAYLOADS_FILE))
    if Path(model_dir, CARD).is_file():  # the report says which model (and privacy mode) made the traces
        write_json(Path(out_dir, GENERATOR), generator_info(model_dir))
    counts: dict[str, int] = {}
    for g in traces:
        counts[g.label] = counts.get(g.label, 0) + 1
    meta = {"backend": backend, "device": device, "traces": len(traces), "shards": n, "per_class": per_class,
            "seed": seed, "steps": steps, "guidance": guidance, "timing": timing,
            "packets": int(sum(len(g.matrix) for g in traces)), "classes": counts}
    return [shard_item(k, n) for k in range(n)], meta
