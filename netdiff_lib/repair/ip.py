"""IPv4 and IPv6 headers: header and payload lengths, identification numbers, and the fixed fields.

**Lengths.**  The option areas (IPv4 and TCP) get the length that changes the fewest bits
(:func:`netdiff_lib.repair.options.choose_length`).  The payload is what the generated IP length field leaves
after the repaired headers (IPv4 total length, IPv6 payload length + 40), clipped to [0, MTU - headers];
the length fields are then rewritten from the bytes actually emitted, so they are always consistent.

**IDs.**  IPv4 identification numbers follow a counter per sending host and flow (Linux keeps one per
socket; a host-wide counter, as embedded stacks keep, is such a counter with gaps): IDs never go back, a
packet without DF (one that could be fragmented) always gets a new one, and an atomic packet (DF set) may
repeat the previous ID (RFC 6864; many stacks send 0).  The counter keeps a generated ID whenever every later
generated ID of the counter is at least as far ahead (the suffix-minimum rule of TCP sequence holes) and the
jump leaves room for the counter's remaining new IDs below 2**16 (so it never wraps onto used ones), else
takes the smallest allowed.  Real counters pass unchanged; noise becomes a counter.

**IPv6 Hop-by-Hop.**  A generated next header of 0 (Hop-by-Hop Options, what MLD reports carry) keeps its
8-byte extension header, with a Router Alert option, between the IPv6 and transport headers (nPrint has no
columns for extension headers: the payload length counts it, the transport block follows it).

**Fixed fields.**  Version, protocol / next header, fragment fields (MF and offset 0, reserved bit 0: every
packet is whole) are set; TTL / hop limit 0 becomes 1; TOS, DF, traffic class and flow label are kept.
"""

from __future__ import annotations

import numpy as np

from netdiff_lib.repair.groups import Grouping
from netdiff_lib.repair.headers import HeaderBytes, get, put, put_many
from netdiff_lib.repair.options import MAX_OPTION_BYTES, choose_length

IPV4_BASE, IPV6_HDR, TCP_BASE, UDP_ICMP_HDR = 20, 40, 20, 8
HOP_BY_HOP, HOP_BY_HOP_LEN = 0, 8
_INF = 1 << 40


def option_lengths(h: HeaderBytes, v4: np.ndarray, tcp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IPv4 option bytes, TCP option bytes) per packet; 0 where the header is not IPv4 / TCP."""
    ip_opt = np.zeros(h.n, np.int64)
    tcp_opt = np.zeros(h.n, np.int64)
    area = slice(IPV4_BASE, IPV4_BASE + MAX_OPTION_BYTES)
    if "ipv4" in h.bits and v4.any():
        ip_opt[v4] = choose_length(h.bits["ipv4"][v4, area], get(h.val, "ipv4_hl", v4))
    if "tcp" in h.bits and tcp.any():
        tcp_opt[tcp] = choose_length(h.bits["tcp"][tcp, area], get(h.val, "tcp_doff", tcp))
    return ip_opt, tcp_opt


def generated_payload(h: HeaderBytes, v4: np.ndarray, headers: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Payload bytes the generated IP length field implies after ``headers`` bytes, within ``room``."""
    zero = np.zeros(h.n, np.int64)
    tl = get(h.val, "ipv4_tl") if "ipv4" in h.val else zero
    plen = get(h.val, "ipv6_len") + IPV6_HDR if "ipv6" in h.val else zero
    total = np.where(v4, tl, plen)
    return np.clip(total - headers, 0, room)


def ip_ids(counter: np.ndarray, generated: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """IPv4 IDs per counter (any integer key per packet, time order; see the module docstring).

    ``fresh``: packets that need an ID unused by the counter's earlier packets (not DF: fragmentable).
    """
    g = Grouping(counter)
    base = g.first(generated)
    least = g.cumsum(np.where(g.is_first, 0, fresh.astype(np.int64)), exclusive=False)
    ahead = (generated - base - least) % 65536
    room = g.last(least) - least  # fresh IDs still to come
    fits = least + ahead + room <= 65535  # a jump that leaves room for the rest never wraps onto used IDs
    jump = g.suffix_min(np.where(fits, ahead, _INF))
    jump = np.maximum(g.cummax(np.where(jump >= _INF, -1, jump), initial=-1), 0)
    return (base + least + jump) % 65536


def write_ipv4(out: dict[str, np.ndarray], rows: np.ndarray, ihl_words: np.ndarray, total: np.ndarray,
               ids: np.ndarray, proto: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """Set the repaired IPv4 fields of ``rows`` (options and checksum are written elsewhere)."""
    ttl = get(out, "ipv4_ttl", rows)
    put_many(out, {"ipv4_ver": 4, "ipv4_hl": ihl_words, "ipv4_tl": total}, rows)
    put_many(out, {"ipv4_id": ids, "ipv4_rbit": 0, "ipv4_mfbit": 0, "ipv4_foff": 0}, rows)
    put_many(out, {"ipv4_ttl": np.where(ttl == 0, 1, ttl), "ipv4_proto": proto, "ipv4_cksum": 0}, rows)
    out["ipv4"][rows, 12:16] = src[:, :4]
    out["ipv4"][rows, 16:20] = dst[:, :4]


def hop_by_hop_header(next_header: np.ndarray) -> np.ndarray:
    """(n, 8) IPv6 Hop-by-Hop Options headers: the next header, length 0, Router Alert (MLD), PadN."""
    ext = np.tile(np.array([0, 0, 5, 2, 0, 0, 1, 0], np.uint8), (len(next_header), 1))
    ext[:, 0] = np.asarray(next_header, np.int64) & 0xFF
    return ext


def write_ipv6(out: dict[str, np.ndarray], rows: np.ndarray, payload_len: np.ndarray, next_header: np.ndarray,
               src: np.ndarray, dst: np.ndarray) -> None:
    """Set the repaired IPv6 fields of ``rows``."""
    hlim = get(out, "ipv6_hl", rows)
    put(out, "ipv6_ver", 6, rows)
    put_many(out, {"ipv6_len": payload_len, "ipv6_nh": next_header, "ipv6_hl": np.where(hlim == 0, 1, hlim)}, rows)
    out["ipv6"][rows, 8:24] = src
    out["ipv6"][rows, 24:40] = dst
