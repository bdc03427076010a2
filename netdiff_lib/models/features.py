"""The model's view of a packet: a reversible map between nPrint rows and real-valued feature vectors.

Why not the raw 1,088 ternary columns?  A first probe that diffused the raw bits learned the *structure* of
traces (which headers exist, IP version, protocol) almost perfectly but not the *numbers*: IPv4 total length,
UDP length, TCP window and TTL were its worst fields, because a 16-bit number spread over 16 independent
ternary columns has no notion of "close".  So the representation is decided per field, from the schema alone:

* **numeric fields** (every field of 2 to 16 bits: lengths, ports, TTL, window, protocol numbers, checksums)
  become two features: a presence flag (+1 on the wire, -1 absent) and the value as one number in [-1, 1];
* **bit fields** (1-bit flags, 32-bit sequence numbers, the 20-bit IPv6 flow label, option words) keep their
  ternary columns (-1 absent, 0, 1);
* one more feature per packet holds the inter-arrival time as ``log1p(µs)`` scaled to [-1, 1] (negative gaps,
  from out-of-order timestamps in some captures, count as 0: generated time only moves forward).

A number is placed in [-1, 1] by a monotone piecewise-linear map (:class:`ValueMap`).  Unfitted, it is linear
in the value (schema only).  :meth:`FeatureCodec.fit` bends it with the training data: the map mixes the
linear part (weight ``λ``) with the CDF of the de-quantised values (each integer ``v`` spread over
``[v, v+1)``), so each frequent value (port 53, TTL 64, a 60-byte length) owns an interval of [-1, 1] as wide
as its frequency and a sample anywhere in it snaps back to exactly that value, while every other integer keeps
an interval of width ``2λ/2^bits`` and so stays representable.  The maps are strictly increasing, so
``decode(encode(m)) == m`` exactly for every matrix whose numeric fields are wholly present or wholly absent
(always so for the codec's output; :meth:`FeatureCodec.encode` raises otherwise unless ``strict=False``).

``decode(..., consistent=True)`` (the default for generated features) also snaps whole header blocks: a
block is present when the mean of its fields' presence flags is positive; then its numeric fields are all
present and its non-option bits binary, else the whole block is absent.  Cross-field arithmetic (lengths,
checksums, option lengths) is left to reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netdiff_lib.atomic import read_json, write_json
from netdiff_lib.errors import InputError
from netdiff_lib.schema import NETDIFFUSION, Layout, bits_to_uint, uint_to_bits

FORMAT = "netdiff-features/1"
NUMERIC_MIN_BITS = 2
NUMERIC_MAX_BITS = 16
OPTION_SUFFIX = "_opt"
IAT_LOG_MAX = float(np.log1p(600e6))  # 10 minutes between packets maps to +1


@dataclass(frozen=True)
class ValueMap:
    """A strictly increasing piecewise-linear map from [0, 2^bits] onto [0, 1], with its inverse.

    Integer ``v`` is encoded at the image of ``v + 0.5``; decoding inverts and floors.
    """

    bits: int
    xs: tuple[float, ...]
    gs: tuple[float, ...]

    @classmethod
    def linear(cls, bits: int) -> ValueMap:
        return cls(bits, (0.0, float(1 << bits)), (0.0, 1.0))

    @classmethod
    def fit(cls, values: np.ndarray, bits: int, lam: float = 0.1, top: int = 256, bins: int = 64) -> ValueMap:
        """Fit to observed integer values: ``λ`` linear + ``1-λ`` de-quantised CDF (``top`` values exact,
        the rest in ``bins`` equal-width bins)."""
        values = np.asarray(values, dtype=np.int64).ravel()
        span = 1 << bits
        if len(values) == 0:
            return cls.linear(bits)
        uniq, cnt = np.unique(values, return_counts=True)
        order = np.argsort(-cnt, kind="stable")
        head, tail = order[:top], order[top:]
        starts = [uniq[head].astype(np.float64)]
        ends = [starts[0] + 1.0]
        weights = [cnt[head].astype(np.float64)]
        if len(tail):
            nb = min(bins, span)
            hist, edges = np.histogram(uniq[tail], bins=nb, range=(0, span), weights=cnt[tail])
            nz = hist > 0
            starts.append(edges[:-1][nz])
            ends.append(edges[1:][nz])
            weights.append(hist[nz].astype(np.float64))
        a, b, w = np.concatenate(starts), np.concatenate(ends), np.concatenate(weights)
        w = w / w.sum()
        xs = np.unique(np.concatenate([[0.0, float(span)], a, b]))
        cdf = (np.clip((xs[:, None] - a[None]) / (b - a)[None], 0.0, 1.0) * w[None]).sum(axis=1)
        gs = lam * xs / span + (1.0 - lam) * cdf
        gs[0], gs[-1] = 0.0, 1.0
        return cls(bits, tuple(float(x) for x in xs), tuple(float(g) for g in gs))

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Integers -> [-1, 1] (float64)."""
        return 2.0 * np.interp(np.asarray(values, np.float64) + 0.5, self.xs, self.gs) - 1.0

    def decode(self, y: np.ndarray) -> np.ndarray:
        """[-1, 1] (clipped) -> integers (uint64)."""
        g = (np.clip(np.asarray(y, np.float64), -1.0, 1.0) + 1.0) / 2.0
        x = np.interp(g, self.gs, self.xs)
        return np.clip(np.floor(x), 0, (1 << self.bits) - 1).astype(np.uint64)


@dataclass
class FeatureCodec:
    """matrix (n, layout.width) int8 + inter-arrival times <-> features (n, :attr:`width`) float32."""

    layout: Layout = NETDIFFUSION
    maps: dict[str, ValueMap] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spans = self.layout.spans
        self.numeric = [s for s in spans.values() if NUMERIC_MIN_BITS <= s.bits <= NUMERIC_MAX_BITS]
        numeric_cols = {c for s in self.numeric for c in range(s.start, s.stop)}
        self.bit_cols = np.array([c for c in range(self.layout.width) if c not in numeric_cols], dtype=np.intp)
        for s in self.numeric:
            self.maps.setdefault(s.name, ValueMap.linear(s.bits))
        self._blocks = self._block_plan()

    def _block_plan(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per block: (numeric field indices, its non-option bit features, its option bit features)."""
        pos = {int(c): i for i, c in enumerate(self.bit_cols)}
        plan = []
        for block in self.layout.blocks:
            names = [n for n in self.layout.spans if n.startswith(block + "_")]
            num = [i for i, s in enumerate(self.numeric) if s.name in names]
            flags, opts = [], []
            for n in names:
                s = self.layout.span(n)
                if s.start in pos:
                    (opts if n.endswith(OPTION_SUFFIX) else flags).extend(pos[c] for c in range(s.start, s.stop))
            plan.append((np.array(num, np.intp), np.array(flags, np.intp), np.array(opts, np.intp)))
        return plan

    @property
    def width(self) -> int:
        """Features per packet: bit columns, then presence and value of each numeric field, then the IAT."""
        return len(self.bit_cols) + 2 * len(self.numeric) + 1

    @property
    def names(self) -> list[str]:
        cols = self.layout.columns
        return ([cols[c] for c in self.bit_cols] + [f"{s.name}.present" for s in self.numeric]
                + [f"{s.name}.value" for s in self.numeric] + ["iat.log"])

    def encode(self, matrix: np.ndarray, iat_us: np.ndarray | None = None, *, strict: bool = True) -> np.ndarray:
        """nPrint rows (and inter-arrival µs, zeros if omitted) -> features float32 (n, width)."""
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[1] != self.layout.width:
            raise ValueError(f"matrix shape {matrix.shape} does not fit layout width {self.layout.width}")
        n, nb, nn = len(matrix), len(self.bit_cols), len(self.numeric)
        out = np.empty((n, self.width), np.float32)
        out[:, :nb] = matrix[:, self.bit_cols]
        for i, s in enumerate(self.numeric):
            bits = matrix[:, s.slice]
            present = (bits >= 0).all(axis=1)
            if strict and not (present | (bits < 0).all(axis=1)).all():
                bad = int(np.flatnonzero(~present & (bits >= 0).any(axis=1))[0])
                raise ValueError(f"field {s.name} of packet {bad} is partly absent; it cannot be encoded exactly")
            partly = (bits >= 0).any(axis=1)
            out[:, nb + i] = np.where(partly, 1.0, -1.0)
            out[:, nb + nn + i] = np.where(partly, self.maps[s.name].encode(bits_to_uint(bits)), 0.0)
        iat = np.zeros(n) if iat_us is None else np.asarray(iat_us, np.float64)
        if iat.shape != (n,):
            raise ValueError(f"need one inter-arrival time per packet, got shape {iat.shape} for {n} packets")
        out[:, -1] = encode_iat(iat)
        return out

    def features(self, matrix: np.ndarray, iat_us: np.ndarray) -> np.ndarray:
        """Training rows of one trace: :meth:`encode` without the strict check."""
        return self.encode(matrix, iat_us, strict=False)

    def decode(self, features: np.ndarray, *, consistent: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """features (n, width) -> (matrix int8 (n, layout.width), inter-arrival µs float64 (n,)).

        ``consistent`` makes each header block whole: a block is on the wire when its numeric fields' mean
        presence is positive, and then every bit of it is 0 or 1 (non-option bits snap at 0.5) while its
        option bits keep their -1 / 0 / 1; otherwise the whole block is -1.  Vectorised over all rows.
        """
        f = np.asarray(features, np.float32)
        if f.ndim != 2 or f.shape[1] != self.width:
            raise ValueError(f"features shape {f.shape} does not fit codec width {self.width}")
        n, nb, nn = len(f), len(self.bit_cols), len(self.numeric)
        xb = f[:, :nb]
        bits = np.rint(np.clip(xb, -1.0, 1.0)).astype(np.int8)
        present = f[:, nb : nb + nn] > 0
        if consistent:
            col_block, flag_cols, num_block = self._block_index()
            on = np.ones((n, len(self._blocks) + 1), bool)  # last column: bits of no block stay as they are
            for b, (num, _, _) in enumerate(self._blocks):
                on[:, b] = f[:, nb + num].mean(axis=1) > 0 if len(num) else False
            bits[:, flag_cols] = xb[:, flag_cols] > 0.5
            bits = np.where(on[:, col_block], bits, np.int8(-1))
            present = on[:, num_block]
        matrix = np.full((n, self.layout.width), -1, np.int8)
        matrix[:, self.bit_cols] = bits
        for i, s in enumerate(self.numeric):
            values = self.maps[s.name].decode(f[:, nb + nn + i])
            matrix[:, s.slice] = np.where(present[:, i : i + 1], uint_to_bits(values, s.bits), -1)
        return matrix, decode_iat(f[:, -1])

    def _block_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(block of each bit feature (len(blocks) = none), non-option bit features, block of each numeric)."""
        col_block = np.full(len(self.bit_cols), len(self._blocks), np.intp)
        num_block = np.full(len(self.numeric), len(self._blocks), np.intp)
        flag_cols = []
        for b, (num, flags, opts) in enumerate(self._blocks):
            col_block[flags] = b
            col_block[opts] = b
            num_block[num] = b
            flag_cols.extend(flags.tolist())
        return col_block, np.array(flag_cols, np.intp), num_block

    def fit(self, matrices: list[np.ndarray], lam: float = 0.1) -> FeatureCodec:
        """A codec whose numeric maps follow the value distributions of these matrices."""
        maps = {}
        for s in self.numeric:
            vals = []
            for m in matrices:
                bits = m[:, s.slice]
                vals.append(bits_to_uint(bits[(bits >= 0).all(axis=1)]))
            maps[s.name] = ValueMap.fit(np.concatenate(vals) if vals else np.zeros(0), s.bits, lam=lam)
        return FeatureCodec(self.layout, maps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "layout": self.layout.to_dict(), "iat_log_max": IAT_LOG_MAX,
            "maps": {k: {"bits": m.bits, "xs": list(m.xs), "gs": list(m.gs)} for k, m in self.maps.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureCodec:
        if d.get("format") != FORMAT:
            raise ValueError(f"unknown feature format {d.get('format')!r}, expected {FORMAT}")
        maps = {k: ValueMap(int(v["bits"]), tuple(v["xs"]), tuple(v["gs"])) for k, v in d["maps"].items()}
        return cls(Layout.from_dict(d["layout"]), maps)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FeatureCodec:
        data = read_json(path, missing="no feature codec here (features.json missing)")
        try:
            return cls.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(path, f"not a feature codec file ({exc})") from None


def encode_iat(iat_us: np.ndarray) -> np.ndarray:
    """Inter-arrival µs -> [-1, 1] on a log scale (0 µs -> -1, 10 minutes or more -> +1)."""
    z = np.log1p(np.maximum(np.asarray(iat_us, np.float64), 0.0))
    return np.clip(2.0 * z / IAT_LOG_MAX - 1.0, -1.0, 1.0)


def decode_iat(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_iat` (clipped to [-1, 1] first)."""
    return np.expm1((np.clip(np.asarray(y, np.float64), -1.0, 1.0) + 1.0) / 2.0 * IAT_LOG_MAX)
