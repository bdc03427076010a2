"""pcap link-layer header types (``LINKTYPE_*`` values as written in pcap and pcapng files).

The values are those of the tcpdump.org link-layer header type registry. The reader reports a link type per
packet (pcapng interfaces may differ); codecs decide from it where the network layer starts.  ``DLT_RAW`` is 12
on most BSDs and 14 on OpenBSD, and some writers put those DLT values into files instead of ``LINKTYPE_RAW``
(101), so :data:`RAW_IP_LINKTYPES` holds all three, with ``LINKTYPE_IPV4`` (228) and ``LINKTYPE_IPV6`` (229); the
IP version nibble of each packet decides how it is read (nPrint reads all five as raw IP through its Ethernet
heuristic).
"""

from __future__ import annotations

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
DLT_RAW_12 = 12
DLT_RAW_14 = 14
LINKTYPE_RAW = 101
LINKTYPE_IEEE802_11 = 105
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_PRISM_HEADER = 119
LINKTYPE_IEEE802_11_RADIOTAP = 127
LINKTYPE_PPI = 192
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276

#: Link types whose packets start directly with an IPv4 or IPv6 header.
RAW_IP_LINKTYPES = frozenset({DLT_RAW_12, DLT_RAW_14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6})

_NAMES: dict[int, str] = {
    LINKTYPE_NULL: "NULL",
    LINKTYPE_ETHERNET: "ETHERNET",
    LINKTYPE_PPP: "PPP",
    DLT_RAW_12: "RAW",
    DLT_RAW_14: "RAW",
    LINKTYPE_RAW: "RAW",
    LINKTYPE_IEEE802_11: "IEEE802_11",
    LINKTYPE_LOOP: "LOOP",
    LINKTYPE_LINUX_SLL: "LINUX_SLL",
    LINKTYPE_PRISM_HEADER: "IEEE802_11_PRISM",
    LINKTYPE_IEEE802_11_RADIOTAP: "IEEE802_11_RADIOTAP",
    LINKTYPE_PPI: "PPI",
    LINKTYPE_IPV4: "IPV4",
    LINKTYPE_IPV6: "IPV6",
    LINKTYPE_NFLOG: "NFLOG",
    LINKTYPE_LINUX_SLL2: "LINUX_SLL2",
}


def name(linktype: int) -> str:
    """Short name of a link type (``ETHERNET``, ``RAW``, ...), or ``LINKTYPE_<n>`` when unknown here."""
    return _NAMES.get(int(linktype), f"LINKTYPE_{int(linktype)}")
