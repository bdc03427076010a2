"""Publish pcaps, report and summary to the output URI, each object atomically, summary.json last (CPU)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish(output_uri: str, pcaps: Input[list[Dataset]], s3_endpoint: str, report: Input[Dataset] = None,
            manifest: Input[Dataset] = None, model: Input[Model] = None) -> str:
    """Returns the URI of ``summary.json``; ``report``, ``manifest`` and ``model`` are optional."""
    from netdiff_lib import stages

    out = stages.publish(output_uri, pcap_dirs=[p.path for p in pcaps], report_dir=getattr(report, "path", ""),
                         manifest_path=getattr(manifest, "path", ""), model_dir=getattr(model, "path", ""),
                         model_uri=getattr(model, "metadata", {}).get("model_uri", ""), s3_endpoint=s3_endpoint)
    return out["summary"]
