"""Training rows of many traces at once (``Representation.rows_many``): the same rows as one trace at a time.

Packing and streaming tokenise traces in chunks, so that a data set of many short traces (one per flow, cut from
a long capture) costs no per-trace overhead; the per-trace state (conversation indices, port slots, the first
packet's inter-arrival time) must still start afresh at every trace.  Real parts: the sample captures, cut by
file and by flow, and the fitted tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sample_sets import labelled_traces

from netdiff_lib.config import tiny
from netdiff_lib.models.native import data as native_data
from netdiff_lib.models.native.field_tokens import FieldTokens
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.segment import parse_traces, segment_capture
from netdiff_lib.trace import Trace


@pytest.fixture(scope="module")
def file_traces(samples_dir: Path) -> list[Trace]:
    return labelled_traces(samples_dir, 256)


@pytest.fixture(scope="module")
def flow_traces(samples_dir: Path) -> list[Trace]:
    out = []
    for pcap in sorted(samples_dir.glob("*/*.pcap"))[::3]:
        out += segment_capture(pcap, parse_traces("flow"), NETDIFFUSION, max_packets=64, label=pcap.parent.name)
    return out


def _rep(traces: list[Trace], endpoints: str, conversations: int = 4) -> FieldTokens:
    cfg = tiny().with_settings([f"model.endpoints={endpoints}", f"model.conversations={conversations}"])
    return FieldTokens.fit(cfg, traces, [str(t.label) for t in traces])


@pytest.mark.parametrize("endpoints", ["conv", "ports"])
def test_rows_of_many_traces_equal_the_rows_of_each(file_traces: list[Trace], flow_traces: list[Trace],
                                                    endpoints: str) -> None:
    # 4 conversation indices: the file traces reuse them; several flows share a port, in different traces
    rep = _rep(file_traces, endpoints)
    for traces in (file_traces, flow_traces, [*flow_traces[:40], *file_traces[:5], *flow_traces[40:80]]):
        assert len({len(t.matrix) for t in traces}) > 1
        one_by_one = np.concatenate([rep.rows(t) for t in traces])
        np.testing.assert_array_equal(rep.rows_many(traces), one_by_one)
    assert rep.rows_many([]).shape == (0, rep.width)


def test_packing_in_chunks_equals_packing_one_by_one(flow_traces: list[Trace], file_traces: list[Trace],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rep = _rep(file_traces, "conv", 8)
    labels = sorted({str(t.label) for t in flow_traces})
    whole = native_data.PackedTraces.build(flow_traces, rep, labels)
    monkeypatch.setattr(native_data, "ROWS_CHUNK", 50)  # many chunks, cut between traces
    chunked = native_data.PackedTraces.build(iter(flow_traces), rep, labels)
    assert len(flow_traces) > 20
    np.testing.assert_array_equal(chunked.features.numpy(), whole.features.numpy())
    np.testing.assert_array_equal(chunked.offsets, whole.offsets)
    np.testing.assert_array_equal(chunked.labels, whole.labels)
    each = np.concatenate([rep.rows(t) for t in flow_traces])
    np.testing.assert_array_equal(whole.features.numpy()[:-1], each)
