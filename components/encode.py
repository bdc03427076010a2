"""Fetch, check and nPrint-encode one shard of the input captures (CPU, cached by the listing's fingerprint)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def encode(input_uri: str, shard: dict, test_fraction: float, seed: int, max_packets: int, s3_endpoint: str,
           traces: str, flow_timeout: float, local_net: str, labels_uri: str, labels_tz: str, unlabelled: str,
           labels_keep_going: bool, split_bytes: int, data: Output[Dataset]):
    """``data``: ``nprint/<split>/<label>/<file>.npz`` traces, ``payloads/...`` payload records and
    ``validation/...`` validator reports, which train and evaluate read instead of the captures. ``traces`` to
    ``labels_keep_going``: how captures become traces and their labels; ``split_bytes``: the listing's
    (``netdiff_lib.stages.data.encode_shard``)."""
    from netdiff_lib import stages

    data.metadata.update(stages.encode_shard(input_uri, data.path, shard, test_fraction=test_fraction, seed=seed,
                                             max_packets=max_packets, s3_endpoint=s3_endpoint,
                                             traces={"traces": traces, "flow_timeout": flow_timeout,
                                                     "local_net": local_net, "labels_uri": labels_uri,
                                                     "labels_tz": labels_tz, "unlabelled": unlabelled,
                                                     "labels_keep_going": labels_keep_going},
                                             split_bytes=split_bytes))
