"""Atomic classic-pcap writer (little-endian, microsecond or nanosecond timestamps).

The file is written under a temporary name beside the target (:func:`netdiff_lib.atomic.atomic_path`) and
renamed onto it by :meth:`PcapWriter.close` or a clean ``with`` exit; an exception inside the ``with`` block,
or :meth:`PcapWriter.abort`, deletes it, so a reader never sees a half-written capture.

:meth:`PcapWriter.write` packs one record with a precompiled ``struct.Struct``. :meth:`PcapWriter.write_many`
is the fast path for generated traces: it builds all 16-byte record headers as one ``(n, 4)`` uint32 array and
lays headers and packet bytes into one output buffer with a boolean mask, so the per-packet Python work is only
``b"".join``. Packets longer than ``snaplen`` are cut to it (their original length stays in the header).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from netdiff_lib.atomic import atomic_path
from netdiff_lib.pcap.linktypes import LINKTYPE_ETHERNET

_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_NS = 1_000_000_000


class _Aborted(Exception):
    """Passed to the atomic context to make it delete the temporary file."""


class PcapWriter:
    """Write a classic pcap file atomically; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144,
                 nanosecond: bool = False) -> None:
        if not 0 <= linktype <= 0x03FFFFFF:
            raise ValueError(f"link type {linktype} out of range")
        if not 0 < snaplen < 1 << 31:
            raise ValueError(f"snaplen {snaplen} out of range")
        self.path = Path(path)
        self.linktype, self.snaplen, self.nanosecond = linktype, snaplen, nanosecond
        self.count = 0
        self._div = 1 if nanosecond else 1000
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._fh = open(tmp, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()/abort()
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._fh.write(_HEADER.pack(magic, 2, 4, 0, 0, snaplen, linktype))

    def _split(self, ts_ns: int) -> tuple[int, int]:
        sec, frac = divmod(int(ts_ns), _NS)
        if not 0 <= sec < 1 << 32:
            raise ValueError(f"timestamp {ts_ns} ns is outside the pcap range (0 .. 2**32 s)")
        return sec, frac // self._div

    def write(self, data: bytes, ts_ns: int, wirelen: int | None = None) -> None:
        """Append one packet; ``wirelen`` defaults to ``len(data)``."""
        caplen = min(len(data), self.snaplen)
        wire = len(data) if wirelen is None else int(wirelen)
        if wire < 0 or wire >= 1 << 32:
            raise ValueError(f"wirelen {wire} out of range")
        sec, frac = self._split(ts_ns)
        self._fh.write(_RECORD.pack(sec, frac, caplen, wire))
        self._fh.write(data[:caplen] if caplen < len(data) else data)
        self.count += 1

    def write_many(self, packets: Sequence[bytes], ts_ns: np.ndarray, wirelen: np.ndarray | None = None) -> None:
        """Append many packets at once (vectorised record headers); ``ts_ns`` is int64 ns, one per packet."""
        n = len(packets)
        ts = np.asarray(ts_ns, dtype=np.int64).reshape(-1)
        if len(ts) != n:
            raise ValueError(f"{n} packets but {len(ts)} timestamps")
        if n == 0:
            return
        lens = np.fromiter(map(len, packets), np.int64, n)
        wire = lens if wirelen is None else np.asarray(wirelen, dtype=np.int64).reshape(-1)
        if len(wire) != n or (wire < 0).any() or (wire >= 1 << 32).any():
            raise ValueError("wirelen must give one value in 0 .. 2**32-1 per packet")
        if (ts < 0).any() or (ts // _NS >= 1 << 32).any():
            raise ValueError("timestamps must be in 0 .. 2**32 s")
        if (lens > self.snaplen).any():
            packets = [p[:self.snaplen] for p in packets]
        caps = np.minimum(lens, self.snaplen)
        head = np.empty((n, 4), "<u4")
        head[:, 0], head[:, 1] = ts // _NS, (ts % _NS) // self._div
        head[:, 2], head[:, 3] = caps, wire
        runs = np.empty(2 * n, np.int64)
        runs[0::2], runs[1::2] = 16, caps
        is_data = np.repeat(np.tile(np.array([False, True]), n), runs)
        out = np.empty(len(is_data), np.uint8)
        out[~is_data] = head.view(np.uint8).reshape(-1)
        out[is_data] = np.frombuffer(b"".join(packets), np.uint8)
        self._fh.write(out.data)
        self.count += n

    def close(self) -> None:
        """Finish the file and rename it onto ``path``."""
        if self._fh.closed:
            return
        try:
            self._fh.close()
        except BaseException as e:
            self._stack.__exit__(type(e), e, e.__traceback__)
            raise
        self._stack.close()

    def abort(self) -> None:
        """Discard the file (the target path is left as it was)."""
        if self._fh.closed:
            return
        self._fh.close()
        err = _Aborted()
        self._stack.__exit__(_Aborted, err, None)

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
