"""The images the components run in: ``<registry>/netdiff:<version>`` (CPU) and ``...:<version>-cuda`` (GPU).

Both are built from ``images/netdiff/Dockerfile`` (targets ``cpu`` and ``cuda``) and tagged with
``netdiff_lib.__version__``. Override at compile time with ``NETDIFF_REGISTRY`` (registry and path),
``NETDIFF_IMAGE_TAG`` (tag), or whole references in ``NETDIFF_IMAGE`` / ``NETDIFF_GPU_IMAGE``. A ``:latest``
or untagged reference is refused: a run must name the exact image it ran.
"""

from __future__ import annotations

import os

import netdiff_lib

DEFAULT_REGISTRY = "ghcr.io/netdiff"


def _checked(ref: str) -> str:
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag or tag in ("", "latest"):
        raise ValueError(f"image {ref!r} needs a version tag (not :latest)")
    return ref


REGISTRY = os.environ.get("NETDIFF_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
TAG = os.environ.get("NETDIFF_IMAGE_TAG", netdiff_lib.__version__)
IMAGE = _checked(os.environ.get("NETDIFF_IMAGE") or f"{REGISTRY}/netdiff:{TAG}")
GPU_IMAGE = _checked(os.environ.get("NETDIFF_GPU_IMAGE") or f"{REGISTRY}/netdiff:{TAG}-cuda")
