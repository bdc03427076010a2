"""List the labelled captures under the input URI; split them train/test and deal them to shards (CPU)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def list_inputs(input_uri: str, output_uri: str, shards: int, test_fraction: float, seed: int, s3_endpoint: str,
                traces: str, split_bytes: int, manifest: Output[Dataset]) -> list[dict]:
    """Write the input manifest (every capture: URI, label, split, shard; a capture bigger than ``split_bytes``
    is cut into parts for several shards unless ``traces`` is file); return one item per shard. Fails early when
    the output's bucket is missing or the credentials are refused."""
    from netdiff_lib import stages

    items, meta = stages.list_inputs(input_uri, manifest.path, shards=shards, test_fraction=test_fraction,
                                     seed=seed, output_uri=output_uri, s3_endpoint=s3_endpoint,
                                     split_bytes=split_bytes, traces=traces)
    manifest.metadata.update(meta)
    return items
