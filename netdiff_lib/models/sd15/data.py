"""Training images and captions, ControlNet references and canny edges for the ``sd15`` backend.

A training example is what NetDiffusion trained on: the capture's nPrint matrix drawn as the 1088x1024
NetDiffusion image (:mod:`netdiff_lib.image`), resized to the training size (816x768, as A1111's "extras"
resize did) and captioned ``pixelated network data, type-N`` from the class map, for *every* class (the seed's
``caption_changing.py`` labelled only files named ``netflix`` and left every other caption empty).

ControlNet is conditioned on the canny edges (``cv2.Canny``, thresholds 100/200 by default) of a real image of
the same class: the backend keeps a few training images per class in the model folder (``controls/<label>/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from netdiff_lib.dataset import ClassMap
from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.image import HEIGHT, WIDTH, matrix_to_image
from netdiff_lib.models.base import TrainingData
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.trace import Trace

CONTROLS = "controls"


@dataclass
class Example:
    """One training image (RGB, training size), its caption and class."""

    image: Image.Image
    caption: str
    label: str


def netdiffusion_trace(t: Trace) -> Trace:
    """The trace in the NetDiffusion image layout (1,088 columns), first 1,024 packets."""
    if t.layout != NETDIFFUSION:
        try:
            t = t.with_layout(NETDIFFUSION)
        except ValueError as exc:
            raise ConfigError(f"backend sd15 draws NetDiffusion images; trace {t.source or t.label} cannot be "
                              f"shown in that layout ({exc}); encode with --layout netdiffusion") from None
    return t.head(HEIGHT)


def trace_image(t: Trace) -> Image.Image:
    """The NetDiffusion image (1088x1024 RGBA) of a trace."""
    return matrix_to_image(netdiffusion_trace(t).matrix)


def examples(data: TrainingData, class_map: ClassMap, width: int, height: int) -> list[Example]:
    """Every training trace as an image of ``width`` x ``height`` with its class's caption, in data order."""
    out = []
    for t in data.traces:
        img = trace_image(t).convert("RGB")
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.LANCZOS)
        out.append(Example(img, class_map.caption(str(t.label)), str(t.label)))
    return out


def save_controls(data: TrainingData, class_map: ClassMap, out: Path, per_class: int) -> dict[str, list[str]]:
    """Keep the first ``per_class`` training images of every class as ``controls/type-N/<n>.png`` (the real
    images ControlNet is conditioned on); returns the relative paths per label."""
    kept: dict[str, list[str]] = {}
    for t in data.traces:
        label = str(t.label)
        names = kept.setdefault(label, [])
        if len(names) >= per_class:
            continue
        rel = f"{CONTROLS}/{class_map.type_name(label)}/{len(names):03d}.png"
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        trace_image(t).save(path, format="PNG")
        names.append(rel)
    return kept


def load_controls(model_dir: Path, index: dict[str, list[str]]) -> dict[str, list[Image.Image]]:
    """The control images a model folder keeps, per label."""
    out: dict[str, list[Image.Image]] = {}
    for label, rels in index.items():
        imgs = []
        for rel in rels:
            path = model_dir / rel
            try:
                with Image.open(path) as img:
                    imgs.append(img.convert("RGB"))
            except (OSError, ValueError) as exc:
                raise InputError(path, f"cannot read the ControlNet reference image ({exc})") from None
        if not imgs:
            raise InputError(model_dir / CONTROLS, f"no reference image for class {label!r}")
        out[label] = imgs
    return out


def canny(image: Image.Image, low: int = 100, high: int = 200, size: tuple[int, int] | None = None) -> Image.Image:
    """ControlNet's canny conditioning: ``cv2.Canny(low, high)`` of the image (resized to ``size`` first, as the
    A1111 extension resizes the control image to the generation size), as a 3-channel white-on-black image."""
    import cv2

    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    gray = np.asarray(image.convert("RGB"))
    edges = cv2.Canny(gray, low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def full_size(image: Image.Image) -> Image.Image:
    """A generated image resized to the NetDiffusion image (1088x1024), as A1111's hires fix with upscaler
    "None" and denoising 0 did (LANCZOS)."""
    if image.size == (WIDTH, HEIGHT):
        return image
    return image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
