"""KFP v2 components: one per pipeline stage, each a thin wrapper over one :mod:`netdiff_lib.stages` function.

Components are lightweight Python components (``@dsl.component``) running in the versioned images of
:mod:`components._image`, so that ``kfp.local.SubprocessRunner`` runs the same pipeline on a laptop. Their
bodies only pass arguments and artifact paths through; where to run them (CPU/GPU, node selector,
toleration, object-store Secret, retries, caching) is set in ``pipelines/``.
"""
