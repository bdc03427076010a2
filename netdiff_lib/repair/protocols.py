"""Which packet is this row?  Padding, IPv4 or IPv6, TCP, UDP or ICMP, decided per row by evidence votes.

A generator does not say which protocol a row is: it writes bits into every block.  Each candidate collects
votes in [0, 2]: the share of its fixed-header bits that are on the wire (not -1) plus 1 when the field that
names it agrees (the version nibble for IPv4/IPv6; ``ipv4_proto`` / ``ipv6_nh`` of the chosen network layer
for TCP 6, UDP 17 and ICMP 1 or 58).  The highest vote wins; ties go to the first candidate in the order
ipv4, ipv6 and tcp, udp, icmp, so the decision is deterministic.  A row whose chosen network and transport
headers have fewer than half of their bits on the wire is padding (NetDiffusion fills images with -1 rows)
and produces no packet.  Blocks missing from the layout never win.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdiff_lib.errors import ConfigError
from netdiff_lib.repair.headers import BASE_BYTES, L3_BLOCKS, L4_BLOCKS, HeaderBytes, get
from netdiff_lib.schema import Layout

#: IP protocol numbers of the transport blocks (ICMP under IPv6 is ICMPv6, 58).
PROTO = {"tcp": 6, "udp": 17, "icmp": 1}
PROTO_ICMPV6 = 58
#: Share of the chosen headers' bits that must be on the wire for a row to be a packet.
MIN_COVERAGE = 0.5


@dataclass
class Decision:
    """Per row: ``keep`` (not padding), ``family`` (4 or 6) and ``l4`` (block name index into L4_BLOCKS)."""

    keep: np.ndarray
    family: np.ndarray
    l4: np.ndarray
    coverage: np.ndarray


def check_layout(layout: Layout) -> None:
    """Reconstruction needs a network block and a transport block."""
    if not any(b in layout.blocks for b in L3_BLOCKS) or not any(b in layout.blocks for b in L4_BLOCKS):
        raise ConfigError("reconstruction needs an ipv4/ipv6 block and a tcp/udp/icmp block, not "
                          f"{layout.describe() or 'a layout without header blocks'}")


def _argmax(scores: list[np.ndarray]) -> np.ndarray:
    """Index of the best score per row; earlier candidates win ties (np.argmax takes the first maximum)."""
    return np.argmax(np.stack(scores, axis=1), axis=1)


def decide(h: HeaderBytes) -> Decision:
    """Vote padding / family / transport for every row of a generated matrix."""
    layout = h.layout
    check_layout(layout)
    n = h.n
    absent = np.full(n, -1.0)
    net_cov = {b: h.coverage(b, 0, BASE_BYTES[b]) if b in layout.blocks else absent for b in L3_BLOCKS}
    v4 = net_cov["ipv4"] + (get(h.val, "ipv4_ver") == 4) if "ipv4" in layout.blocks else absent
    v6 = net_cov["ipv6"] + (get(h.val, "ipv6_ver") == 6) if "ipv6" in layout.blocks else absent
    is6 = _argmax([v4, v6]) == 1
    zero = np.zeros(n, np.int64)
    proto = np.where(is6, get(h.val, "ipv6_nh") if "ipv6" in layout.blocks else zero,
                     get(h.val, "ipv4_proto") if "ipv4" in layout.blocks else zero)
    l4_cov = {b: h.coverage(b, 0, BASE_BYTES[b]) for b in L4_BLOCKS if b in layout.blocks}
    l4_scores = []
    for b in L4_BLOCKS:
        if b not in layout.blocks:
            l4_scores.append(absent)
            continue
        named = proto == PROTO[b]
        if b == "icmp":
            named |= proto == PROTO_ICMPV6
        l4_scores.append(l4_cov[b] + named)
    l4 = _argmax(l4_scores)
    coverage = _chosen_coverage(is6, l4, net_cov, l4_cov)
    return Decision(coverage >= MIN_COVERAGE, np.where(is6, 6, 4).astype(np.int64), l4, coverage)


def packet_rows(matrix: np.ndarray, layout: Layout) -> np.ndarray:
    """Which rows are packets, by the padding rule of :func:`decide` (the chosen network and transport fixed
    headers have at least half their bits on the wire), so that decoding and reconstruction agree on padding:
    a padding row that a noisy or colour-processed image speckled with a few 0/1 cells stays padding.  Layouts
    without a network and a transport block: rows with any bit on the wire."""
    matrix = np.asarray(matrix)
    has_net = any(b in layout.blocks for b in L3_BLOCKS)
    if not len(matrix) or not has_net or not any(b in layout.blocks for b in L4_BLOCKS):
        return (matrix != -1).any(axis=1)
    return decide(HeaderBytes(matrix, layout)).keep


def _chosen_coverage(is6: np.ndarray, l4: np.ndarray, net_cov: dict[str, np.ndarray],
                     l4_cov: dict[str, np.ndarray]) -> np.ndarray:
    """Share of on-the-wire bits over the chosen network and transport fixed headers."""
    cov_net = np.where(is6, net_cov["ipv6"], net_cov["ipv4"]).clip(0)
    bits_net = np.where(is6, 8 * BASE_BYTES["ipv6"], 8 * BASE_BYTES["ipv4"])
    cov_l4 = np.zeros(len(l4))
    bits_l4 = np.zeros(len(l4))
    for i, b in enumerate(L4_BLOCKS):
        if b in l4_cov:
            sel = l4 == i
            cov_l4[sel] = l4_cov[b][sel]
            bits_l4[sel] = 8 * BASE_BYTES[b]
    return (cov_net * bits_net + cov_l4 * bits_l4) / (bits_net + bits_l4)
