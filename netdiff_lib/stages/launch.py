"""One training job, the same in this process or in every process of ``accelerate launch``.

:class:`TrainJob` is what the train stage decides (backend, preset, steps, seed, where the encoded data and the
model folder are); :func:`run_job` loads the encoded train split and calls the backend.  With several GPUs the
stage writes the job as JSON and starts ``accelerate launch -m netdiff_lib.stages.launch JOB.json``, whose
processes each run :func:`run_job` on it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netdiff_lib import storage
from netdiff_lib.atomic import write_json
from netdiff_lib.encoded import load_split
from netdiff_lib.errors import InputError, NetdiffError
from netdiff_lib.models import get_backend


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
    """Train ``job``'s backend on the train split of its encode outputs, resuming from ``job.out``."""
    backend = get_backend(job.backend)
    config = backend.config(job.preset, steps=job.steps, seed=job.seed, settings=job.settings, weights=job.weights)
    data = load_split(job.data_dirs, "train")
    with storage.endpoint(job.s3_endpoint):
        return backend.train(data, job.out, config, resume=True, progress=job.progress)


if __name__ == "__main__":
    try:
        run_job(TrainJob.load(sys.argv[1]))
    except NetdiffError as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        sys.exit(2)
