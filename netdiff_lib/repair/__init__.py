"""Reconstruction: any generated nPrint matrix -> a protocol-correct, replayable pcap that keeps what was generated.

``reconstruct(matrix, layout, iat_us=..., label=...)`` returns a :class:`Reconstruction` (frames, timestamps,
the nPrint matrix of the output, and a :class:`RepairReport` of what changed); ``.write(path)`` writes the pcap
atomically.  ``reconstruct_batch`` does many traces in one vectorised pass (the same result per trace, several
times faster for short traces).  The rules, one module per concern:

- :mod:`.protocols`: padding rows, IPv4/IPv6 and TCP/UDP/ICMP per row by evidence votes;
- :mod:`.flows`: conversations, near-duplicate ports, client/server roles;
- :mod:`.tcp`: sessions, handshake/teardown flags, sequence and acknowledgement numbers;
- :mod:`.options`: option-area lengths and well-formed IPv4/TCP options;
- :mod:`.ip` and :mod:`.udp_icmp`: lengths, IDs, fixed fields, ICMP message types and bodies;
- :mod:`.addresses`: the address plan (documentation ranges by default) and MACs;
- :mod:`.timing`: timestamps from generated inter-arrival times or an :class:`IatModel`;
- :mod:`.emit`: checksums, frames and the pcap file image; :mod:`.report`: the change report;
- :mod:`.pipeline` runs the stages in order, :mod:`.batch` over one or many traces.

The principle is to change as few generated bits as possible: every rule keeps a generated value when it is
valid and coherent, and only otherwise picks the nearest valid one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from netdiff_lib.errors import ConfigError, InputError
from netdiff_lib.nprint.decode import nothing_to_write
from netdiff_lib.repair.addresses import AddressPlan
from netdiff_lib.repair.batch import Reconstruction, reconstruct, reconstruct_batch
from netdiff_lib.repair.pipeline import RepairConfig
from netdiff_lib.repair.protocols import check_layout
from netdiff_lib.repair.report import RepairReport
from netdiff_lib.repair.timing import IatModel, TimeRangeError
from netdiff_lib.trace import Trace

#: Most rows of one trace that reconstruction takes from a file (it holds a whole trace in memory, a few KB a
#: row): 64 times the traces the model makes (``--max-packets``, 1,024 by default).
MAX_TRACE_ROWS = 65_536

__all__ = [
    "MAX_TRACE_ROWS",
    "AddressPlan",
    "IatModel",
    "Reconstruction",
    "RepairConfig",
    "RepairReport",
    "numbered_names",
    "output_name",
    "reconstruct",
    "reconstruct_batch",
    "reconstruct_trace",
    "safe_name",
    "write_all",
]


def _has_times(trace: Trace) -> bool:
    return trace.ts_ns is not None and len(trace.ts_ns) > 1 and bool(np.any(np.diff(trace.ts_ns) != 0))


def reconstruct_trace(trace: Trace, config: RepairConfig | None = None,
                      iat_us: np.ndarray | None = None, name: str | Path | None = None) -> Reconstruction:
    """Reconstruct a :class:`Trace`; its own inter-arrival times are used when it has real timestamps.

    With ``name`` (the input file), what makes a trace unusable is an :class:`InputError` naming it: a layout
    without network and transport blocks, packet times that no start fits into a pcap, or no packet to write
    (no rows, or every row padding), or more than :data:`MAX_TRACE_ROWS` rows.
    """
    if iat_us is None and _has_times(trace):
        iat_us = trace.iat_us()
    if name is not None and len(trace) > MAX_TRACE_ROWS:
        raise InputError(name, f"{len(trace):,} packet rows, more than the {MAX_TRACE_ROWS:,} reconstruction takes "
                               "per trace (cut it into shorter traces)")
    if name is None:
        return reconstruct(trace.matrix, trace.layout, iat_us=iat_us, label=trace.label, source=trace.source,
                           config=config)
    try:
        check_layout(trace.layout)
        rec = reconstruct(trace.matrix, trace.layout, iat_us=iat_us, label=trace.label, source=trace.source,
                          config=config)
    except (ConfigError, TimeRangeError) as exc:
        raise InputError(name, str(exc)) from None
    if not len(rec):
        raise InputError(name, nothing_to_write(rec.report.rows, rec.report.padding_rows))
    return rec


def safe_name(label: str | None, default: str = "trace") -> str:
    """A label as a file or folder name: runs of other characters than letters, digits and ``._+-`` become
    ``-``; ``default`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", label or "").strip("-.") or default


def labelled_path(label: str | None, stem: str, suffix: str = ".pcap") -> str:
    """``<label>/<stem><suffix>``: where a generated trace goes in a folder of pcaps (``netdiff run``'s ``pcaps/``
    and ``netdiff generate``'s output alike)."""
    return f"{safe_name(label, 'unlabelled')}/{stem}{suffix}"


def output_name(label: str | None, n: int) -> str:
    """``<label>_<n>.pcap`` (label made file-name safe; ``trace`` when there is none)."""
    return f"{safe_name(label)}_{n}.pcap"


def numbered_names(labels: Sequence[str | None]) -> list[str]:
    """``<label>_<n>.pcap`` for each label, ``n`` counting from 0 within each label in list order."""
    seen: Counter = Counter()
    names = []
    for label in labels:
        names.append(output_name(label, seen[label]))
        seen[label] += 1
    return names


def write_all(recs: list[Reconstruction], outdir: str | Path) -> list[Path]:
    """Write reconstructions as ``OUTDIR/<label>_<n>.pcap``, numbered from 0 per label in list order."""
    names = numbered_names([rec.label for rec in recs])
    return [rec.write(Path(outdir) / name) for rec, name in zip(recs, names, strict=True)]
