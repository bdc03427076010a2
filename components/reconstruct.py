"""Repair one shard of generated traces into protocol-correct pcaps (CPU, cached)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def reconstruct(traces: Input[Dataset], shard: dict, pcaps: Output[Dataset]):
    """``pcaps``: ``<label>/<label>_<n>.pcap`` and ``repair.json`` (what reconstruction changed)."""
    from netdiff_lib import stages

    pcaps.metadata.update(stages.reconstruct_shard(traces.path, shard, pcaps.path))
