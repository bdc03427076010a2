"""The steps both pipelines share: generate on a GPU, reconstruct the shards in parallel on CPUs, publish."""

from __future__ import annotations

from typing import Any

from kfp import dsl

from components.generate import generate
from components.publish import publish
from components.reconstruct import reconstruct
from pipelines._placement import on_cpu, on_gpu, with_object_store

#: Sampling parameters of both pipelines: 0 steps and a negative guidance mean the model's own defaults.
SAMPLE_STEPS, GUIDANCE, TIMING = 0, -1.0, "generated"


def synthesize(model: Any, sampling: dict[str, Any], gpu: dict[str, Any], *, queue: str, retries: int) -> Any:
    """Generate from ``model`` (one GPU) with ``sampling`` (traces_per_class, seed, shards, sample_steps,
    guidance, timing), reconstruct every shard; returns the shards' pcap output (wrap it in ``dsl.Collected``
    once per consumer)."""
    gen = generate(model=model, **sampling)
    on_gpu(gen, gpu["type"], 1, gpu["node_selector"], gpu["toleration"], queue=queue, retries=retries)
    with dsl.ParallelFor(gen.outputs["Output"]) as shard:
        rec = on_cpu(reconstruct(traces=gen.outputs["traces"], shard=shard), "medium")
    return rec.outputs["pcaps"]


def publish_all(output_uri: Any, pcaps: Any, s3_endpoint: Any, s3_secret: Any, **artifacts: Any) -> Any:
    """Publish the pcaps (and the given report, manifest and model artifacts) to ``output_uri``; uncached."""
    done = publish(output_uri=output_uri, pcaps=dsl.Collected(pcaps), s3_endpoint=s3_endpoint, **artifacts)
    return with_object_store(on_cpu(done, cache=False), s3_secret)
