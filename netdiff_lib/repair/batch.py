"""Reconstruct one trace or many at once, and the :class:`Reconstruction` result.

Traces of a batch are stacked into one matrix with a trace id per row; every grouping key of the pipeline
(flows, near-duplicate ports, hosts, ID counters, TCP sessions) includes the trace, so nothing leaks between
traces and ``reconstruct_batch(ms)[i]`` equals ``reconstruct(ms[i])`` with seed ``config.seed + i``.  The
batch pays numpy's per-call overhead once instead of once per trace, which is what makes short traces fast.
Timestamps, the change report and the frames are then split per trace (views, no copies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from netdiff_lib.atomic import atomic_path
from netdiff_lib.payloads import synth
from netdiff_lib.repair import pipeline
from netdiff_lib.repair.emit import Frames
from netdiff_lib.repair.headers import packed, to_matrix
from netdiff_lib.repair.pipeline import RepairConfig
from netdiff_lib.repair.report import RepairReport, changed_bytes, changed_fields
from netdiff_lib.repair.timing import fit_pcap_range, timestamps
from netdiff_lib.schema import NETDIFFUSION, Layout
from netdiff_lib.trace import Trace

_PROTO_NAMES = ("tcp", "udp", "icmp")


@dataclass
class Reconstruction:
    """A reconstructed trace: frames, timestamps, the change report, and (on demand) the output's nPrint matrix.

    ``rows`` are the input rows that became packets (padding rows do not).
    """

    frames: Frames
    ts_ns: np.ndarray
    layout: Layout
    rows: np.ndarray
    report: RepairReport
    label: str | None = None
    blocks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    lengths: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @cached_property
    def matrix(self) -> np.ndarray:
        """The nPrint matrix of the output in the input layout: what the encoder makes of the written pcap."""
        return to_matrix(self.blocks, self.lengths, self.layout)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def linktype(self) -> int:
        return self.frames.linktype

    def packets(self) -> list[bytes]:
        """Every frame as bytes (Ethernet or raw IP, see :attr:`linktype`)."""
        return self.frames.packets()

    def pcap_bytes(self) -> bytes:
        return self.frames.pcap_image(self.ts_ns).tobytes()

    def write(self, path: str | Path) -> Path:
        """Write the pcap atomically (one write of the whole file image)."""
        path = Path(path)
        image = self.frames.pcap_image(self.ts_ns)
        with atomic_path(path, suffix=".pcap") as tmp, open(tmp, "wb") as fh:
            fh.write(image.data)
        return path

    def trace(self) -> Trace:
        """The output as a :class:`Trace` (its nPrint matrix in the input layout, with timestamps)."""
        return Trace(self.matrix, self.layout, self.ts_ns, self.label, self.report.source)


def _checked(matrix: np.ndarray, layout: Layout) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] != layout.width:
        raise ValueError(f"matrix shape {matrix.shape} does not fit layout {layout.describe()} ({layout.width})")
    return matrix.astype(np.int8, copy=False)


def _per_trace_count(ids: np.ndarray, trace: np.ndarray, k: int) -> np.ndarray:
    """Distinct ``ids`` per trace (ids never span traces)."""
    if not len(ids):
        return np.zeros(k, np.int64)
    _, first = np.unique(ids, return_index=True)
    return np.bincount(trace[first], minlength=k)


def reconstruct_batch(matrices: Sequence[np.ndarray], layout: Layout = NETDIFFUSION, *,
                      iat_us: Sequence[np.ndarray | None] | None = None, labels: Sequence[str | None] | None = None,
                      sources: Sequence[str | None] | None = None,
                      config: RepairConfig | None = None) -> list[Reconstruction]:
    """Reconstruct several generated traces of one layout in one pass (see the module docstring)."""
    cfg = config or RepairConfig()
    mats = [_checked(m, layout) for m in matrices]
    k = len(mats)
    iats, labs, srcs = (list(x) if x is not None else [None] * k for x in (iat_us, labels, sources))
    if not len(iats) == len(labs) == len(srcs) == k:
        raise ValueError("iat_us, labels and sources need one entry per matrix")
    sizes = np.array([len(m) for m in mats], np.int64)
    matrix = np.concatenate(mats) if k else np.zeros((0, layout.width), np.int8)
    w, rows = pipeline.prepare(matrix, layout, np.repeat(np.arange(k), sizes))
    pipeline.lengths(w, cfg.mtu)
    fl = pipeline.flows(w, cfg.snap)
    pay = pipeline.plan_payloads(w, fl, cfg, labs)
    tcp = pipeline.tcp(w, fl)
    pipeline.fill_payloads(w, fl, pay, cfg, labs)
    src, dst = pipeline.network(w, fl, cfg.plan)
    pipeline.transport(w, fl)
    frames, lens = pipeline.assemble(w, src, dst, cfg.link)
    diff = changed_bytes((w.h.packed_val, w.h.packed_on), packed(w.out, lens, layout))
    flows = _per_trace_count(fl.flow, w.trace, k)
    tcp_trace = w.trace[w.rows(0)]
    sessions = _per_trace_count(tcp.session, tcp_trace, k) if tcp is not None else np.zeros(k, np.int64)
    bounds = np.searchsorted(w.trace, np.arange(k + 1))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for i in range(k):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        kept = rows[lo:hi] - offsets[i]
        ts = timestamps(int(sizes[i]), iats[i], cfg.iat_model, pipeline.start_time(cfg), cfg.seed + i)[kept]
        ts, shift = fit_pcap_range(ts)
        report = _report(w, diff, lo, hi, layout, labs[i], srcs[i], int(sizes[i]), int(flows[i]), int(sessions[i]))
        if shift:
            report.notes.append(f"packet times moved by {shift // 10**9:+,} s into the pcap range (1970 .. 2106), "
                                f"inter-arrival times kept: the first packet is at {ts[0] // 10**9:,} s "
                                "since the epoch")
        if pay is not None:
            report.payload_adjusted = int(pay.adjusted[lo:hi].sum())
            report.payload_services = synth.counts(pay.slice(lo, hi), w.payload[lo:hi])
        out.append(Reconstruction(frames.slice(lo, hi), ts, layout, kept, report, labs[i],
                                  {b: v[lo:hi] for b, v in w.out.items()}, {b: v[lo:hi] for b, v in lens.items()}))
    return out


def _report(w: pipeline.Work, diff: np.ndarray, lo: int, hi: int, layout: Layout, label: str | None,
            source: str | None, rows: int, flows: int, sessions: int) -> RepairReport:
    """The change report of the packets ``lo:hi`` of a batch (one trace)."""
    bits, changed = changed_fields(diff[lo:hi], layout)
    kinds, counts = np.unique(w.family[lo:hi] * 4 + w.l4[lo:hi], return_counts=True)
    protocols = {f"ipv{c // 4}/{_PROTO_NAMES[c % 4]}": int(n) for c, n in zip(kinds.tolist(), counts, strict=True)}
    return RepairReport(
        label=label, source=source, rows=rows, packets=hi - lo, padding_rows=rows - (hi - lo), protocols=protocols,
        flows=flows, tcp_sessions=sessions, bits=sum(bits.values()), bits_changed=sum(changed.values()),
        field_bits=bits, field_changed=changed,
    )


def reconstruct(matrix: np.ndarray, layout: Layout = NETDIFFUSION, *, iat_us: np.ndarray | None = None,
                label: str | None = None, source: str | None = None,
                config: RepairConfig | None = None) -> Reconstruction:
    """Reconstruct one generated trace (rows = packets in time order, int8 in {-1, 0, 1})."""
    return reconstruct_batch([matrix], layout, iat_us=[iat_us], labels=[label], sources=[source], config=config)[0]
