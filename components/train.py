"""Train the generator on the train split of every encoded shard (GPU; resumes from its checkpoints)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(data: Input[list[Dataset]], output_uri: str, model_uri: str, backend: str, config: str, steps: int,
          seed: int, weights: str, controlnet: str, s3_endpoint: str, model: Output[Model], privacy: str = ""):
    """Checkpoints and the model folder go to ``model_uri`` (empty: ``<output_uri>/model``), then ``model``.
    ``weights`` / ``controlnet``: pretrained weights (sd15; "" for none), local paths or ``s3://`` URIs.
    ``privacy``: the native privacy gate, ``on`` or ``off`` ("": the preset's)."""
    from netdiff_lib import stages

    model.metadata.update(stages.train_model(
        [d.path for d in data], model.path, model_uri=model_uri, output_uri=output_uri, backend=backend,
        config=config, steps=steps, seed=seed, weights={"base": weights, "controlnet": controlnet},
        s3_endpoint=s3_endpoint, privacy=privacy))
