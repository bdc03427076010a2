"""Find the headers of every packet of a batch at once (vectorised), in two modes.

``netdiff`` (the library's own parsing, used by every stage) walks link layers by link type (Ethernet with
802.1Q/802.1ad tags, raw IP, Linux SLL and SLL2, BSD NULL/LOOP), checks capture lengths, keeps non-first IP
fragments without reading their data as an L4 header, walks IPv6 extension headers, encodes ICMPv6 in the
ICMP block and takes the payload from the correct place.

``nprint`` reproduces nPrint 1.2.1, quirks included: the Ethernet heuristic (ethertype 0x0800/0x86DD at
byte 12, whatever the link type), SLL as a fixed 16-byte skip, no IPv6 extension headers, no ICMPv6, L4
parsing of non-first fragments and the IPv6/TCP payload pointer bug.  The one deliberate difference: bytes
past the captured length read as 0, where nPrint reads uninitialised memory.

Every difference between the modes is listed in ``docs/nprint-differences.md`` and tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdiff_lib.pcap.linktypes import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IEEE802_11_RADIOTAP,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    RAW_IP_LINKTYPES,
)

MODES = ("netdiff", "nprint")

# Skip reasons (0 = kept).  Names are what summaries print.
KEPT, NON_IP, UNSUPPORTED_L4, TRUNCATED, BAD_HEADER, UNSUPPORTED_LINK = range(6)
SKIP_REASONS = {
    NON_IP: "non-IP frame",
    UNSUPPORTED_L4: "IP protocol other than TCP/UDP/ICMP",
    TRUNCATED: "headers cut by the snap length",
    BAD_HEADER: "malformed IP/TCP header length",
    UNSUPPORTED_LINK: "unsupported link type",
}
ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options: (len + 1) * 8 bytes
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58


@dataclass
class Located:
    """Per-packet header positions (absolute offsets into the batch's data; -1 = absent)."""

    reason: np.ndarray  # int8: KEPT or a skip reason
    radiotap: np.ndarray  # start of the radiotap header (nprint mode, link type 127) or -1
    eth: np.ndarray  # start of the Ethernet header or -1
    ethertype_at: np.ndarray  # where the ethertype written to the eth block is read (-1: none)
    l3: np.ndarray
    version: np.ndarray  # 4, 6 or 0
    ip_len: np.ndarray  # valid bytes of the ipv4 block (ihl*4, at most 60) or 40 for IPv6
    l4: np.ndarray
    proto: np.ndarray  # 6, 17, 1 (ICMP and ICMPv6) or 0 (no L4 header encoded)
    l4_len: np.ndarray  # valid bytes of the L4 block
    pay: np.ndarray  # payload start
    pay_len: np.ndarray  # payload length on the wire (from the IP header; may exceed the capture)
    end: np.ndarray  # end of the captured bytes of the packet


def _u8(data: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return np.take(data, pos, mode="clip").astype(np.int64)


def _be16(data: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (_u8(data, pos) << 8) | _u8(data, pos + 1)


def _link_netdiff(data, off, caplen, linktype):
    """Return (l3, eth, ethertype_at, reason) for the netdiff mode."""
    n = len(off)
    l3 = np.full(n, -1, np.int64)
    eth = np.full(n, -1, np.int64)
    et_at = np.full(n, -1, np.int64)
    reason = np.full(n, UNSUPPORTED_LINK, np.int8)
    is_eth = linktype == LINKTYPE_ETHERNET
    if is_eth.any():
        pos = off + 12
        et = _be16(data, pos)
        for _ in range(3):  # up to three stacked VLAN tags
            tagged = is_eth & np.isin(et, VLAN_TPIDS)
            if not tagged.any():
                break
            pos = np.where(tagged, pos + 4, pos)
            et = np.where(tagged, _be16(data, pos), et)
        ip = is_eth & ((et == ETHERTYPE_IPV4) | (et == ETHERTYPE_IPV6))
        l3 = np.where(ip, pos + 2, l3)
        eth = np.where(ip, off, eth)
        et_at = np.where(ip, pos, et_at)
        reason = np.where(is_eth, np.where(ip, KEPT, NON_IP), reason)
    raw = np.isin(linktype, list(RAW_IP_LINKTYPES))
    l3 = np.where(raw, off, l3)
    reason = np.where(raw, KEPT, reason)
    for lt, hdr, proto_at in ((LINKTYPE_LINUX_SLL, 16, 14), (LINKTYPE_LINUX_SLL2, 20, 0)):
        m = linktype == lt
        if not m.any():
            continue
        et = _be16(data, off + proto_at)
        ok = (et == ETHERTYPE_IPV4) | (et == ETHERTYPE_IPV6)
        l3 = np.where(m & ok, off + hdr, l3)
        reason = np.where(m, np.where(ok, KEPT, NON_IP), reason)
    for lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        m = linktype == lt
        if not m.any():
            continue
        le = _u8(data, off) | (_u8(data, off + 1) << 8) | (_u8(data, off + 2) << 16) | (_u8(data, off + 3) << 24)
        be = (_u8(data, off) << 24) | (_u8(data, off + 1) << 16) | (_u8(data, off + 2) << 8) | _u8(data, off + 3)
        fam = be if lt == LINKTYPE_LOOP else np.where(le < 256, le, be)
        ok = np.isin(fam, (2, 10, 24, 28, 30))
        l3 = np.where(m & ok, off + 4, l3)
        reason = np.where(m, np.where(ok, KEPT, NON_IP), reason)
    reason = np.where((reason == KEPT) & (l3 + 1 > off + caplen), TRUNCATED, reason)
    return l3, eth, et_at, reason


def _link_nprint(data, off, caplen, linktype):
    """nPrint's link handling: SLL = skip 16 bytes; radiotap never IP (a row of its own); else the heuristic."""
    et = _be16(data, off + 12)
    heur = (et == ETHERTYPE_IPV4) | (et == ETHERTYPE_IPV6)
    sll = linktype == LINKTYPE_LINUX_SLL
    l3 = np.where(sll, off + 16, np.where(heur, off + 14, off))
    eth = np.where(~sll & heur, off, -1)
    et_at = np.where(eth >= 0, off + 12, -1)
    reason = np.full(len(off), KEPT, np.int8)
    return l3.astype(np.int64), eth.astype(np.int64), et_at.astype(np.int64), reason


def _ipv6_walk(data, l3, nh, end, netdiff: bool):
    """Walk IPv6 extension headers (netdiff mode): return (l4 start, final next header, is_later_fragment)."""
    l4 = l3 + 40
    later_frag = np.zeros(len(l3), bool)
    if not netdiff:
        return l4, nh, later_frag
    for _ in range(8):
        ext = np.isin(nh, IPV6_EXT)
        frag = nh == 44
        ah = nh == 51
        hlen = _u8(data, l4 + 1)
        step = np.select([ext, frag, ah], [(hlen + 1) * 8, 8, (hlen + 2) * 4], 0)
        if not step.any():
            break
        later_frag |= frag & ((_be16(data, l4 + 2) >> 3) != 0)
        nh = np.where(step > 0, _u8(data, l4), nh)
        l4 = l4 + step
    return l4, nh, later_frag


def locate(data: np.ndarray, offsets: np.ndarray, caplen: np.ndarray, linktype: np.ndarray, mode: str) -> Located:
    """Locate the eth/IP/L4/payload headers of every packet (see the module docstring for the modes)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    netdiff = mode == "netdiff"
    off = offsets.astype(np.int64)
    end = off + caplen.astype(np.int64)
    link = _link_netdiff if netdiff else _link_nprint
    l3, eth, et_at, reason = link(data, off, caplen.astype(np.int64), linktype.astype(np.int64))
    wireless = np.zeros(len(off), bool) if netdiff else linktype == LINKTYPE_IEEE802_11_RADIOTAP
    b0 = _u8(data, l3)
    version = np.where((reason == KEPT) & ~wireless, b0 >> 4, 0)
    reason = np.where((reason == KEPT) & ~wireless & (version != 4) & (version != 6), NON_IP, reason)
    v4, v6 = (reason == KEPT) & (version == 4), (reason == KEPT) & (version == 6)

    ihl4 = (b0 & 0xF) * 4
    tl = _be16(data, l3 + 2)
    foff = _be16(data, l3 + 6) & 0x1FFF
    nh6 = _u8(data, l3 + 6)
    plen6 = _be16(data, l3 + 4)
    l4_6, nh6, frag6 = _ipv6_walk(data, l3, nh6, end, netdiff)
    proto = np.where(v4, _u8(data, l3 + 9), np.where(v6, nh6, 0))
    l4 = np.where(v4, l3 + ihl4, l4_6)
    ip_len = np.where(v4, np.minimum(ihl4, 60), np.where(v6, 40, 0))
    allowed = [PROTO_TCP, PROTO_UDP, PROTO_ICMP] + ([PROTO_ICMPV6] if netdiff else [])
    ok_proto = np.isin(proto, allowed)
    reason = np.where((v4 | v6) & ~ok_proto, UNSUPPORTED_L4, reason)
    if netdiff:
        reason = np.where(v4 & (ihl4 < 20), BAD_HEADER, reason)
        reason = np.where((v4 | v6) & (reason == KEPT) & (l3 + np.where(v4, ihl4, 40) > end), TRUNCATED, reason)
        later = (v4 & (foff != 0)) | (v6 & frag6)
        proto = np.where(later, 0, np.where(proto == PROTO_ICMPV6, PROTO_ICMP, proto))
    kept = reason == KEPT
    proto = np.where(kept, proto, 0)

    doff = (_u8(data, l4 + 12) >> 4) * 4
    l4hdr = np.select([proto == PROTO_TCP, proto > 0], [doff, 8], 0)
    l4_len = np.where(proto == PROTO_TCP, np.minimum(doff, 60), np.where(proto > 0, 8, 0))
    if netdiff:
        is_tcp = kept & (proto == PROTO_TCP)
        reason = np.where(kept & (proto > 0) & (l4 + np.where(is_tcp, 20, 8) > end), TRUNCATED, reason)
        reason = np.where(is_tcp & (reason == KEPT) & (doff < 20), BAD_HEADER, reason)
        reason = np.where(kept & (reason == KEPT) & (proto > 0) & (l4 + l4hdr > end), TRUNCATED, reason)
        kept = reason == KEPT
    ip_total = np.where(v4, tl, plen6 + 40)
    pay = l4 + l4hdr
    if netdiff:
        nominal = np.where(v4 & (tl == 0), end - l3, ip_total)  # TSO captures carry ip_len 0
        pay_len = np.maximum(l3 + nominal - pay, 0)
    else:
        pay_len = (ip_total - np.where(v4, ihl4, 40) - l4hdr) & 0xFFFFFFFF
        pay = np.where(v6 & (proto == PROTO_TCP), l4 + 20 * doff, pay)  # nPrint's pointer-arithmetic bug
    z = np.where(kept, 1, 0)
    return Located(
        reason=reason.astype(np.int8),
        radiotap=np.where(wireless & kept, off, -1),
        eth=np.where(kept & ~wireless, eth, -1),
        ethertype_at=np.where(kept & ~wireless, et_at, -1),
        l3=np.where(kept & ~wireless, l3, -1),
        version=version * z,
        ip_len=ip_len * z,
        l4=np.where(kept & (proto > 0), l4, -1),
        proto=proto * z,
        l4_len=l4_len * z,
        pay=np.where(kept & ~wireless, pay, -1),
        pay_len=np.where(wireless, 0, pay_len * z),
        end=end,
    )


def byte_windows(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``data[s : s + width]`` for every start (absent starts give zeros, masked later)."""
    if len(data) < width + 1:
        data = np.concatenate([data, np.zeros(width + 1 - len(data), np.uint8)])
    view = np.lib.stride_tricks.sliding_window_view(data, width)
    return view[np.clip(starts, 0, len(view) - 1)]
