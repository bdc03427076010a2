"""Packet batches and the record helpers shared by the classic pcap and pcapng walkers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

#: Larger captured lengths are corrupt (libpcap's MAXIMUM_SNAPLEN).
MAX_CAPLEN = 262144
#: pcapng blocks longer than this are treated as corrupt rather than read into memory.
MAX_BLOCK = 16 << 20
#: Zero bytes after the last packet of a batch.
PAD = 64

_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_BOM_BYTES = (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d")  # little-, big-endian sections
_PACKET_BLOCKS = frozenset({_EPB, _SPB, _PB})
_NO_INDEX = np.empty(0, np.int64)


@dataclass(eq=False)
class PacketBatch:
    """Packets of one batch: ``data[offsets[i]:offsets[i] + caplen[i]]`` is packet ``i`` (record ``index[i]``)."""

    data: np.ndarray
    offsets: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def packet(self, i: int) -> bytes:
        """The captured bytes of packet ``i`` of the batch."""
        start = int(self.offsets[i])
        return self.data[start:start + int(self.caplen[i])].tobytes()


@dataclass
class PcapStats:
    """Counters filled while :meth:`PcapFile.batches` runs (reset by each call)."""

    records: int = 0  # packet records returned
    bytes: int = 0  # their captured bytes
    truncated_tail: bool = False  # the file ends inside a record
    snaplen_truncated: int = 0  # records with caplen < wirelen
    sections: int = 0  # pcapng section header blocks
    interfaces: int = 0  # pcapng interface description blocks
    skipped_blocks: int = 0  # other pcapng blocks (name resolution, statistics, custom, ...)


def _gather(a: np.ndarray, starts: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A view of the chunk span holding the packets ``a[starts[i]:starts[i] + caps[i]]`` (copied by _join).

    Record headers between packets stay in the span (they belong to no packet), which makes the copy a single
    memcpy instead of a per-packet gather: consumers index packets through ``offsets`` and ``caplen`` only.
    """
    first, last = int(starts[0]), int(starts[-1] + caps[-1])
    return a[first:last], (starts - first).astype(np.int64)


def _make_piece(a: np.ndarray, starts: np.ndarray, caps: np.ndarray, wire: np.ndarray, ts: np.ndarray,
                linktype: np.ndarray, stats: PcapStats) -> PacketBatch:
    """A batch of the packets of one chunk, its data a view of the chunk (pieces are copied when joined)."""
    data, offsets = _gather(a, starts, caps)
    stats.records += len(starts)
    stats.bytes += int(caps.sum())
    stats.snaplen_truncated += int(np.count_nonzero(caps < wire))
    return PacketBatch(data, offsets, caps.astype(np.int32), wire.astype(np.int32), ts, linktype, _NO_INDEX)


def _records(buf: memoryview, size: int) -> np.ndarray:
    """A zero-copy view of ``buf`` as overlapping ``size``-byte items, one at every byte position."""
    return np.ndarray(shape=(len(buf) - size + 1,), dtype=f"V{size}", buffer=buf, strides=(1,))


def _section_length(buf: memoryview, pos: int) -> int:
    """Length of the section header block at ``pos``, read in its own byte order; 0 if the magic is bad."""
    bom = buf[pos + 8:pos + 12]
    if bom not in _BOM_BYTES:
        return 0
    return struct.unpack_from("<I" if bom[0] == 0x4D else ">I", buf, pos + 4)[0]
