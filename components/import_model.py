"""Copy a trained model folder from a URI (s3://, minio:// or a local folder) into a Model artifact (CPU)."""

from kfp import dsl
from kfp.dsl import Model, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def import_model(model_uri: str, output_uri: str, s3_endpoint: str, model: Output[Model]):
    """Any model folder ``netdiff train`` wrote, or a Model artifact's URI; checkpoints are left behind."""
    from netdiff_lib import stages

    model.metadata.update(stages.import_model(model_uri, model.path, output_uri=output_uri,
                                              s3_endpoint=s3_endpoint))
