"""nPrint matrix <-> NetDiffusion image: the one place for the value -> pixel map, padding and shape.

Layout exactly as NetDiffusion's ``pcap_to_img.py``: the 1,088 columns of ``schema.NETDIFFUSION``
(``-4 -6 -t -u -i -p 0`` less the address columns) as the width, 1,024 packet rows as the height, RGBA with
1 -> red (255,0,0,255), 0 -> green (0,255,0,255), -1 -> blue (0,0,255,255), unused rows blue at the bottom.

Reading back snaps every pixel to one of the three colours: ``nearest`` (default: nearest of the three in
RGB) or ``netdiffusion`` (the effective rule of NetDiffusion's ``color_processor.py``: red if r > 0 and
g < 160 and b < 100, else the largest channel, ties R > G > B).  Generated RGB images, NetDiffusion's RGBA
PNGs and its 1,089-pixel-wide SD3 conditioning image (a leaked index column 0, dropped) are all accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from netdiff_lib.atomic import atomic_path
from netdiff_lib.errors import InputError
from netdiff_lib.schema import MAX_PACKETS, NETDIFFUSION

WIDTH, HEIGHT = NETDIFFUSION.width, MAX_PACKETS
COLOURS = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 0]], np.int32)  # index = value + 1
SNAP_RULES = ("nearest", "netdiffusion")
#: Tallest image read back (rows): snapping takes some 60 bytes a pixel, and NetDiffusion's images have 1,024.
MAX_IMAGE_ROWS = 4 * HEIGHT


def matrix_to_rgba(matrix: np.ndarray, rows: int = HEIGHT) -> np.ndarray:
    """(packets, 1088) int8 -> (rows, 1088, 4) uint8; extra packets are cut, missing rows are blue."""
    matrix = np.asarray(matrix, np.int8)
    if matrix.ndim != 2 or matrix.shape[1] != WIDTH:
        raise ValueError(f"expected a (packets, {WIDTH}) matrix in the NetDiffusion layout, got {matrix.shape}")
    if ((matrix < -1) | (matrix > 1)).any():
        raise ValueError("matrix values must be -1, 0 or 1")
    padded = np.full((rows, WIDTH), -1, np.int8)
    n = min(rows, len(matrix))
    padded[:n] = matrix[:n]
    rgba = np.full((rows, WIDTH, 4), 255, np.uint8)
    rgba[..., :3] = COLOURS[padded + 1].astype(np.uint8)
    return rgba


def matrix_to_image(matrix: np.ndarray, rows: int = HEIGHT) -> Image.Image:
    return Image.fromarray(matrix_to_rgba(matrix, rows), mode="RGBA")


def snap(rgb: np.ndarray, rule: str = "nearest") -> np.ndarray:
    """(..., 3) colour values -> int8 nPrint values in {-1, 0, 1}."""
    rgb = np.asarray(rgb, np.int32)
    if rule == "nearest":
        d = ((rgb[..., None, :] - COLOURS) ** 2).sum(axis=-1)  # (..., 3) distances to blue, green, red
        return (np.argmin(d[..., ::-1], axis=-1) * -1 + 1).astype(np.int8)  # ties: red > green > blue
    if rule == "netdiffusion":
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        red_rule = (r > 0) & (g < 160) & (b < 100)
        top = np.argmax(rgb, axis=-1)  # first maximum wins: R, then G, then B
        return np.where(red_rule, 1, np.array([1, 0, -1], np.int8)[top]).astype(np.int8)
    raise ValueError(f"unknown snap rule {rule!r}; choose from {SNAP_RULES}")


def image_to_matrix(img: Image.Image, rule: str = "nearest", trim: bool = True) -> np.ndarray:
    """Image -> (rows, 1088) int8; ``trim`` drops trailing all-blue rows (padding; a real packet never is)."""
    arr = np.asarray(img.convert("RGB"))
    if arr.shape[1] == WIDTH + 1:
        arr = arr[:, 1:]  # NetDiffusion SD3 conditioning image: leaked index column
    if arr.shape[1] != WIDTH:
        raise ValueError(f"image is {arr.shape[1]} pixels wide; the NetDiffusion layout is {WIDTH}")
    matrix = snap(arr, rule)
    return matrix[: used_rows(matrix)] if trim else matrix


def used_rows(matrix: np.ndarray) -> int:
    """Rows before the trailing padding (rows that are all -1: absent everywhere, which no packet is)."""
    used = np.flatnonzero((np.asarray(matrix) != -1).any(axis=1))
    return int(used[-1]) + 1 if len(used) else 0


def save_image(path: str | Path, matrix: np.ndarray) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        matrix_to_image(matrix).save(tmp, format="PNG")


def load_image(path: str | Path, rule: str = "nearest", trim: bool = True) -> np.ndarray:
    """An image file's matrix; its size is checked before its pixels are decoded (at most
    :data:`MAX_IMAGE_ROWS` rows, 1,088 or 1,089 columns)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width not in (WIDTH, WIDTH + 1) or height > MAX_IMAGE_ROWS:
                raise InputError(path, f"not a NetDiffusion image: {width}x{height} pixels, expected {WIDTH} wide "
                                       f"and at most {MAX_IMAGE_ROWS:,} rows ({HEIGHT:,} in NetDiffusion's images)")
            return image_to_matrix(img, rule, trim)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(path, f"not a NetDiffusion image ({exc})") from None
