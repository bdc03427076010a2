"""Where a model's long gaps land, and ``model.iat_decode=role`` (same weights, same sampled tokens per arm).

``python -m benchmarks.iat_roles MODEL --train SPLIT/train --real SPLIT/test --out OUT`` (MODEL from
``python -m benchmarks.conv_rules train``): samples ``--per-class`` traces per class once (benchmarks/conv_rules.py),
decodes them with ``model.iat_decode=sampled`` and ``role`` (role tables fitted on ``--train`` when the model
folder lacks them), and prints, for the real test traces and each arm, per conversation (a TCP/UDP flow of the
decoded rows: IP version, transport, port pair, within a trace): packets, span in packets (first to last
position) and duration, and the inter-arrival times by role (:data:`~netdiff_lib.models.native.iat_roles.ROLES`).
Counterfactuals split the duration excess: ``shuffled`` keeps the positions and shuffles the gaps within each
trace (placement blind to roles), ``role-drawn`` keeps the positions and draws each gap from the class's real
times of its role (a real placement, so what remains is the positional spread), ``compacted`` keeps the times
and puts each flow's packets one after the other from its opening (no positional spread); the diagnostic arms
``sampled+compacted`` and ``role+compacted`` decode so (no option of the model).  Writes
OUT/<arm>/<label>/*.pcap, their nfstream flow figures and OUT/iat_roles.json; then ``netdiff evaluate`` /
``netdiff validate`` on OUT/<arm>.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ARMS = ("sampled", "role")
#: random draws of the shuffled and role-drawn counterfactuals (their figures are the mean)
DRAWS = 5


def _rows(traces: list[Any]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, list[str]]:
    """(trace of each packet, {l3, l4, sport, dport}, inter-arrival µs with each trace's first 0, labels)."""
    from netdiff_lib.models.native.endpoints import batch_fields
    from netdiff_lib.models.native.tokens import read_fields

    trace_of, v = batch_fields([read_fields(t.matrix) for t in traces])
    iat = np.concatenate([np.r_[0.0, np.asarray(_iat(t), np.float64)[1:]] for t in traces])
    return trace_of, v, iat, [t.label for t in traces]


def _iat(t: Any) -> np.ndarray:
    """A :class:`~netdiff_lib.trace.Trace`'s inter-arrival µs (a method) or a generated trace's (an array)."""
    return t.iat_us() if callable(t.iat_us) else t.iat_us


def conversation_stats(trace_of: np.ndarray, v: dict[str, np.ndarray], iat: np.ndarray) -> dict[str, float]:
    """Per conversation (TCP/UDP flow of the rows): packets, span, duration; gaps by role (ms)."""
    from netdiff_lib.models.native.endpoints import flow_ids
    from netdiff_lib.models.native.iat_roles import ROLES, packet_roles

    n = len(trace_of)
    ported = (v["l3"] != 0) & ((v["l4"] == 1) | (v["l4"] == 2))
    flows = flow_ids(trace_of, v["l3"], v["l4"], v["sport"], v["dport"])[ported]
    pos = (np.arange(n) - np.searchsorted(trace_of, trace_of))[ported]
    t = np.cumsum(iat)[ported]
    count = np.bincount(flows)
    keep = count > 0
    first = np.full(len(count), n)
    np.minimum.at(first, flows, pos)
    last = np.zeros(len(count), np.int64)
    np.maximum.at(last, flows, pos)
    t0, t1 = np.full(len(count), np.inf), np.zeros(len(count))
    np.minimum.at(t0, flows, t)
    np.maximum.at(t1, flows, t)
    count, span, dur = count[keep], (last - first + 1)[keep], (t1 - t0)[keep] / 1e3
    multi = count >= 2
    out = {"flows": int(keep.sum()), "one_packet_share": round(float(np.mean(count == 1)), 4),
           "packets_median": float(np.median(count)), "span_median": float(np.median(span[multi])),
           "span_over_packets_median": round(float(np.median(span[multi] / count[multi])), 3),
           "foreign_inside_mean": round(float(np.mean(span[multi] - count[multi])), 2),
           "duration_ms_median": round(float(np.median(dur)), 2),
           "duration_ms_median_2plus": round(float(np.median(dur[multi])), 2)}
    role = packet_roles(trace_of, v["l3"], v["l4"], v["sport"], v["dport"])
    gap = np.r_[False, trace_of[1:] == trace_of[:-1]]
    total = iat[gap].sum()
    for i, r in enumerate(ROLES):
        g = iat[gap & (role == i)] / 1e3
        if len(g):
            out.update({f"{r}_gaps": len(g), f"{r}_gap_ms_median": round(float(np.median(g)), 2),
                        f"{r}_gap_ms_p90": round(float(np.quantile(g, 0.9)), 1),
                        f"{r}_time_share": round(float(g.sum() * 1e3 / total), 3)})
    return out


def shuffled(trace_of: np.ndarray, iat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The gaps of each trace in a random order (each trace's first packet keeps 0)."""
    out = iat.copy()
    for tr in np.unique(trace_of):
        idx = np.flatnonzero(trace_of == tr)[1:]
        out[idx] = rng.permutation(iat[idx])
    return out


def role_drawn(trace_of: np.ndarray, v: dict[str, np.ndarray], labels: list[str], tables: dict[str, Any],
               rng: np.random.Generator) -> np.ndarray:
    """Each gap drawn from the class's real times of its packet's role (a uniform rank into its table)."""
    from netdiff_lib.models.native.iat_roles import packet_roles, role_iat

    role = packet_roles(trace_of, v["l3"], v["l4"], v["sport"], v["dport"])
    lab = np.asarray(labels, dtype=object)[trace_of]
    # a uniform rank in the pooled table, then role_iat maps it into the role's table
    u = np.empty(len(trace_of))
    for name in sorted(set(lab.tolist())):
        grid = np.asarray((tables.get(name) or tables[""])["all"])
        rows = lab == name
        u[rows] = np.interp(rng.random(rows.sum()), np.linspace(0, 1, len(grid)), grid)
    out = role_iat(10.0**u - 1.0, role, trace_of, labels, tables)
    out[np.r_[True, trace_of[1:] != trace_of[:-1]]] = 0.0
    return out


def compact_order(trace_of: np.ndarray, v: dict[str, np.ndarray]) -> np.ndarray:
    """The row order that puts each flow's packets one after the other from its opening, within each trace
    (flows in the order they open, each flow's packets in their order; the times stay with the positions)."""
    from netdiff_lib.models.native.endpoints import flow_ids

    n = len(trace_of)
    flows = flow_ids(trace_of, v["l3"], v["l4"], v["sport"], v["dport"])
    ported = (v["l3"] != 0) & ((v["l4"] == 1) | (v["l4"] == 2))
    _, first = np.unique(flows, return_index=True)
    key = np.where(ported, first[flows], np.arange(n))
    return np.lexsort((np.arange(n), key, trace_of))


def compacted_arms(traces: list[Any], tables: dict[str, Any]) -> dict[str, list[Any]]:
    """Diagnostic arms from the ``sampled`` traces: rows compacted (:func:`compact_order`) with the sampled
    times, and then with the role rule applied to the compacted rows."""
    from netdiff_lib.models.base import GeneratedTrace
    from netdiff_lib.models.native.iat_roles import packet_roles, role_iat

    trace_of, v, iat, labels = _rows(traces)
    order = compact_order(trace_of, v)
    matrix = np.concatenate([t.matrix for t in traces])[order]
    w = {k: a[order] for k, a in v.items()}
    timed = role_iat(iat, packet_roles(trace_of, w["l3"], w["l4"], w["sport"], w["dport"]), trace_of, labels,
                     tables)
    timed[np.r_[True, trace_of[1:] != trace_of[:-1]]] = 0.0
    ends = np.cumsum([len(t.matrix) for t in traces])[:-1]
    return {arm: [GeneratedTrace(m, t, lab) for m, t, lab in zip(np.split(matrix, ends), np.split(times, ends),
                                                                  labels, strict=True)]
            for arm, times in (("sampled+compacted", iat), ("role+compacted", timed))}


def diagnose(traces: list[Any], tables: dict[str, Any], seed: int) -> dict[str, dict[str, float]]:
    trace_of, v, iat, labels = _rows(traces)
    rng = np.random.default_rng(seed)
    return {"as is": conversation_stats(trace_of, v, iat),
            "compacted": conversation_stats(trace_of, {k: a[compact_order(trace_of, v)] for k, a in v.items()}, iat),
            "shuffled": _mean([conversation_stats(trace_of, v, shuffled(trace_of, iat, rng)) for _ in range(DRAWS)]),
            "role-drawn": _mean([conversation_stats(trace_of, v, role_drawn(trace_of, v, labels, tables, rng))
                                 for _ in range(DRAWS)])}


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each figure over random draws (figures every draw has)."""
    return {k: round(float(np.mean([r[k] for r in runs])), 3) for k in runs[0] if all(k in r for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--train", required=True)
    ap.add_argument("--real", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-class", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from benchmarks.conv_roundtrip import flow_figures
    from benchmarks.conv_rules import _decode, _sample
    from netdiff_lib.encoded import from_captures
    from netdiff_lib.generate import write_pcaps
    from netdiff_lib.models.native.iat_roles import fit_iat_roles
    from netdiff_lib.models.native.model import load_model_dir
    from netdiff_lib.payloads import load_payloads

    torch.set_num_threads(1)
    model = load_model_dir(args.model)
    tok, n = model.representation.tokenizer, model.config.model.max_packets
    tables = tok.iat_roles
    if not tables:
        train = from_captures(args.train, n).traces
        trace_of, v, iat, labels = _rows(train)
        tables = fit_iat_roles(trace_of, v["l3"], v["l4"], v["sport"], v["dport"], iat, labels)
    real = from_captures(args.real, n).traces
    out, result = Path(args.out), {"real": diagnose(real, tables, args.seed)}
    batches = _sample(model, args.per_class, args.steps, args.seed)
    work = out / "nfstream"
    work.mkdir(parents=True, exist_ok=True)
    arms = {arm: _decode(replace(tok, iat_decode=arm, iat_roles=tables), batches, args.seed) for arm in ARMS}
    arms.update(compacted_arms(arms["sampled"], tables))
    for arm, traces in arms.items():
        result[arm] = diagnose(traces, tables, args.seed)
        paths = write_pcaps(traces, out / arm, model.layout, seed=args.seed, progress=False,
                            payloads=load_payloads(args.model))
        result[arm]["nfstream"] = flow_figures(paths, [t.label for t in traces], work)
    result["real"]["nfstream"] = flow_figures([Path(t.source) for t in real], [t.label for t in real], work, n)
    (out / "iat_roles.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
