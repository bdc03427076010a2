"""Sample synthetic traces from a trained model, dealt to shards for reconstruction (GPU, cached)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def generate(model: Input[Model], traces_per_class: int, seed: int, shards: int, sample_steps: int,
             guidance: float, timing: str, traces: Output[Dataset]) -> list[dict]:
    """``traces``: ``shard-NNN/<label>_<n>.npz`` generated traces (matrix, inter-arrival times, label); returns
    one item per shard. ``sample_steps`` 0 and ``guidance`` < 0 mean the model's defaults."""
    from netdiff_lib import stages

    items, meta = stages.generate_shards(model.path, traces.path, per_class=traces_per_class, seed=seed,
                                         shards=shards, steps=sample_steps, guidance=guidance, timing=timing)
    traces.metadata.update(meta)
    return items
