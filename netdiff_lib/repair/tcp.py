"""TCP per connection: sessions, handshake and teardown flags, sequence and acknowledgement numbers.

All rules run on the TCP packets of a trace at once with grouped scans (:mod:`.groups`); packets are in time
order.  ``A`` is the side that sends a session's first packet, ``B`` the other.

**Sessions.**  A flow (port pair) holds several connections when a pure SYN follows a FIN or RST.

**Flags.**  A session *opens* when its first packet has SYN.  Then A's first packet is the SYN; A's later
packets before B's first reply are its retransmissions (SYN, no ACK, no payload, same sequence number) when
B does reply, and when B never appears (a one-sided capture) those generated as pure SYNs are; B's first
packet is the SYN-ACK (or RST-ACK when it is also the session's last packet and was generated with RST).
Without an opening SYN no packet has SYN.  RST is kept only on a session's last packet; FIN is kept on each
side's last generated FIN, after which that side sends no payload.  Every other packet has ACK; SYN and RST
segments carry no payload; URG and the urgent pointer survive only when the pointer lies inside the payload.
Reserved bits are cleared.

**Sequence numbers** (modulo 2**32; SYN and FIN consume one).  Each side's ISN is the value most generated
packets agree on (``seq - bytes sent before``).  A packet repeating an earlier packet's sequence number with
no more data is a retransmission and keeps the original's number.  A forward jump that every later packet
confirms (at most :data:`MAX_HOLE` bytes) is kept as a segment the capture missed; anything else becomes the
next expected number.  Real captures therefore come through unchanged, noise becomes a contiguous stream.

**Acknowledgements** (when ACK is set) lie between 0 (1 once the peer's SYN was seen) and the peer's next
expected byte: the generated value where it lies in that window (a real capture's delayed ACKs), else the
peer's next expected byte; and they never decrease.  When the peer never
appears, its ISN is the most common generated acknowledgement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdiff_lib.repair.groups import Grouping

MOD32 = 1 << 32
MAX_HOLE = 1 << 18
_INF = 1 << 40


@dataclass
class TcpIn:
    """Generated TCP state of ``m`` packets (time order): flow, side and header values."""

    flow: np.ndarray
    side: np.ndarray
    syn: np.ndarray
    ack: np.ndarray
    fin: np.ndarray
    rst: np.ndarray
    psh: np.ndarray
    urg: np.ndarray
    seq: np.ndarray
    ackn: np.ndarray
    urp: np.ndarray
    payload: np.ndarray


@dataclass
class TcpOut:
    """Repaired flags, numbers and payload lengths, plus the session of each packet."""

    session: np.ndarray
    syn: np.ndarray
    ack: np.ndarray
    fin: np.ndarray
    rst: np.ndarray
    psh: np.ndarray
    urg: np.ndarray
    seq: np.ndarray
    ackn: np.ndarray
    urp: np.ndarray
    payload: np.ndarray


def sessions(flow: np.ndarray, syn: np.ndarray, ack: np.ndarray, fin: np.ndarray, rst: np.ndarray) -> np.ndarray:
    """Dense session ids: a new session starts at a pure SYN that follows a FIN or RST in its flow."""
    g = Grouping(flow)
    ended_before = g.cumsum((fin | rst).astype(np.int64))
    cand = np.flatnonzero(g.is_first | (syn & ~ack & ~rst))
    gc = Grouping(flow[cand])
    new = gc.is_first | (ended_before[cand] > gc.previous(ended_before[cand]))
    start = np.zeros(len(flow), np.int64)
    start[cand[new]] = 1
    number = g.cumsum(start, exclusive=False)
    _, dense = np.unique(np.asarray(flow, np.int64) * (len(flow) + 1) + number, return_inverse=True)
    return dense.reshape(-1)


def _signed32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.int64) % MOD32
    return np.where(x >= MOD32 // 2, x - MOD32, x)


@dataclass
class _Frame:
    """Groupings shared by the rules: per session (S) and per session side (SD)."""

    session: np.ndarray
    d: np.ndarray
    t: np.ndarray
    S: Grouping
    SD: Grouping


def _frame(tin: TcpIn) -> _Frame:
    session = sessions(tin.flow, tin.syn, tin.ack, tin.fin, tin.rst)
    S = Grouping(session)
    d = (tin.side != S.first(tin.side)).astype(np.int64)
    return _Frame(session, d, np.arange(len(session)), S, Grouping(session * 2 + d))


def _flags(tin: TcpIn, f: _Frame) -> tuple[np.ndarray, ...]:
    """syn, ack, fin, rst, syn_phase, syn_open and payload after the handshake/teardown rules."""
    n_sess = f.S.groups
    syn_open = f.S.first(tin.syn).astype(bool)
    b_first = (f.d == 1) & f.SD.is_first
    t_b = np.full(n_sess, _INF, np.int64)
    t_b[f.session[b_first]] = f.t[b_first]
    pure_syn = tin.syn & ~tin.ack & ~tin.rst
    answered = t_b[f.session] < _INF
    syn_phase = syn_open & (f.d == 0) & (f.t < t_b[f.session]) & (f.SD.is_first | pure_syn | answered)
    rst = tin.rst & f.S.is_last & ~syn_phase
    syn = syn_phase | (syn_open & b_first & ~rst)
    ack = ~syn_phase & ~(rst & ~tin.ack)
    payload = np.where(syn | rst, 0, tin.payload)
    fin_cand = tin.fin & ~syn & ~rst
    last_fin = f.SD.last(f.SD.cummax(np.where(fin_cand, f.t, -1), initial=-1))
    fin = fin_cand & (f.t == last_fin)
    payload = np.where((last_fin >= 0) & (f.t > last_fin), 0, payload)
    return syn, ack, fin, rst, syn_phase, syn_open, payload


def _sequence(tin: TcpIn, f: _Frame, consumed: np.ndarray, syn_retx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(isn, rel) per packet: the side's ISN and the packet's offset from it."""
    runs = Grouping(f.SD.gid * MOD32 + (tin.seq % MOD32))
    dup = (consumed > 0) & (runs.cummax(consumed, exclusive=True, initial=-1) >= consumed)
    rt = syn_retx | dup
    used = np.where(rt, 0, consumed)
    before = f.SD.cumsum(used)
    isn = f.SD.mode((tin.seq - before) % MOD32, valid=~rt)
    gap = _signed32(tin.seq - isn - before)
    plausible = ~rt & (gap >= 0) & (gap <= MAX_HOLE)
    hole = f.SD.suffix_min(np.where(plausible, gap, _INF))
    hole = np.maximum(f.SD.cummax(np.where(hole >= _INF, -1, hole), initial=-1), 0)
    rel = before + hole
    rel = np.where(syn_retx, 0, rel)
    rel = np.where(dup & ~syn_retx, runs.first(rel), rel)
    return isn, rel


def _acks(tin: TcpIn, f: _Frame, isn: np.ndarray, end: np.ndarray, ack: np.ndarray,
          syn_open: np.ndarray) -> np.ndarray:
    """Acknowledgement numbers (0 where ACK is clear)."""
    hw = [f.S.cummax(np.where(f.d == k, end, 0)) for k in (0, 1)]
    hi = np.where(f.d == 0, hw[1], hw[0])
    by_side = np.full(2 * f.S.groups, -1, np.int64)
    by_side[f.session * 2 + f.d] = isn
    peer = by_side[f.session * 2 + 1 - f.d]
    peer = np.where(peer < 0, f.SD.mode(tin.ackn % MOD32, valid=ack), peer)
    lo = np.where(syn_open & (hi >= 1), 1, 0)
    rel = _signed32(tin.ackn - peer)
    rel = np.where((rel >= lo) & (rel <= hi), rel, hi)
    rel = f.SD.cummax(np.where(ack, rel, 0))
    return np.where(ack, (peer + rel) % MOD32, 0)


def repair_tcp(tin: TcpIn) -> TcpOut:
    """Apply the module's rules to the TCP packets of one trace."""
    f = _frame(tin)
    syn, ack, fin, rst, syn_phase, syn_open, payload = _flags(tin, f)
    consumed = payload + syn + fin
    syn_retx = syn_phase & ~f.SD.is_first
    isn, rel = _sequence(tin, f, consumed, syn_retx)
    end = rel + consumed
    ackn = _acks(tin, f, isn, end, ack, syn_open)
    urg = tin.urg & (payload > 0) & (tin.urp >= 1) & (tin.urp <= payload)
    return TcpOut(
        session=f.session, syn=syn, ack=ack, fin=fin, rst=rst, psh=tin.psh & ~syn & ~rst, urg=urg,
        seq=(isn + rel) % MOD32, ackn=ackn, urp=np.where(urg, tin.urp, 0), payload=payload,
    )
