"""One training job, the same in this process or in each of several (one per GPU), and the one function that
launches those processes.

:class:`TrainJob` is what the train stage or ``netdiff train`` decides (backend, preset, steps, seed, where the
data and the model folder are); :func:`run_job` loads the data (the encoded train split, or the traces
``netdiff train`` encoded once and saved for its processes) and calls the backend.  :func:`launch` writes the
job as JSON and starts ``python -m torch.distributed.run --standalone --nproc_per_node N -m
netdiff_lib.stages.launch JOB.json``; each process runs :func:`run_job`, and the backend's
:class:`accelerate.Accelerator` sets up DDP from the launcher's environment (NCCL on GPUs; gloo over the CPU
with ``cpu=True``, which tests use).  Rank 0 writes the checkpoints and the model folder.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from netdiff_lib import storage
from netdiff_lib.atomic import write_json
from netdiff_lib.encoded import load_split
from netdiff_lib.errors import ConfigError, InputError, NetdiffError
from netdiff_lib.models import get_backend
from netdiff_lib.models.base import TrainingData

#: set by torch.distributed.run (and accelerate launch) in every process it starts
LAUNCHED_ENV = ("LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class TrainJob:
    """A resumable training run: ``data_dirs`` are encode outputs, ``out`` the model folder (local or URI)."""

    data_dirs: tuple[str, ...]
    out: str
    backend: str
    preset: str
    steps: int | None = None
    seed: int | None = None
    settings: tuple[str, ...] = field(default_factory=tuple)
    weights: dict[str, str] = field(default_factory=dict)
    s3_endpoint: str = ""
    progress: bool = False
    resume: bool = True
    #: a pickled :class:`TrainingData` to train on instead of ``data_dirs`` (``netdiff train``'s captures)
    data_file: str = ""

    def save(self, path: str | Path) -> Path:
        return write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> TrainJob:
        try:
            doc = json.loads(Path(path).read_text())
            return cls(**{**doc, "data_dirs": tuple(doc["data_dirs"]), "settings": tuple(doc.get("settings", ()))})
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise InputError(path, f"not a training job ({exc})") from None


def run_job(job: TrainJob) -> str:
    """Train ``job``'s backend on the train split of its encode outputs (or its ``data_file``), resuming from
    ``job.out`` when ``job.resume``."""
    backend = get_backend(job.backend)
    config = backend.config(job.preset, steps=job.steps, seed=job.seed, settings=job.settings, weights=job.weights)
    if job.data_file:
        with open(job.data_file, "rb") as fh:
            data = pickle.load(fh)  # written by launch() in its own temporary folder
    else:
        data = load_split(job.data_dirs, "train")
    with storage.endpoint(job.s3_endpoint):
        return backend.train(data, job.out, config, resume=job.resume, progress=job.progress)


def cuda_devices() -> int:
    """CUDA devices this process sees (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launched() -> bool:
    """True inside a process that a launcher started (one rank of several)."""
    return all(name in os.environ for name in LAUNCHED_ENV)


def launch(job: TrainJob, processes: int, *, data: TrainingData | None = None, cpu: bool = False) -> None:
    """Run ``job`` in ``processes`` processes on this machine (data-parallel: one per GPU, or ``cpu`` processes
    over gloo with no GPU visible); ``data`` is saved once for all of them instead of the job's ``data_dirs``."""
    if processes < 2:
        raise ConfigError(f"launch needs at least 2 processes, not {processes}")
    with tempfile.TemporaryDirectory(prefix="netdiff-job-") as tmp:
        if data is not None:
            with open(Path(tmp, "data.pkl"), "wb") as fh:
                pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
            job = replace(job, data_file=str(Path(tmp, "data.pkl")))
        path = job.save(Path(tmp, "job.json"))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "netdiff_lib.stages.launch", str(path)]
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu else {})}
        print(f"training in {processes} processes ({'CPU' if cpu else 'one per GPU'}):", " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, check=False, env=env).returncode
    if rc != 0:
        raise NetdiffError(f"training with {processes} processes failed (exit status {rc}; see the log above)")


if __name__ == "__main__":
    try:
        run_job(TrainJob.load(sys.argv[1]))
    except NetdiffError as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        sys.exit(2)
