"""Pipeline stages: the one library function that each KFP component of ``components/`` calls.

Every stage takes plain parameters, local artifact folders (``artifact.path``) and object-store URIs, and
returns a JSON-ready dict that the component stores as artifact metadata.  Nothing here imports kfp; the
components only pass arguments through, so a stage can be run and tested without a pipeline.

=================  =====================================================================================
stage              what it does
=================  =====================================================================================
list_inputs        discover the labelled captures under the input URI, split them train/test (seeded, by
                   file), deal them to shards; write the manifest; return one item per shard
encode_shard       fetch one shard's captures, check them and nPrint-encode them (``captures/`` + ``nprint/``)
train_model        train on the train split of all shards; checkpoints at a stable URI, so a retried or
                   re-run training resumes; every GPU of the pod, one process each (``stages.launch``)
import_model       copy a trained model folder from a URI (object store or local) into a Model artifact
generate_shards    sample N traces per class from a model; raw traces as ``.npz``, dealt to shards
reconstruct_shard  repair one shard of generated traces into pcaps ``<label>/<label>_<n>.pcap``
evaluate_run       the evaluation report on real-train / real-test / synthetic, plus KFP visualizations
publish            copy pcaps, report and summary to the output URI (``summary.json`` last)
=================  =====================================================================================
"""

from netdiff_lib.stages.data import encode_shard, list_inputs, plan_inputs
from netdiff_lib.stages.model import generate_shards, import_model, train_model
from netdiff_lib.stages.outputs import evaluate_run, publish, reconstruct_shard
from netdiff_lib.stages.summary import summary_text

__all__ = [
    "encode_shard", "evaluate_run", "generate_shards", "import_model", "list_inputs", "plan_inputs", "publish",
    "reconstruct_shard", "summary_text", "train_model",
]
