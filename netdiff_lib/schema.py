"""The header-field schema: the one source of truth for nPrint block and column layouts.

Every stage (codec, image, reconstruction, evaluation, models) asks this module where a field lives.
Blocks follow nPrint 1.2.1 exactly (``../shared/reference/nprint.md`` section 3): a fixed byte size per
block, fields listed MSB first in wire order, column ``<field>_<i>``.  Block order is fixed, whatever
order the flags came in: radiotap, wlan, eth, ipv4, ipv6, tcp, udp, icmp, payload.

A :class:`Layout` is a selection of blocks (plus payload bytes) and optionally dropped fields; the
NetDiffusion image layout is ``-4 -6 -t -u -i`` without the four address fields (1,088 columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Field:
    """One header field: ``name`` (e.g. ``tcp_sprt``), width in bits and bit offset inside its block."""

    name: str
    bits: int
    offset: int


@dataclass(frozen=True)
class Block:
    """One nPrint header block: a fixed number of bytes split into fields."""

    name: str
    nbytes: int
    fields: tuple[Field, ...]

    @property
    def nbits(self) -> int:
        return 8 * self.nbytes


def _block(name: str, spec: list[tuple[str, int]]) -> Block:
    fields, off = [], 0
    for fname, bits in spec:
        fields.append(Field(f"{name}_{fname}", bits, off))
        off += bits
    if off % 8:
        raise ValueError(f"block {name} is {off} bits, not whole bytes")
    return Block(name, off // 8, tuple(fields))


RADIOTAP = _block(
    "radiotap",
    [("reversion", 8), ("pad0", 8), ("len", 16), ("present", 96), ("mactimestamp", 64), ("flags", 8), ("rate", 8),
     ("channel", 16), ("channelflags", 16), ("antennasignal", 8), ("pad1", 8), ("rxflags", 16), ("pad2", 48),
     ("timestamp", 96), ("antennas", 32)],
)
WLAN = _block("wlan", [("type", 8), ("flag", 8), ("duration", 16), ("rx_addr", 48)])
ETH = _block("eth", [("dhost", 48), ("shost", 48), ("ethertype", 16)])
IPV4 = _block(
    "ipv4",
    [("ver", 4), ("hl", 4), ("tos", 8), ("tl", 16), ("id", 16), ("rbit", 1), ("dfbit", 1), ("mfbit", 1),
     ("foff", 13), ("ttl", 8), ("proto", 8), ("cksum", 16), ("src", 32), ("dst", 32), ("opt", 320)],
)
IPV6 = _block(
    "ipv6",
    [("ver", 4), ("tc", 8), ("fl", 20), ("len", 16), ("nh", 8), ("hl", 8), ("src", 128), ("dst", 128)],
)
TCP = _block(
    "tcp",
    [("sprt", 16), ("dprt", 16), ("seq", 32), ("ackn", 32), ("doff", 4), ("res", 3), ("ns", 1), ("cwr", 1),
     ("ece", 1), ("urg", 1), ("ackf", 1), ("psh", 1), ("rst", 1), ("syn", 1), ("fin", 1), ("wsize", 16),
     ("cksum", 16), ("urp", 16), ("opt", 320)],
)
UDP = _block("udp", [("sport", 16), ("dport", 16), ("len", 16), ("cksum", 16)])
ICMP = _block("icmp", [("type", 8), ("code", 8), ("cksum", 16), ("roh", 32)])

#: Header blocks in nPrint's fixed output order (radiotap and wlan: 802.11 captures, link type 127).
BLOCKS: dict[str, Block] = {b.name: b for b in (RADIOTAP, WLAN, ETH, IPV4, IPV6, TCP, UDP, ICMP)}
BLOCK_ORDER: tuple[str, ...] = tuple(BLOCKS)
#: nPrint flag letter for each block.
BLOCK_FLAGS: dict[str, str] = {
    "radiotap": "r", "wlan": "w", "eth": "e", "ipv4": "4", "ipv6": "6", "tcp": "t", "udp": "u", "icmp": "i",
}
ADDRESS_FIELDS: tuple[str, ...] = ("ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst")
PAYLOAD_PREFIX = "payload_bit"


@dataclass(frozen=True)
class Span:
    """Where a field sits in a layout's columns: ``columns[start:stop]``."""

    name: str
    start: int
    stop: int

    @property
    def bits(self) -> int:
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)


@dataclass(frozen=True)
class Layout:
    """A column layout: the selected blocks in nPrint order, payload bytes, and dropped fields."""

    blocks: tuple[str, ...]
    payload_bytes: int = 0
    drop: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = [b for b in self.blocks if b not in BLOCKS]
        if unknown:
            raise ValueError(f"unknown header blocks {unknown}; known: {list(BLOCKS)}")
        ordered = tuple(b for b in BLOCK_ORDER if b in self.blocks)
        object.__setattr__(self, "blocks", ordered)
        if self.payload_bytes < 0:
            raise ValueError("payload_bytes must be >= 0")

    @cached_property
    def spans(self) -> dict[str, Span]:
        """Field name -> column span, for every kept field (and ``payload`` when present)."""
        out: dict[str, Span] = {}
        col = 0
        for bname in self.blocks:
            for f in BLOCKS[bname].fields:
                if f.name in self.drop:
                    continue
                out[f.name] = Span(f.name, col, col + f.bits)
                col += f.bits
        if self.payload_bytes:
            out["payload"] = Span("payload", col, col + 8 * self.payload_bytes)
        return out

    @cached_property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for name, span in self.spans.items():
            prefix = PAYLOAD_PREFIX if name == "payload" else name
            cols.extend(f"{prefix}_{i}" for i in range(span.bits))
        return cols

    @property
    def width(self) -> int:
        return len(self.columns)

    def span(self, name: str) -> Span:
        try:
            return self.spans[name]
        except KeyError:
            raise KeyError(f"field {name!r} is not in this layout ({self.describe()})") from None

    def block_span(self, block: str) -> Span:
        """Columns of a whole block (contiguous even when fields are dropped)."""
        names = [f.name for f in BLOCKS[block].fields if f.name in self.spans]
        if not names:
            raise KeyError(f"block {block!r} is not in this layout ({self.describe()})")
        return Span(block, self.spans[names[0]].start, self.spans[names[-1]].stop)

    @cached_property
    def full(self) -> Layout:
        """The same blocks with nothing dropped."""
        return Layout(self.blocks, self.payload_bytes)

    @cached_property
    def keep_index(self) -> np.ndarray:
        """Column indices of this layout inside :attr:`full` (identity when nothing is dropped)."""
        full_cols = {c: i for i, c in enumerate(self.full.columns)}
        return np.array([full_cols[c] for c in self.columns], dtype=np.intp)

    def describe(self) -> str:
        flags = " ".join(f"-{BLOCK_FLAGS[b]}" for b in self.blocks)
        extra = f" -p {self.payload_bytes}" if self.payload_bytes else ""
        dropped = f" without {sorted(self.drop)}" if self.drop else ""
        return f"{flags}{extra}{dropped}".strip()

    def to_dict(self) -> dict:
        return {"blocks": list(self.blocks), "payload_bytes": self.payload_bytes, "drop": sorted(self.drop)}

    @classmethod
    def from_dict(cls, d: dict) -> Layout:
        return cls(tuple(d["blocks"]), int(d.get("payload_bytes", 0)), frozenset(d.get("drop", ())))

    @classmethod
    def from_columns(cls, columns: list[str]) -> Layout:
        """Recognise the layout of a list of bit-column names (as in an nPrint CSV header)."""
        blocks = [b for b in BLOCK_ORDER if any(c.startswith(b + "_") for c in columns)]
        payload = sum(1 for c in columns if c.startswith(PAYLOAD_PREFIX + "_")) // 8
        present = {c.rsplit("_", 1)[0] for c in columns}
        drop = frozenset(f for f in ADDRESS_FIELDS if f.split("_")[0] in blocks and f not in present)
        layout = cls(tuple(blocks), payload, drop)
        if layout.columns != list(columns):
            raise ValueError(f"columns do not form an nPrint layout (closest: {layout.describe()})")
        return layout


#: The layout of NetDiffusion's images: ``-4 -6 -t -u -i -p 0`` less the address columns (1,088 columns).
NETDIFFUSION = Layout(("ipv4", "ipv6", "tcp", "udp", "icmp"), 0, frozenset(ADDRESS_FIELDS))
#: NetDiffusion's nPrint command (``-4 -6 -t -u -i -p 0``), address columns included (1,408 bit columns).
NETDIFFUSION_FULL = NETDIFFUSION.full
#: Rows of a NetDiffusion trace/image.
MAX_PACKETS = 1024

_POW2 = {n: (1 << np.arange(n - 1, -1, -1, dtype=np.uint64)) for n in (1, 3, 4, 8, 13, 16, 20, 32)}


def bits_to_uint(bits: np.ndarray) -> np.ndarray:
    """MSB-first bit columns (..., n) -> unsigned integers (...). Any -1 counts as 0."""
    n = bits.shape[-1]
    w = _POW2.get(n)
    if w is None:
        w = 1 << np.arange(n - 1, -1, -1, dtype=np.uint64)
    return ((bits > 0).astype(np.uint64) * w).sum(axis=-1)


def uint_to_bits(values: np.ndarray | int, n: int) -> np.ndarray:
    """Unsigned integers (...) -> MSB-first int8 bit columns (..., n)."""
    v = np.asarray(values, dtype=np.uint64)[..., None]
    shifts = np.arange(n - 1, -1, -1, dtype=np.uint64)
    return ((v >> shifts) & np.uint64(1)).astype(np.int8)
