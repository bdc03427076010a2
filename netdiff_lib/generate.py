"""Generated traces -> pcaps: file names ``<label>_<n>`` and reconstruction of every trace, for any backend.

:func:`write_pcaps` hands each :class:`~netdiff_lib.models.base.GeneratedTrace` to reconstruction (its
inter-arrival times as the packet times) and writes ``<label>/<label>_<n>.pcap`` (the layout of a run's
``pcaps/``); the sampling itself is the backend's (:meth:`~netdiff_lib.models.base.TraceGenerator.generate`).
A generated trace in which no row holds a packet (every row padding) is not written as an empty pcap: it is
named in ``empty`` and counted by the caller; when no trace at all gives a packet, that is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from netdiff_lib.errors import GenerationError
from netdiff_lib.models.base import GeneratedTrace
from netdiff_lib.schema import Layout

if TYPE_CHECKING:
    from netdiff_lib.payloads import PayloadProfile

SOURCE = "netdiff-generated"


def trace_names(traces: list[GeneratedTrace]) -> list[str]:
    """File stems ``<label>_<n>`` (reconstruction's naming rule: n from 0 within each label, in list order)."""
    from netdiff_lib.repair import numbered_names

    return [name.removesuffix(".pcap") for name in numbered_names([t.label for t in traces])]


def write_pcaps(traces: list[GeneratedTrace], out_dir: str | Path, layout: Layout, *, arrays: bool = False,
                seed: int = 0, progress: bool = True, payloads: PayloadProfile | None = None,
                source: str = SOURCE, empty: list[str] | None = None) -> list[Path]:
    """Reconstruct every trace into ``out_dir/<label>/<label>_<n>.pcap`` (and the raw generated ``.npz`` beside it
    when ``arrays``); packet times are the traces' inter-arrival times, payloads follow ``payloads``.  Traces
    that give no packet are skipped and their names appended to ``empty``."""
    from tqdm.auto import tqdm

    from netdiff_lib.repair import RepairConfig, labelled_path, reconstruct
    from netdiff_lib.repair.timing import timestamps
    from netdiff_lib.trace import Trace, save_trace

    out = Path(out_dir)
    paths = []
    for i, (g, name) in enumerate(tqdm(list(zip(traces, trace_names(traces), strict=True)), desc="reconstruct",
                                       unit="pcap", disable=not progress, dynamic_ncols=True)):
        cfg = RepairConfig(seed=seed + i, payloads=payloads)
        rec = reconstruct(g.matrix, layout, iat_us=g.iat_us, label=g.label, source=source, config=cfg)
        if not len(rec):  # every row padding: no empty pcap
            if empty is not None:
                empty.append(labelled_path(g.label, name))
            continue
        paths.append(rec.write(out / labelled_path(g.label, name)))
        if arrays:
            ts = timestamps(len(g.matrix), g.iat_us)
            save_trace(out / labelled_path(g.label, name, ".npz"), Trace(g.matrix, layout, ts, g.label, source))
    if traces and not paths:
        raise GenerationError(f"none of the {len(traces)} generated traces holds a packet (every row is padding): "
                              "nothing was written; the model needs more training")
    return paths
