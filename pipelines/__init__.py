"""KFP pipelines: wiring only, placement through :mod:`pipelines._placement`.

``PIPELINES`` maps the names that ``netdiff compile``, ``netdiff submit`` and ``netdiff run`` accept to the
module and factory that build each pipeline; a factory takes the compile-time options ``queue`` (Kueue queue
name for the GPU steps' pod label) and ``gpu_retries``.
"""

PIPELINES = {
    "netdiff": "pipelines.netdiff_pipeline:build",
    "generate": "pipelines.generate_pipeline:build",
}
