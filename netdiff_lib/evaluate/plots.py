"""The report's pictures, as PNG bytes: trace images side by side, field histograms, confusion matrices, DCRs,
flow CDFs.

Everything renders off-screen (matplotlib's Agg backend) and returns bytes, so the HTML report can embed the
pictures and no file is left behind.  Trace images use :func:`netdiff_lib.image.matrix_to_image` (the
NetDiffusion colours: red 1, green 0, blue absent), all 1,024 rows, scaled down.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from netdiff_lib.evaluate.fields import FieldTable, key_label
from netdiff_lib.evaluate.report import Pictures
from netdiff_lib.schema import MAX_PACKETS, NETDIFFUSION

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
DPI = 80


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_png(matrix: np.ndarray, rows: int = MAX_PACKETS, scale: float = 0.25) -> bytes:
    """A trace's NetDiffusion image (first ``rows`` packets), scaled by ``scale``, as PNG bytes."""
    from netdiff_lib.image import matrix_to_image

    img = matrix_to_image(matrix, rows=rows)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    buf = io.BytesIO()
    img.convert("RGB").resize(size, Image.Resampling.BOX).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def top_keys(samples: Sequence[np.ndarray], top: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ``top`` keys with the largest summed share over the samples, and each sample's shares of them.

    Numeric keys come back in ascending order, text keys by decreasing share.
    """
    samples = [np.asarray(s).ravel() for s in samples]
    keys, inverse = np.unique(np.concatenate(samples), return_inverse=True)
    inverse = inverse.ravel()
    shares, start = [], 0
    for s in samples:
        counts = np.bincount(inverse[start : start + s.size], minlength=keys.size).astype(float)
        shares.append(counts / counts.sum() if counts.sum() else counts)
        start += s.size
    order = np.argsort(-np.sum(shares, axis=0), kind="stable")[:top]
    if keys.dtype != object:
        order = np.sort(order)
    return keys[order], [s[order] for s in shares]


def field_histograms(tables: Mapping[str, FieldTable], names: Sequence[str], top: int = 20, cols: int = 4) -> bytes:
    """One panel per field: the sets' shares of the field's most frequent values, as overlaid bars."""
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        keys, shares = top_keys([t.get(name) for t in tables.values()], top)
        x = np.arange(len(keys))
        width = 0.8 / max(1, len(tables))
        for i, (set_name, share) in enumerate(zip(tables, shares, strict=True)):
            ax.bar(x + (i - (len(tables) - 1) / 2) * width, share, width, label=set_name, color=COLOURS[i % 4])
        ax.set_title(name, fontsize=9)
        ax.set_xticks(x, [key_label(name, k) for k in keys], rotation=90, fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(tables), bbox_to_anchor=(0.5, 1.0 + 0.12 / rows))
    fig.tight_layout()
    return _png(fig)


def confusion_png(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str) -> bytes:
    """A confusion matrix, rows normalised to the true class (counts written in the cells when small)."""
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.28 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    if len(labels) <= 40:
        for i, j in zip(*np.nonzero(m), strict=True):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black")
    return _png(fig)


def dcr_png(dcrs: Mapping[str, np.ndarray], near_copy: float) -> bytes:
    """Overlaid histograms of distances to the closest training record."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    finite = [d[np.isfinite(d)] for d in dcrs.values()]
    top = max([float(d.max()) for d in finite if d.size] + [near_copy * 2])
    bins = np.linspace(0, top * 1.02, 40)
    for i, (name, d) in enumerate(zip(dcrs, finite, strict=True)):
        ax.hist(d, bins=bins, alpha=0.5, label=f"{name} (median {np.median(d):.4f})" if d.size else name,
                color=COLOURS[i % 4], density=True)
    ax.axvline(near_copy, color="black", linestyle="--", linewidth=1, label=f"near-copy threshold {near_copy}")
    ax.set_xlabel("distance to closest training trace (share of differing nPrint values)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return _png(fig)


def flow_cdfs(frames: Mapping[str, object]) -> bytes:
    """Empirical CDFs of TCP/UDP flow sizes, durations and in-flow inter-arrival times, one line per set."""
    from netdiff_lib.evaluate.flows import shapes

    samples = {name: shapes(df) for name, df in frames.items()}
    panels = list(next(iter(samples.values())))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=True):
        for i, (name, vals) in enumerate(samples.items()):
            x = np.sort(vals[panel])
            if x.size:
                ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", color=COLOURS[i % 4],
                        label=f"{name} (median {np.median(x):.4g})")
        if "(ms)" in panel:  # times can be 0 ms
            ax.set_xscale("symlog", linthresh=1)
        else:
            ax.set_xscale("log")
        ax.set_title(panel, fontsize=9)
        ax.set_ylabel("share of flows" if "in flow" not in panel else "share of gaps", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _first_by_class(traces: Sequence, classes: Sequence[str]) -> dict[str, object]:
    first: dict[str, object] = {}
    for t in traces:
        first.setdefault(str(t.label), t)
    return {c: first[c] for c in classes if c in first}


def _netdiffusion_matrix(trace) -> np.ndarray | None:
    if trace.layout == NETDIFFUSION:
        return np.asarray(trace.matrix)
    try:
        return np.asarray(trace.with_layout(NETDIFFUSION).matrix)
    except ValueError:
        return None


def image_table(sets: Mapping[str, Sequence], classes: Sequence[str], scale: float = 0.25) -> list:
    """Per class, the NetDiffusion image (all 1,024 rows, scaled) of the first trace of every set."""
    firsts = {name: _first_by_class(traces, classes) for name, traces in sets.items()}
    out = []
    for c in classes:
        shown = {name: _netdiffusion_matrix(f[c]) for name, f in firsts.items() if c in f}
        shown = {name: m for name, m in shown.items() if m is not None}
        if shown:
            out.append((c, {name: image_png(m, MAX_PACKETS, scale) for name, m in shown.items()}))
    return out


def build_pictures(sets: Mapping[str, Sequence], tables: Mapping[str, FieldTable], result: dict,
                   dcrs: Mapping[str, np.ndarray], names: Sequence[str],
                   flows: Mapping[str, object] | None = None) -> Pictures:
    """All pictures of the report: ``sets``/``tables``/``flows`` map set names (real-test first) to traces/field
    tables/flow tables (:mod:`netdiff_lib.evaluate.flows`)."""
    pics = Pictures()
    pics.images = image_table(sets, result["classes"])
    pics.histograms = field_histograms(tables, names)
    for row, models in result["utility"].items():
        for model, res in models.items():
            if "confusion" in res:
                title = f"{row}: {model.upper()} trained on {'real-train' if row == 'reference' else row}"
                pics.confusion[title] = confusion_png(res["confusion"]["labels"], res["confusion"]["matrix"], title)
    near = next(iter(result["privacy"].values()))["near_copy"]
    pics.dcr = dcr_png(dcrs, near)
    if flows:
        pics.flows = flow_cdfs(flows)
    return pics
