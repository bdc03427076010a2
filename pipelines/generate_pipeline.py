"""The generate-only pipeline: a trained model (a model folder URI or a Model artifact's URI) -> pcaps.

    import-model -> generate (GPU) -> reconstruct x shards -> publish

Compile with ``netdiff compile --pipeline generate``.
"""

from kfp import compiler, dsl

from components.import_model import import_model
from netdiff_lib.stages.common import SHARDS, TRACES_PER_CLASS
from pipelines._placement import (
    GPU_NODE_SELECTOR,
    GPU_RESOURCE,
    GPU_RETRIES,
    GPU_TOLERATION,
    S3_ENDPOINT,
    S3_SECRET,
    on_cpu,
    with_object_store,
)
from pipelines._synthesize import GUIDANCE, SAMPLE_STEPS, TIMING, publish_all, synthesize

NAME = "netdiff-generate"


def build(queue: str = "", gpu_retries: int = GPU_RETRIES) -> dsl.base_component.BaseComponent:
    """The pipeline, with the Kueue ``queue`` label on its GPU step when given."""

    @dsl.pipeline(name=NAME, description="Synthetic pcaps from a trained netdiff model.")
    def netdiff_generate(model_uri: str, output_uri: str, traces_per_class: int = TRACES_PER_CLASS, seed: int = 0,
                         shards: int = SHARDS, sample_steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE,
                         timing: str = TIMING, gpu_type: str = GPU_RESOURCE,
                         gpu_node_selector: dict = GPU_NODE_SELECTOR, gpu_toleration: dict = GPU_TOLERATION,
                         s3_secret: str = S3_SECRET, s3_endpoint: str = S3_ENDPOINT):
        gpu = {"type": gpu_type, "node_selector": gpu_node_selector, "toleration": gpu_toleration}
        imported = import_model(model_uri=model_uri, output_uri=output_uri, s3_endpoint=s3_endpoint)
        with_object_store(on_cpu(imported, "medium", cache=False), s3_secret)
        sampling = {"traces_per_class": traces_per_class, "seed": seed, "shards": shards,
                    "sample_steps": sample_steps, "guidance": guidance, "timing": timing}
        pcaps = synthesize(imported.outputs["model"], sampling, gpu, queue=queue, retries=gpu_retries)
        publish_all(output_uri, pcaps, s3_endpoint, s3_secret, model=imported.outputs["model"])

    return netdiff_generate


generate_pipeline = build()

if __name__ == "__main__":
    compiler.Compiler().compile(generate_pipeline, f"{NAME}.yaml")
