"""pcap and pcapng input/output: a streaming numpy-batch reader and an atomic classic-pcap writer.

``PcapFile(path).batches()`` yields :class:`PacketBatch` objects (packet bytes concatenated in one uint8 array
plus per-packet offsets, lengths, timestamps and link types); ``PcapWriter`` writes little-endian classic
pcap. Link-type constants live in :mod:`netdiff_lib.pcap.linktypes`.
"""

from netdiff_lib.pcap import linktypes
from netdiff_lib.pcap.linktypes import (
    DLT_RAW_12,
    DLT_RAW_14,
    LINKTYPE_ETHERNET,
    LINKTYPE_IEEE802_11_RADIOTAP,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    RAW_IP_LINKTYPES,
)
from netdiff_lib.pcap.reader import PacketBatch, PcapFile, PcapStats
from netdiff_lib.pcap.writer import PcapWriter

__all__ = [
    "DLT_RAW_12",
    "DLT_RAW_14",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IEEE802_11_RADIOTAP",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "RAW_IP_LINKTYPES",
    "PacketBatch",
    "PcapFile",
    "PcapStats",
    "PcapWriter",
    "linktypes",
]
