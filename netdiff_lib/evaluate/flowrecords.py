"""Flow records: the per-flow values the flow evaluation takes from nfstream, and their file format.

:data:`COLUMNS` are read off nfstream's flow record (:mod:`netdiff_lib.evaluate.nfmeter`), :data:`EXTRA` come
from its plugin.  The pipeline's encode step saves each capture's records (:func:`save_flow_records`) so that
the evaluation never opens a capture again (:func:`netdiff_lib.evaluate.sources.encoded_trace_set`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netdiff_lib.atomic import read_json, write_json
from netdiff_lib.errors import InputError

_STATS = ("min_ps", "mean_ps", "stddev_ps", "max_ps", "min_piat_ms", "mean_piat_ms", "stddev_piat_ms",
          "max_piat_ms", *(f"{f}_packets" for f in ("syn", "cwr", "ece", "urg", "ack", "psh", "rst", "fin")))
#: Classifier features: nfstream's statistical flow features and the ports (identifiers and timestamps dropped).
FEATURES: tuple[str, ...] = (
    "src_port", "dst_port", "protocol", "ip_version",
    *(f"{d}_{s}" for d in ("bidirectional", "src2dst", "dst2src") for s in ("duration_ms", "packets", "bytes")),
    *(f"{d}_{s}" for d in ("bidirectional", "src2dst", "dst2src") for s in _STATS),
)
COLUMNS: tuple[str, ...] = (*FEATURES, "application_name")
#: Per-flow values the nfstream plugin adds (:mod:`netdiff_lib.evaluate.nfmeter`).
EXTRA = ("first_syn", "first_ack", "iats")
RECORDS_FORMAT = "netdiff-flows/1"


def save_flow_records(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Write one pcap's flow records (:meth:`netdiff_lib.evaluate.flows.FlowMeter.records`) as JSON, column-wise,
    atomically."""
    from netdiff_lib.evaluate.nfmeter import VERSION  # nfstream: installed wherever records are made

    names = [*COLUMNS, *EXTRA]
    write_json(path, {"format": RECORDS_FORMAT, "tool": VERSION, "columns": names,
                      "rows": [[r[c] for c in names] for r in records]})
    return Path(path)


def load_flow_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a file written by :func:`save_flow_records`."""
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != RECORDS_FORMAT or set(doc.get("columns", [])) != {
            *COLUMNS, *EXTRA}:
        raise InputError(path, f"not a {RECORDS_FORMAT} file of this netdiff version")
    return [dict(zip(doc["columns"], row, strict=True)) for row in doc["rows"]]
