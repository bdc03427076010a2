"""One nfstream run over one pcap: the per-flow records of :mod:`netdiff_lib.evaluate.flows`.

This module imports nfstream at the top; :mod:`netdiff_lib.evaluate.flows` imports it only when nfstream is
installed (the ``eval`` extra).  A small plugin adds what nfstream's statistics leave out: the TCP flags of a
flow's first packet (did it open with a SYN?) and the inter-arrival times inside the flow (ms, nfstream's clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nfstream
from nfstream import NFPlugin, NFStreamer

VERSION = f"nfstream {nfstream.__version__}"


class FlowStart(NFPlugin):
    """``first_syn``/``first_ack``: flags of the first packet; ``iats``: ms between packets of the flow."""

    max_iats: int = 1024

    def on_init(self, packet: Any, flow: Any) -> None:
        flow.udps.first_syn = int(packet.syn)
        flow.udps.first_ack = int(packet.ack)
        flow.udps.iats = []

    def on_update(self, packet: Any, flow: Any) -> None:
        if len(flow.udps.iats) < self.max_iats:
            flow.udps.iats.append(int(packet.delta_time))


def meter(path: str, columns: Sequence[str], *, idle_timeout_s: int, active_timeout_s: int, n_dissections: int,
          max_iats: int) -> list[dict[str, Any]]:
    """The flows of one pcap: ``columns`` of nfstream's flow record plus ``first_syn``, ``first_ack``, ``iats``.

    One meter process (``n_meters=1``), no performance report, no system visibility; nfstream's statistical
    features on.  Raises ValueError when nfstream cannot read the file.
    """
    streamer = NFStreamer(source=str(path), statistical_analysis=True, n_dissections=n_dissections,
                          idle_timeout=idle_timeout_s, active_timeout=active_timeout_s, n_meters=1,
                          performance_report=0, system_visibility_mode=0, udps=FlowStart(max_iats=max_iats))
    rows = []
    for flow in streamer:
        row = {c: getattr(flow, c) for c in columns}
        row |= {"first_syn": flow.udps.first_syn, "first_ack": flow.udps.first_ack, "iats": flow.udps.iats}
        rows.append(row)
    return rows
