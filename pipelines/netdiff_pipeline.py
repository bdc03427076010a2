"""The end-to-end pipeline: labelled captures (object store or folder) -> model, synthetic pcaps, report.

    list-inputs -> encode x shards -> train (GPU) -> generate (GPU) -> reconstruct x shards -> evaluate -> publish

Object-store steps get their credentials from the Secret ``s3_secret``; ``train_steps`` 0 and
``model_uri`` "" mean the preset's steps and ``<output_uri>/model``; ``weights`` / ``controlnet`` are the
pretrained weights a backend starts from (``sd15``: Stable Diffusion 1.5 and ControlNet canny, ``s3://`` URIs
or paths the pods see; "" for none); ``privacy`` is the native backend's privacy gate, ``on`` or ``off`` ("": the
preset's: on, except ``tiny``).  ``max_packets`` is decided here once:
encode keeps that many packets per capture, and train and evaluate read what encode wrote.  ``sample_steps``
0 and ``guidance`` < 0 mean the model's defaults; ``timing`` is ``generated`` or ``empirical``.  ``traces``
(``file``, ``flow``, ``host``, ``window:S``, ``host+window:S``), ``flow_timeout``, ``local_net``, ``labels_uri``
(label files separated by commas, see ``netdiff encode --labels``), ``labels_tz``, ``unlabelled`` and
``labels_keep_going`` tell encode how captures become traces.
Compile with ``netdiff compile``.
"""

from kfp import compiler, dsl

from components.encode import encode
from components.evaluate import evaluate
from components.list_inputs import list_inputs
from components.train import train
from netdiff_lib.config import base
from netdiff_lib.models import DEFAULT_BACKEND
from netdiff_lib.schema import MAX_PACKETS
from netdiff_lib.segment.spec import FLOW_TIMEOUT, SPLIT_BYTES
from netdiff_lib.stages.common import SHARDS, TEST_FRACTION, TRACES_PER_CLASS
from pipelines._placement import (
    GPU_NODE_SELECTOR,
    GPU_RESOURCE,
    GPU_RETRIES,
    GPU_TOLERATION,
    S3_ENDPOINT,
    S3_SECRET,
    on_cpu,
    on_gpu,
    with_object_store,
)
from pipelines._synthesize import GUIDANCE, SAMPLE_STEPS, TIMING, publish_all, synthesize

NAME = "netdiff"


def build(queue: str = "", gpu_retries: int = GPU_RETRIES) -> dsl.base_component.BaseComponent:
    """The pipeline, with the Kueue ``queue`` label on its GPU steps when given."""

    @dsl.pipeline(name=NAME, description="Synthetic network traffic from a diffusion model: train, generate, "
                                         "reconstruct and evaluate, from labelled captures.")
    def netdiff(input_uri: str, output_uri: str, backend: str = DEFAULT_BACKEND, config: str = base().preset,
                train_steps: int = 0, traces_per_class: int = TRACES_PER_CLASS, seed: int = 0,
                shards: int = SHARDS, test_fraction: float = TEST_FRACTION, max_packets: int = MAX_PACKETS,
                sample_steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE, timing: str = TIMING,
                model_uri: str = "", weights: str = "", controlnet: str = "",
                traces: str = "file", flow_timeout: float = FLOW_TIMEOUT, local_net: str = "", labels_uri: str = "",
                labels_tz: str = "auto", unlabelled: str = "drop", labels_keep_going: bool = False,
                split_bytes: int = SPLIT_BYTES, privacy: str = "",
                gpu_type: str = GPU_RESOURCE, gpu_count: int = 1, gpu_node_selector: dict = GPU_NODE_SELECTOR,
                gpu_toleration: dict = GPU_TOLERATION, s3_secret: str = S3_SECRET, s3_endpoint: str = S3_ENDPOINT):
        gpu = {"type": gpu_type, "node_selector": gpu_node_selector, "toleration": gpu_toleration}
        listing = list_inputs(input_uri=input_uri, output_uri=output_uri, shards=shards,
                              test_fraction=test_fraction, seed=seed, s3_endpoint=s3_endpoint, traces=traces,
                              split_bytes=split_bytes)
        with_object_store(on_cpu(listing, cache=False), s3_secret)
        with dsl.ParallelFor(listing.outputs["Output"]) as shard:
            enc = encode(input_uri=input_uri, shard=shard, test_fraction=test_fraction, seed=seed,
                         max_packets=max_packets, s3_endpoint=s3_endpoint,
                         traces=traces, flow_timeout=flow_timeout, local_net=local_net, labels_uri=labels_uri,
                         labels_tz=labels_tz, unlabelled=unlabelled, labels_keep_going=labels_keep_going,
                         split_bytes=split_bytes)
            with_object_store(on_cpu(enc, "medium"), s3_secret)
        trained = train(data=dsl.Collected(enc.outputs["data"]), output_uri=output_uri, model_uri=model_uri,
                        backend=backend, config=config, steps=train_steps, seed=seed, weights=weights,
                        controlnet=controlnet, s3_endpoint=s3_endpoint, privacy=privacy)
        on_gpu(trained, gpu_type, gpu_count, gpu_node_selector, gpu_toleration, queue=queue, retries=gpu_retries)
        with_object_store(trained, s3_secret)
        sampling = {"traces_per_class": traces_per_class, "seed": seed, "shards": shards,
                    "sample_steps": sample_steps, "guidance": guidance, "timing": timing}
        pcaps = synthesize(trained.outputs["model"], sampling, gpu, queue=queue, retries=gpu_retries)
        report = evaluate(data=dsl.Collected(enc.outputs["data"]), pcaps=dsl.Collected(pcaps), seed=seed)
        on_cpu(report, "large")
        publish_all(output_uri, pcaps, s3_endpoint, s3_secret, report=report.outputs["report"],
                    manifest=listing.outputs["manifest"], model=trained.outputs["model"])

    return netdiff


netdiff_pipeline = build()

if __name__ == "__main__":
    compiler.Compiler().compile(netdiff_pipeline, f"{NAME}.yaml")
