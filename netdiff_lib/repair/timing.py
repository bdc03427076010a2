"""Packet timestamps: generated inter-arrival times, or samples from a class's empirical distribution.

:class:`IatModel` is a histogram of inter-arrival times on log-spaced bins (one bin for gaps below 1 µs, then
:data:`BINS` bins from 1 µs to 100 s); the model stage fits one per class and saves it as JSON beside the
model.  Sampling picks a bin by its frequency and a value log-uniformly inside it, so the distribution's shape
over many decades survives with a few hundred numbers.  :meth:`IatModel.default` (log-normal, median 1 ms,
one decade either side) stands in when neither generated times nor a fitted model exist.

Timestamps are ``start + cumsum(gaps)``: gaps are clipped to >= 0 (NaN counts as 0), so time never runs
backwards; the first packet is at ``start`` (default 2024-01-01 00:00:00 UTC, so outputs are reproducible).
A pcap holds times from 1970 to 2106 (0 .. 2**32 s): :func:`fit_pcap_range` moves times that would pass
either end into it by whole seconds, keeping every gap (a trace whose own times run past 2106 from the
start, as some fuzzed test captures' do); gaps that add up to more than the range are a :class:`TimeRangeError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netdiff_lib.atomic import read_json, write_json
from netdiff_lib.errors import InputError

BINS = 64
LOW_US, HIGH_US = 1.0, 1e8
DEFAULT_START_NS = 1_704_067_200 * 1_000_000_000
FORMAT = "netdiff-iat/1"
NS = 1_000_000_000
#: The first time (ns since the epoch) past what a classic pcap holds, and the longest span of times that fits.
PCAP_END_NS = (1 << 32) * NS
MAX_SPAN_NS = PCAP_END_NS - NS


class TimeRangeError(ValueError):
    """Packet times that no start can fit into a pcap's range."""


@dataclass
class IatModel:
    """Histogram of inter-arrival times: ``edges_us`` (k + 1,) and ``counts`` (k,)."""

    edges_us: np.ndarray
    counts: np.ndarray
    label: str | None = None

    def __post_init__(self) -> None:
        self.edges_us = np.asarray(self.edges_us, np.float64)
        self.counts = np.asarray(self.counts, np.float64)
        if self.edges_us.ndim != 1 or len(self.edges_us) != len(self.counts) + 1:
            raise ValueError("an IatModel needs k + 1 edges for k counts")
        if np.any(np.diff(self.edges_us) <= 0) or self.edges_us[0] < 0:
            raise ValueError("IatModel edges must be >= 0 and increasing")
        if np.any(self.counts < 0) or self.counts.sum() <= 0:
            raise ValueError("IatModel counts must be >= 0 with a positive total")

    @staticmethod
    def default_edges() -> np.ndarray:
        return np.concatenate([[0.0], np.logspace(np.log10(LOW_US), np.log10(HIGH_US), BINS + 1)])

    @classmethod
    def fit(cls, iats_us: Iterable[np.ndarray], label: str | None = None) -> IatModel:
        """Fit to the inter-arrival times of some traces (each trace's first entry, 0 by convention, is skipped)."""
        edges = cls.default_edges()
        counts = np.zeros(len(edges) - 1)
        for iat in iats_us:
            v = np.clip(np.nan_to_num(np.asarray(iat, np.float64)[1:]), 0, HIGH_US * 0.999)
            counts += np.histogram(v, bins=edges)[0]
        if counts.sum() == 0:
            return cls.default(label)
        return cls(edges, counts, label)

    @classmethod
    def default(cls, label: str | None = None) -> IatModel:
        edges = cls.default_edges()
        centre = np.log10(np.sqrt(np.maximum(edges[:-1], 0.5) * edges[1:]))
        counts = np.exp(-0.5 * ((centre - 3.0) / 1.0) ** 2)
        return cls(edges, counts, label)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` inter-arrival times in µs."""
        p = self.counts / self.counts.sum()
        b = rng.choice(len(p), size=n, p=p)
        lo, hi = self.edges_us[b], self.edges_us[b + 1]
        u = rng.random(n)
        log_ok = lo > 0
        safe_lo = np.where(log_ok, lo, 1.0)
        logu = safe_lo * np.exp(u * np.log(hi / safe_lo))
        return np.where(log_ok, logu, lo + u * (hi - lo))

    def to_dict(self) -> dict:
        return {"format": FORMAT, "label": self.label, "edges_us": self.edges_us.tolist(),
                "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> IatModel:
        if d.get("format") != FORMAT:
            raise ValueError(f"not an inter-arrival model ({d.get('format')!r}, expected {FORMAT})")
        return cls(np.array(d["edges_us"]), np.array(d["counts"]), d.get("label"))

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> IatModel:
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(path, f"not an inter-arrival model ({exc})") from None


def timestamps(n: int, iat_us: np.ndarray | None = None, model: IatModel | None = None,
               start_ns: int = DEFAULT_START_NS, seed: int = 0) -> np.ndarray:
    """int64 ns timestamps for ``n`` packets (module docstring); ``iat_us`` wins over ``model``."""
    if iat_us is not None:
        gaps = np.clip(np.nan_to_num(np.asarray(iat_us, np.float64), nan=0.0), 0, None)
        if gaps.shape != (n,):
            raise ValueError(f"need {n} inter-arrival times, got {gaps.shape}")
    else:
        gaps = (model or IatModel.default()).sample(n, np.random.default_rng(seed))
    if n:
        gaps[0] = 0.0
    span = float(gaps.sum()) * 1000.0
    if span > MAX_SPAN_NS:
        raise TimeRangeError(f"its packet times span {span / NS:,.0f} s, more than a pcap holds "
                             f"({MAX_SPAN_NS // NS:,} s, 1970 .. 2106)")
    return int(start_ns) + np.cumsum(np.round(gaps * 1000.0).astype(np.int64))


def fit_pcap_range(ts_ns: np.ndarray) -> tuple[np.ndarray, int]:
    """Times moved by whole seconds into the pcap range when they pass it, gaps kept; returns (times, shift ns).

    The shift is the smallest that fits: times past 2106 end just before it, times before 1970 start at it.
    """
    ts = np.asarray(ts_ns, np.int64)
    if not len(ts) or (ts.min() >= 0 and ts.max() < PCAP_END_NS):
        return ts, 0
    lo, hi = int(ts.min()), int(ts.max())
    if hi - lo > MAX_SPAN_NS:
        raise TimeRangeError(f"its packet times span {(hi - lo) / NS:,.0f} s, more than a pcap holds "
                             f"({MAX_SPAN_NS // NS:,} s, 1970 .. 2106)")
    shift = -(-(hi - PCAP_END_NS + 1) // NS) * -NS if hi >= PCAP_END_NS else -(lo // NS) * NS
    return ts + shift, shift
