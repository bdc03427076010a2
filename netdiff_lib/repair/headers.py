"""Header blocks as byte matrices: how reconstruction reads generated bits and writes repaired ones.

A generated nPrint matrix is turned, once, into two byte views per header block of the *full* block
(addresses included, whatever the layout drops): the value bytes (bit set where the generator wrote 1; a -1
reads as 0) and a count of on-the-wire bits per byte (0..8, from the -1 pattern; 0 for bytes the layout does
not carry).  Both come from one ``np.packbits`` each over the whole matrix.  Repair then works on copies of
the value bytes plus one header length per block and packet (bytes beyond it are not on the wire), and
fields are read and written by name through the schema's field table (:func:`get` / :func:`put`), never by
column number.  :meth:`HeaderBytes.to_matrix` turns repaired bytes back into the nPrint matrix of any layout
with these blocks: exactly what the encoder makes of the written packets.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from netdiff_lib.schema import BLOCKS, Layout

#: Bits set per byte value.
POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint8)
_BITWISE_COUNT = getattr(np, "bitwise_count", None)  # numpy >= 2.0


def popcount(x: np.ndarray) -> np.ndarray:
    """Bits set per byte of a uint8 array (numpy's ufunc where it exists, else a table)."""
    return _BITWISE_COUNT(x) if _BITWISE_COUNT is not None else POPCOUNT[x]
#: Size of the fixed part of each block (options and address bytes are handled on their own).
BASE_BYTES = {"ipv4": 20, "ipv6": 40, "tcp": 20, "udp": 8, "icmp": 8}
L3_BLOCKS, L4_BLOCKS = ("ipv4", "ipv6"), ("tcp", "udp", "icmp")
PAYLOAD = "payload"
_CHUNK = 1024


@lru_cache(maxsize=64)
def kept_bytes(block: str, drop: frozenset[str]) -> np.ndarray:
    """Indices of a block's bytes that a layout carries (dropped fields are whole bytes)."""
    keep = np.ones(BLOCKS[block].nbytes, bool)
    for f in BLOCKS[block].fields:
        if f.name in drop:
            keep[f.offset // 8:(f.offset + f.bits) // 8] = False
    return np.flatnonzero(keep)


@lru_cache(maxsize=256)
def _field(name: str) -> tuple[str, int, int, int, int]:
    """(block, first byte, byte count, right shift, mask) of a field of at most 57 bits."""
    block = name.split("_", 1)[0]
    f = next(f for f in BLOCKS[block].fields if f.name == name)
    first, last = f.offset // 8, (f.offset + f.bits - 1) // 8
    nbytes = last - first + 1
    shift = 8 * nbytes - (f.offset % 8) - f.bits
    return block, first, nbytes, shift, (1 << f.bits) - 1


def get(blocks: dict[str, np.ndarray], name: str, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Field ``name`` of every packet (or of ``rows``) as int64."""
    block, first, nbytes, shift, mask = _field(name)
    b = blocks[block][rows, first:first + nbytes].astype(np.int64)
    v = b[:, 0]
    for k in range(1, nbytes):
        v = (v << 8) | b[:, k]
    return (v >> shift) & mask


def put(blocks: dict[str, np.ndarray], name: str, values: np.ndarray | int,
        rows: np.ndarray | slice = slice(None)) -> None:
    """Write field ``name`` (read-modify-write for fields that share bytes with others)."""
    block, first, nbytes, shift, mask = _field(name)
    arr = blocks[block]
    vals = (np.asarray(values, np.int64) & mask) << shift
    if not (shift == 0 and mask == (1 << 8 * nbytes) - 1):
        span = arr[rows, first:first + nbytes].astype(np.int64)
        whole = span[:, 0]
        for k in range(1, nbytes):
            whole = (whole << 8) | span[:, k]
        vals = vals | (whole & ~(mask << shift))
    for k in range(nbytes):
        arr[rows, first + k] = (vals >> (8 * (nbytes - 1 - k))) & 0xFF


def put_many(blocks: dict[str, np.ndarray], values: dict[str, np.ndarray | int],
             rows: np.ndarray | slice = slice(None)) -> None:
    """Write several fields of one block with a single read-modify-write of the bytes they span."""
    specs = {name: _field(name) for name in values}
    block = next(iter(specs.values()))[0]
    lo = min(first for _, first, _, _, _ in specs.values())
    hi = max(first + nbytes for _, first, nbytes, _, _ in specs.values())
    if hi - lo > 7:
        raise ValueError("put_many: fields must lie within 7 consecutive bytes")
    arr = blocks[block]
    span = arr[rows, lo:hi].astype(np.int64)
    word = span[:, 0]
    for k in range(1, hi - lo):
        word = (word << 8) | span[:, k]
    for name, (b, first, nbytes, shift, mask) in specs.items():
        if b != block:
            raise ValueError(f"put_many: {name} is not in block {block}")
        at = shift + 8 * (hi - first - nbytes)
        word = (word & ~(mask << at)) | ((np.asarray(values[name], np.int64) & mask) << at)
    for k in range(hi - lo):
        arr[rows, lo + k] = (word >> (8 * (hi - lo - 1 - k))) & 0xFF


def _block_bytes(layout: Layout, block: str) -> tuple[slice, np.ndarray, int]:
    """(byte columns of the layout, kept byte indices within the block, block size) of a block or payload."""
    if block == PAYLOAD:
        span = layout.span("payload")
        return slice(span.start // 8, span.stop // 8), np.arange(layout.payload_bytes), layout.payload_bytes
    span = layout.block_span(block)
    return slice(span.start // 8, span.stop // 8), kept_bytes(block, layout.drop), BLOCKS[block].nbytes


@lru_cache(maxsize=64)
def _runs(layout: Layout, block: str) -> tuple[tuple[int, int, int], ...]:
    """Contiguous pieces of a block in a layout: (first byte in the block, end byte, first layout column);
    copying piece by piece with slices is many times faster than one fancy-indexed copy."""
    cols, kb, _ = _block_bytes(layout, block)
    pieces = []
    col = cols.start
    for run in np.split(kb, np.flatnonzero(np.diff(kb) != 1) + 1):
        if len(run):
            pieces.append((int(run[0]), int(run[-1]) + 1, col))
            col += len(run)
    return tuple(pieces)


def layout_parts(layout: Layout) -> list[str]:
    """The header blocks of a layout, plus ``payload`` when it carries payload bytes."""
    return list(layout.blocks) + ([PAYLOAD] if layout.payload_bytes else [])


class HeaderBytes:
    """Value bytes and on-the-wire bit counts of every block of a layout, for ``n`` packets.

    ``packed_val`` / ``packed_on`` keep the matrix itself packed 8 bits a byte (value bits; on-the-wire bits),
    which is all the change report needs to compare against the output.
    """

    def __init__(self, matrix: np.ndarray, layout: Layout) -> None:
        if layout.width % 8:
            raise ValueError(f"layout {layout.describe()} is not a whole number of bytes")
        self.layout = layout
        self.n = len(matrix)
        self.packed_on = np.empty((self.n, layout.width // 8), np.uint8)
        self.packed_val = np.empty_like(self.packed_on)
        for a in range(0, self.n, _CHUNK):  # in cache-sized chunks
            shifted = matrix[a:a + _CHUNK].view(np.uint8) + np.uint8(1)  # -1, 0, 1 -> 0, 1, 2
            self.packed_on[a:a + _CHUNK] = np.packbits(shifted, axis=1)  # on the wire = non-zero
            self.packed_val[a:a + _CHUNK] = np.packbits(shifted >> 1, axis=1)  # 1 only where the bit is 1
        present = popcount(self.packed_on)
        self.val: dict[str, np.ndarray] = {}
        self.bits: dict[str, np.ndarray] = {}
        for block in layout_parts(layout):
            nbytes = _block_bytes(layout, block)[2]
            self.val[block] = np.zeros((self.n, nbytes), np.uint8)
            self.bits[block] = np.zeros((self.n, nbytes), np.uint8)
            for lo, hi, col in _runs(layout, block):
                self.val[block][:, lo:hi] = self.packed_val[:, col:col + hi - lo]
                self.bits[block][:, lo:hi] = present[:, col:col + hi - lo]

    def subset(self, rows: np.ndarray) -> HeaderBytes:
        """The same view restricted to some packets (itself when ``rows`` are all of them, in order)."""
        if len(rows) == self.n:
            return self
        out = HeaderBytes.__new__(HeaderBytes)
        out.layout, out.n = self.layout, len(rows)
        out.packed_val, out.packed_on = self.packed_val[rows], self.packed_on[rows]
        out.val = {b: v[rows] for b, v in self.val.items()}
        out.bits = {b: v[rows] for b, v in self.bits.items()}
        return out

    def coverage(self, block: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Fraction of the carried bits of ``block[start:stop]`` (bytes) that are on the wire."""
        kb = kept_bytes(block, self.layout.drop)
        stop = BLOCKS[block].nbytes if stop is None else stop
        kb = kb[(kb >= start) & (kb < stop)]
        if not len(kb) or block not in self.bits:
            return np.zeros(self.n)
        return self.bits[block][:, kb].sum(axis=1) / (8.0 * len(kb))


@lru_cache(maxsize=1)
def _bits_lut() -> np.ndarray:
    """257 int64 words holding the 8 int8 bits of a byte (MSB first); entry 256 is eight -1s (not on the wire)."""
    table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.int8)
    table = np.vstack([table, np.full((1, 8), -1, np.int8)])
    return np.ascontiguousarray(table).view(np.int64).ravel()


def packed(blocks: dict[str, np.ndarray], lengths: dict[str, np.ndarray], layout: Layout) -> tuple[np.ndarray, ...]:
    """Repaired blocks packed like :class:`HeaderBytes`: (value bytes, on-the-wire bytes 0xFF/0x00), in the
    layout's byte columns; bytes that are not on the wire have value 0."""
    n = len(next(iter(lengths.values()))) if lengths else 0
    val = np.zeros((n, layout.width // 8), np.uint8)
    on = np.zeros((n, layout.width // 8), np.uint8)
    for block in layout_parts(layout):
        for lo, hi, col in _runs(layout, block):
            val[:, col:col + hi - lo] = blocks[block][:, lo:hi]
            on[:, col:col + hi - lo] = np.arange(lo, hi)[None, :] < lengths[block][:, None]
    on *= 0xFF
    val &= on
    return val, on


def to_matrix(blocks: dict[str, np.ndarray], lengths: dict[str, np.ndarray], layout: Layout) -> np.ndarray:
    """nPrint matrix of repaired blocks: bytes below each block's length are on the wire, the others -1."""
    return expand_bits(*packed(blocks, lengths, layout))


def expand_bits(val: np.ndarray, on: np.ndarray) -> np.ndarray:
    """nPrint matrix of packed bytes (:func:`packed`): the bits of the bytes where ``on`` is non-zero, else -1."""
    raw = val.astype(np.uint16)
    raw[on == 0] = 256
    return _bits_lut()[raw].view(np.int8).reshape(len(val), 8 * raw.shape[1])
