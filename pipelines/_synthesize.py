"""The steps both pipelines share: generate on a GPU, reconstruct the shards in parallel on CPUs."""

from __future__ import annotations

from typing import Any

from kfp import dsl

from components.generate import generate
from components.reconstruct import reconstruct
from pipelines._placement import on_cpu, on_gpu


def synthesize(model: Any, traces_per_class: Any, seed: Any, shards: Any, gpu: dict[str, Any], *, queue: str,
               retries: int) -> Any:
    """Generate from ``model`` (one GPU), reconstruct every shard; returns the shards' pcap output (wrap it in
    ``dsl.Collected`` once per consumer)."""
    gen = generate(model=model, traces_per_class=traces_per_class, seed=seed, shards=shards)
    on_gpu(gen, gpu["type"], 1, gpu["node_selector"], gpu["toleration"], queue=queue, retries=retries)
    with dsl.ParallelFor(gen.outputs["Output"]) as shard:
        rec = on_cpu(reconstruct(traces=gen.outputs["traces"], shard=shard), "medium")
    return rec.outputs["pcaps"]
