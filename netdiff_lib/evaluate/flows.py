"""Flow-level evaluation: the conversations of a trace set, as a flow meter of the field sees them.

nfstream (nDPI inside; the ``eval`` extra) meters every pcap of a set once (:class:`FlowMeter`): bidirectional
5-tuple flows, idle timeout :data:`IDLE_TIMEOUT_S` (nfstream's default; a pause that long ends a flow), active
timeout :data:`ACTIVE_TIMEOUT_S` (longer than any capture here, so no flow is cut), nDPI's first
:data:`N_DISSECTIONS` packets per flow, one meter process.  Like the rest of the evaluation it reads the start
of a capture: its first ``max_packets`` frames (the traces keep the first ``max_packets`` IP packets).  A set
without pcaps (traces in memory) and a missing nfstream leave the section "not measured" instead of failing.

Per set, pooled and per class (:func:`set_stats`): TCP/UDP flows per trace; packets, bytes, duration and
inter-arrival times (ms, nfstream's clock) inside TCP/UDP flows; the share of one-packet flows; TCP
completeness (opens with a SYN, full handshake: SYN first, a SYN from the responder and an ACK from the
initiator; closed by FIN or RST; mid-stream start: first packet without SYN); the nDPI application mix (share
of flows per master protocol).  The :data:`VARIABLES` are binned like header fields (quarter-octave counts,
0.1-decade times) and compared with real-test per class and pooled with the field distances
(:func:`netdiff_lib.evaluate.fidelity.field_fidelity`).  Flow TSTR/TRTR: a random forest on
:data:`FEATURES` (nfstream's statistical features and the ports; addresses, MACs, ids, timestamps and nDPI's
output left out) fitted on the flows of synthetic / real-train, scored on real-test flows (macro-F1 over flows).

The fields' ``packets_per_flow`` (:mod:`netdiff_lib.evaluate.fields`) stays as it is: it reads the nPrint
traces (port pairs, no addresses), so it is measured where no pcap is at hand; this section meters the pcaps.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netdiff_lib.evaluate.fidelity import field_fidelity, nanmean
from netdiff_lib.evaluate.fields import FieldTable, log_keys, packets_keys
from netdiff_lib.evaluate.flowrecords import COLUMNS, EXTRA, FEATURES
from netdiff_lib.evaluate.sources import TraceSet

IDLE_TIMEOUT_S = 120
ACTIVE_TIMEOUT_S = 3600
N_DISSECTIONS = 20
NOT_INSTALLED = "not measured: install netdiff[eval] (nfstream)"
#: Flow variables compared as distributions with real-test.
VARIABLES = ("flows_per_trace", "packets_per_flow", "bytes_per_flow", "duration_ms", "iat_ms", "tcp_state",
             "application")
TCP, UDP = 6, 17


def unavailable() -> str | None:
    """Why flows cannot be measured here (nfstream missing), or None."""
    try:
        import netdiff_lib.evaluate.nfmeter  # noqa: F401
    except ImportError:
        return NOT_INSTALLED
    return None


def first_packets(path: str, n: int, workdir: Path) -> str:
    """``path`` itself, or a copy of its first ``n`` packets in ``workdir`` when it holds more."""
    from netdiff_lib.pcap import PcapFile, PcapWriter

    batches = list(PcapFile(path).batches(max_packets=n + 1))
    if sum(len(b) for b in batches) <= n or len({int(x) for b in batches for x in b.linktype}) != 1:
        return path
    out = workdir / f"{hashlib.sha1(path.encode()).hexdigest()[:16]}-{Path(path).name}"
    with PcapWriter(out, linktype=int(batches[0].linktype[0]), nanosecond=True) as w:
        left = n
        for b in batches:
            k = min(left, len(b))
            w.write_many([b.packet(i) for i in range(k)], b.ts_ns[:k], b.wirelen[:k])
            left -= k
    return str(out)


class FlowMeter:
    """nfstream once per pcap (cached by path), flow tables per set."""

    def __init__(self, workdir: Path, max_packets: int | None = None) -> None:
        self.workdir, self.max_packets = workdir, max_packets
        self._cache: dict[str, list[dict[str, Any]] | str] = {}

    def records(self, path: str) -> list[dict[str, Any]] | str:
        """The flow records of one pcap, or the cause when it cannot be metered."""
        from netdiff_lib.errors import NetdiffError
        from netdiff_lib.evaluate.nfmeter import meter

        if path not in self._cache:
            try:
                src = path if self.max_packets is None else first_packets(path, self.max_packets, self.workdir)
                self._cache[path] = meter(src, COLUMNS, idle_timeout_s=IDLE_TIMEOUT_S, max_iats=self.max_packets or
                                          1 << 20, active_timeout_s=ACTIVE_TIMEOUT_S, n_dissections=N_DISSECTIONS)
            except (NetdiffError, OSError, ValueError) as exc:
                self._cache[path] = str(getattr(exc, "cause", exc))
        return self._cache[path]

    def table(self, files: Sequence[tuple[str, str]], progress: Callable | None = None,
              known: dict[str, list[dict[str, Any]]] | None = None) -> tuple[Any, list[dict]]:
        """All flows of a set's pcaps as a DataFrame (plus ``trace``: index among the pcaps nfstream read, and
        ``label``), and the pcaps it could not read (``{"file", "cause"}``); ``known``: records metered earlier,
        by file."""
        import pandas as pd

        rows, failed, read = [], [], 0
        for path, label in progress(files) if progress else files:
            got = (known or {}).get(path)
            got = self.records(path) if got is None else got
            if isinstance(got, str):
                failed.append({"file": path, "cause": got})
                continue
            rows += [r | {"trace": read, "label": label} for r in got]
            read += 1
        df = pd.DataFrame(rows, columns=[*COLUMNS, *EXTRA, "trace", "label"])
        return df, failed


def _tcp_state(df: Any) -> np.ndarray:
    """Per TCP flow how it opened (handshake / syn / synack / mid) and closed (fin / rst / open): ``handshake/fin``."""
    syn, ack = df["first_syn"].to_numpy() > 0, df["first_ack"].to_numpy() > 0
    shake = syn & ~ack & (df["dst2src_syn_packets"].to_numpy() > 0) & (df["src2dst_ack_packets"].to_numpy() > 0)
    opened = np.where(shake, "handshake", np.where(syn & ~ack, "syn", np.where(syn, "synack", "mid")))
    fin, rst = df["bidirectional_fin_packets"].to_numpy() > 0, df["bidirectional_rst_packets"].to_numpy() > 0
    closed = np.where(fin, "fin", np.where(rst, "rst", "open"))
    return np.char.add(np.char.add(opened.astype(str), "/"), closed.astype(str)).astype(object)


def _master(names: Any) -> np.ndarray:
    """nDPI's master protocol (``TLS.Google`` -> ``TLS``)."""
    return np.array([str(n).split(".", 1)[0] for n in names], dtype=object)


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else math.nan


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else math.nan


def _stats(df: Any, traces: int) -> dict[str, Any]:
    """The figures of one set (or one class of it): ``df`` its flows, ``traces`` its pcaps."""
    tu = df[df["protocol"].isin((TCP, UDP))]
    tcp = df[df["protocol"] == TCP]
    state = _tcp_state(tcp)
    opened = np.array([s.split("/")[0] for s in state])
    iats = np.concatenate([np.asarray(x, dtype=np.float64) for x in tu["iats"]] or [np.empty(0)])
    pkts = tu["bidirectional_packets"].to_numpy()
    return {
        "traces": int(traces), "flows": len(df), "tcp_udp_flows": len(tu),
        "flows_per_trace": len(tu) / traces if traces else math.nan,
        "one_packet_share": _share(pkts == 1),
        "packets_median": _median(pkts), "packets_mean": float(pkts.mean()) if pkts.size else math.nan,
        "bytes_median": _median(tu["bidirectional_bytes"].to_numpy()),
        "duration_ms_median": _median(tu["bidirectional_duration_ms"].to_numpy()),
        "iat_ms_median": _median(iats),
        "tcp_flows": len(tcp),
        "syn_open_share": _share(np.isin(opened, ("handshake", "syn"))),
        "handshake_share": _share(opened == "handshake"),
        "midstream_share": _share(opened == "mid"),
        "closed_share": _share(np.array([not s.endswith("/open") for s in state], dtype=bool)),
        "fin_share": _share(tcp["bidirectional_fin_packets"].to_numpy() > 0),
        "rst_share": _share(tcp["bidirectional_rst_packets"].to_numpy() > 0),
    }


def application_mix(df: Any, top: int = 30) -> dict[str, float]:
    """Share of flows per nDPI master protocol (the ``top`` most frequent)."""
    if not len(df):
        return {}
    names, counts = np.unique(_master(df["application_name"]), return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return {str(names[i]): float(counts[i] / counts.sum()) for i in order}


def set_stats(df: Any, labels: Sequence[str]) -> dict[str, Any]:
    """Pooled and per-class figures of a set; ``labels``: the label of each of its pcaps."""
    counts = {c: labels.count(c) for c in sorted(set(labels))}
    return {"all": _stats(df, len(labels)), "per_class": {c: _stats(df[df["label"] == c], n)
                                                           for c, n in counts.items()}}


def shapes(df: Any) -> dict[str, np.ndarray]:
    """Raw TCP/UDP flow sizes and times of a flow table (for the CDF plots)."""
    tu = df[df["protocol"].isin((TCP, UDP))]
    return {"packets per flow": tu["bidirectional_packets"].to_numpy(dtype=np.float64),
            "bytes per flow": tu["bidirectional_bytes"].to_numpy(dtype=np.float64),
            "flow duration (ms)": tu["bidirectional_duration_ms"].to_numpy(dtype=np.float64),
            "inter-arrival time in flow (ms)": np.concatenate([np.asarray(x, dtype=np.float64) for x in tu["iats"]]
                                                              or [np.empty(0)])}


def variable_table(df: Any, labels: Sequence[str]) -> FieldTable:
    """The :data:`VARIABLES` of a set as a :class:`FieldTable` (binned keys, class code per value)."""
    classes = sorted(set(labels))
    code = {c: i for i, c in enumerate(classes)}
    trace_codes = np.array([code[c] for c in labels], dtype=np.int32)
    flow_codes = np.array([code[c] for c in df["label"]], dtype=np.int32)
    tu = (df["protocol"].isin((TCP, UDP))).to_numpy()
    tcp = (df["protocol"] == TCP).to_numpy()
    iats = [np.asarray(x, dtype=np.float64) for x in df["iats"][tu]]
    table = FieldTable(classes)
    values = {
        "flows_per_trace": (packets_keys(np.bincount(df["trace"][tu].to_numpy(dtype=np.int64),
                                                     minlength=len(labels))), trace_codes),
        "packets_per_flow": (packets_keys(df["bidirectional_packets"][tu].to_numpy()), flow_codes[tu]),
        "bytes_per_flow": (packets_keys(df["bidirectional_bytes"][tu].to_numpy()), flow_codes[tu]),
        "duration_ms": (log_keys(df["bidirectional_duration_ms"][tu].to_numpy()), flow_codes[tu]),
        "iat_ms": (log_keys(np.concatenate(iats or [np.empty(0)])),
                   np.repeat(flow_codes[tu], [len(x) for x in iats]).astype(np.int32)),
        "tcp_state": (_tcp_state(df[tcp]), flow_codes[tcp]),
        "application": (_master(df["application_name"]), flow_codes),
    }
    for name, (vals, codes) in values.items():
        table.values[name], table.codes[name] = vals, codes
    return table


def features(df: Any) -> np.ndarray:
    """The classifier's feature matrix (:data:`FEATURES`), float32, missing values as 0."""
    return np.nan_to_num(df[list(FEATURES)].to_numpy(dtype=np.float64)).astype(np.float32)


def flow_utility(train: Any, test: Any, seed: int = 0, x_test: np.ndarray | None = None) -> dict[str, Any]:
    """Random forest fitted on ``train`` flows, scored on ``test`` flows (labels: their pcaps' classes)."""
    from netdiff_lib.evaluate.utility import MODELS, score

    if not len(train) or not len(test):
        return {"error": "no flows to train or test on"}
    y_train, y_test = train["label"].to_numpy(dtype=str), test["label"].to_numpy(dtype=str)
    model = MODELS["rf"](seed).fit(features(train), y_train)
    labels = sorted(set(y_train.tolist()) | set(y_test.tolist()))
    pred = model.predict(features(test) if x_test is None else x_test)
    return score(y_test, pred, labels) | {"train_flows": len(train), "test_flows": len(test)}


def distances(real: FieldTable, other: FieldTable, classes: list[str]) -> dict[str, Any]:
    """Per variable the distances to real-test (pooled, per class, macro), and their means over variables."""
    out: dict[str, Any] = {n: field_fidelity(real, other, n, classes) for n in VARIABLES}
    out["mean"] = {scope: {k: nanmean(out[n][scope][k] for n in VARIABLES) for k in ("jsd", "tvd", "hellinger")}
                   for scope in ("all", "macro")}
    return out


def flow_section(sets: dict[str, TraceSet], rows: dict[str, str], meter: FlowMeter, seed: int = 0,
                 bar: Callable | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's ``flows`` section and the flow tables by set name (for the pictures); ``rows`` maps report
    rows to the set compared with real-test (``{"reference": "real_train", "synthetic": "synthetic"}``)."""
    reason = unavailable()
    if reason:
        return {"available": False, "reason": reason}, {}
    missing = [n for n, s in sets.items()  # no pcap and no flow records (a pcap the meter failed on is counted)
               if not any(f in s.flows or Path(f).is_file() for f, _ in s.files)]
    if "real_test" in missing:
        return {"available": False, "reason": "not measured: no pcaps or flow records of the real-test traces"}, {}
    from netdiff_lib.evaluate.nfmeter import VERSION

    frames, failed, labels = {}, {}, {}
    for name, s in sets.items():
        if name not in missing:
            progress = bar(f"flows {name}", len(s.files)) if bar else None
            frames[name], failed[name] = meter.table(s.files, progress, s.flows)
            unread = {f["file"] for f in failed[name]}
            labels[name] = [lab for f, lab in s.files if f not in unread]
    classes = sorted(set(labels["real_test"]))
    tables = {n: variable_table(df, labels[n]) for n, df in frames.items()}
    measured = {row: src for row, src in rows.items() if src in frames}
    x_test = features(frames["real_test"])
    return {
        "available": True, "tool": VERSION, "rows": measured, "not_measured": missing,
        "config": {"idle_timeout_s": IDLE_TIMEOUT_S, "active_timeout_s": ACTIVE_TIMEOUT_S,
                   "n_dissections": N_DISSECTIONS, "max_packets": meter.max_packets, "features": list(FEATURES)},
        "sets": {n: set_stats(df, labels[n]) | {"failed": failed[n], "application_mix": application_mix(df)}
                 for n, df in frames.items()},
        "distances": {row: distances(tables["real_test"], tables[src], classes) for row, src in measured.items()},
        "utility": {row: flow_utility(frames[src], frames["real_test"], seed, x_test)
                    for row, src in measured.items()},
    }, frames
