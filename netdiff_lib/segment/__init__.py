"""Traces from long captures: one streaming pass over the packets, cut into traces by file, flow, host or time.

``--traces MODE`` (:func:`parse_traces`):

* ``file``: the capture is one trace (NetDiffusion's way, and the default);
* ``flow``: a bidirectional 5-tuple (protocol, the two address:port endpoints in either order; ports only for
  TCP and UDP) with an idle timeout (``--flow-timeout``, 120 s, nfstream's idle timeout): a packet more than the
  timeout after its flow's previous one starts a new trace;
* ``host``: the traffic of one local host (see :data:`~netdiff_lib.segment.keys.LOCAL_NETS`, or ``--local-net``),
  with the same idle timeout. A packet between two local hosts is in both hosts' traces; one with no local
  address is in none;
* ``window:SECONDS``: consecutive windows of the capture's time, the first starting at its first packet;
* ``host+window:SECONDS``: a local host's traffic within each window.

Each trace keeps its packets' order and times and ends at ``--max-packets`` packets; later packets of the same
flow, host or window are counted, not kept. With a label index (``--labels``) every packet gets the label of its
flow or host at its time, and a trace holds the packets of one label only (a window with benign and attack flows
gives one trace per label); without one, every packet has the capture's label. State is per open trace and is
dropped when the trace ends, so memory is bounded by the open traces, never by the capture.
"""

from netdiff_lib.segment.capture import segment_capture
from netdiff_lib.segment.spec import FLOW_TIMEOUT, MODES, SegmentStats, TraceSpec, parse_traces

__all__ = ["FLOW_TIMEOUT", "MODES", "SegmentStats", "TraceSpec", "parse_traces", "segment_capture"]
