"""A trace: one capture (or one generated sample) as an nPrint matrix plus timestamps.

The compact array file is an ``.npz`` holding the int8 matrix, the column names, the timestamps (ns since
the epoch), the label and the source file; it is ~1 byte per bit, loads without parsing, and is what every
netdiff stage passes around.  ``-1`` means "not on the wire", as in nPrint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netdiff_lib.atomic import atomic_path
from netdiff_lib.errors import InputError
from netdiff_lib.schema import Layout

ARRAY_FORMAT = "netdiff-nprint/1"


@dataclass
class Trace:
    """An nPrint matrix ``(packets, layout.width)`` of int8 in {-1, 0, 1} with per-packet timestamps."""

    matrix: np.ndarray
    layout: Layout
    ts_ns: np.ndarray | None = None
    label: str | None = None
    source: str | None = None
    index: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.int8)
        if self.matrix.ndim != 2 or self.matrix.shape[1] != self.layout.width:
            raise ValueError(f"matrix shape {self.matrix.shape} does not fit layout width {self.layout.width}")
        if self.ts_ns is not None:
            self.ts_ns = np.asarray(self.ts_ns, dtype=np.int64)
            if self.ts_ns.shape != (len(self.matrix),):
                raise ValueError("ts_ns needs one timestamp per packet")

    def __len__(self) -> int:
        return len(self.matrix)

    def iat_us(self) -> np.ndarray:
        """Inter-arrival times in microseconds (float64, first packet 0); zeros when there are no timestamps."""
        if self.ts_ns is None or len(self.ts_ns) == 0:
            return np.zeros(len(self.matrix))
        return np.diff(self.ts_ns, prepend=self.ts_ns[:1]).astype(np.float64) / 1e3

    def head(self, n: int) -> Trace:
        """The first ``n`` packets."""
        ts = None if self.ts_ns is None else self.ts_ns[:n]
        index = None if self.index is None else self.index[:n]
        return Trace(self.matrix[:n], self.layout, ts, self.label, self.source, index, dict(self.meta))

    def with_layout(self, layout: Layout) -> Trace:
        """The same packets in another layout that this one contains (e.g. NETDIFFUSION from its full layout)."""
        cols = {c: i for i, c in enumerate(self.layout.columns)}
        missing = [c for c in layout.columns if c not in cols]
        if missing:
            raise ValueError(f"layout {layout.describe()} needs columns this trace lacks, e.g. {missing[:3]}")
        idx = np.fromiter((cols[c] for c in layout.columns), dtype=np.intp, count=layout.width)
        return Trace(self.matrix[:, idx], layout, self.ts_ns, self.label, self.source, self.index, dict(self.meta))


def save_trace(path: str | Path, trace: Trace, compress: bool = True) -> None:
    """Write the compact array file atomically (``.npz``; zlib-compressed unless ``compress=False``)."""
    header = {
        "format": ARRAY_FORMAT,
        "layout": trace.layout.to_dict(),
        "label": trace.label,
        "source": trace.source,
        "meta": trace.meta,
    }
    arrays = {"matrix": trace.matrix, "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    if trace.ts_ns is not None:
        arrays["ts_ns"] = trace.ts_ns
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)


def load_trace(path: str | Path) -> Trace:
    """Read a compact array file written by :func:`save_trace`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            matrix = z["matrix"]
            ts_ns = z["ts_ns"] if "ts_ns" in z.files else None
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"not a netdiff array file ({exc})") from None
    if header.get("format") != ARRAY_FORMAT:
        raise InputError(path, f"unknown array format {header.get('format')!r}, expected {ARRAY_FORMAT}")
    layout = Layout.from_dict(header["layout"])
    return Trace(matrix, layout, ts_ns, header.get("label"), header.get("source"), None, header.get("meta") or {})
