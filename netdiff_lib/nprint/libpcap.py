"""libpcap through ctypes: BPF filters (``pcap_compile`` + ``bpf_filter``) and live capture, as nPrint uses them.

No Python binding is needed: the system's ``libpcap.so`` (Debian package ``libpcap0.8``, which tcpdump
depends on) is loaded on first use, so filters behave exactly as tcpdump's.  Where libpcap is missing,
:class:`LibpcapError` says so.  Filters are compiled per link type (pcapng files may mix them) with nPrint's
settings: no optimisation, netmask unknown for files.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from netdiff_lib.errors import NetdiffError
from netdiff_lib.pcap.records import PAD, PacketBatch

SNAPLEN_FILE = 262144  # libpcap's MAXIMUM_SNAPLEN
SNAPLEN_LIVE = 8192  # nPrint opens devices with BUFSIZ
NETMASK_UNKNOWN = 0xFFFFFFFF
ERRBUF_SIZE = 256


class LibpcapError(NetdiffError):
    """libpcap is missing, or refused a filter or a device."""


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _PktHdr(ctypes.Structure):
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


@lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    """The system libpcap, with the prototypes used here declared."""
    import ctypes.util  # deferred: it imports subprocess, ~4 ms of every `netdiff nprint` start-up without -f/-d

    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        pcap = ctypes.CDLL(name)
    except OSError as exc:
        raise LibpcapError(f"libpcap is not installed ({exc}); Debian: apt-get install libpcap0.8") from None
    vp, cp, ip = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    pcap.pcap_open_dead.restype = vp
    pcap.pcap_open_dead.argtypes = [ip, ip]
    pcap.pcap_open_live.restype = vp
    pcap.pcap_open_live.argtypes = [cp, ip, ip, ip, cp]
    pcap.pcap_compile.argtypes = [vp, ctypes.POINTER(_BpfProgram), cp, ip, ctypes.c_uint32]
    pcap.pcap_setfilter.argtypes = [vp, ctypes.POINTER(_BpfProgram)]
    pcap.pcap_geterr.restype = cp
    pcap.pcap_geterr.argtypes = [vp]
    pcap.pcap_close.argtypes = [vp]
    pcap.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    pcap.bpf_filter.restype = ctypes.c_uint
    pcap.bpf_filter.argtypes = [vp, vp, ctypes.c_uint, ctypes.c_uint]
    pcap.pcap_datalink.argtypes = [vp]
    pcap.pcap_next_ex.argtypes = [vp, ctypes.POINTER(ctypes.POINTER(_PktHdr)), ctypes.POINTER(vp)]
    pcap.pcap_findalldevs.argtypes = [ctypes.POINTER(vp), cp]
    pcap.pcap_freealldevs.argtypes = [vp]
    pcap.pcap_lookupnet.argtypes = [cp, ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32), cp]
    return pcap


def _compile(handle: int, expr: str, netmask: int) -> _BpfProgram:
    prog = _BpfProgram()
    if lib().pcap_compile(handle, ctypes.byref(prog), expr.encode(), 0, netmask) == -1:
        raise LibpcapError(f"Couldn't parse filter {expr}: {lib().pcap_geterr(handle).decode(errors='replace')}")
    return prog


class BpfFilter:
    """A BPF filter expression, compiled on demand for each link type it meets."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self._progs: dict[int, _BpfProgram] = {}

    def program(self, linktype: int) -> _BpfProgram:
        if linktype not in self._progs:
            handle = lib().pcap_open_dead(linktype, SNAPLEN_FILE)
            try:
                self._progs[linktype] = _compile(handle, self.expr, NETMASK_UNKNOWN)
            finally:
                lib().pcap_close(handle)
        return self._progs[linktype]

    def matches(self, batch: PacketBatch) -> np.ndarray:
        """Per packet of the batch: does the filter accept it (as ``pcap_offline_filter`` decides)."""
        run, base = lib().bpf_filter, batch.data.ctypes.data
        out = np.zeros(len(batch), bool)
        rows = zip(batch.offsets.tolist(), batch.caplen.tolist(), batch.wirelen.tolist(), batch.linktype.tolist(),
                   strict=True)
        for i, (off, cap, wire, lt) in enumerate(rows):
            out[i] = run(self.program(lt).bf_insns, base + off, wire, cap) != 0
        return out

    def __del__(self) -> None:
        for prog in getattr(self, "_progs", {}).values():
            lib().pcap_freecode(ctypes.byref(prog))


def take(batch: PacketBatch, idx: np.ndarray) -> PacketBatch:
    """The packets ``idx`` of a batch (sharing its data)."""
    return PacketBatch(batch.data, batch.offsets[idx], batch.caplen[idx], batch.wirelen[idx], batch.ts_ns[idx],
                       batch.linktype[idx], batch.index[idx] if len(batch.index) else batch.index)


def make_batch(packets: list[bytes], ts_ns: list[int], wirelen: list[int], linktype: int) -> PacketBatch:
    """A batch from packet bytes (zero padding after the last packet, as the pcap reader leaves it)."""
    caplen = np.array([len(p) for p in packets], np.int32)
    offsets = np.concatenate([[0], np.cumsum(caplen, dtype=np.int64)[:-1]]).astype(np.int64)
    data = np.frombuffer(b"".join(packets) + bytes(PAD), np.uint8)
    return PacketBatch(data, offsets, caplen, np.array(wirelen, np.int32), np.array(ts_ns, np.int64),
                       np.full(len(packets), linktype, np.int64), np.empty(0, np.int64))


def default_device() -> str:
    """The first capture device libpcap lists (what nPrint captures on without ``-d``)."""
    devs, err = ctypes.c_void_p(), ctypes.create_string_buffer(ERRBUF_SIZE)
    if lib().pcap_findalldevs(ctypes.byref(devs), err) == -1 or not devs.value:
        raise LibpcapError(f"Failure looking up default device: {err.value.decode(errors='replace')}")
    name = ctypes.cast(ctypes.c_void_p.from_address(devs.value + ctypes.sizeof(ctypes.c_void_p)), ctypes.c_char_p)
    out = (name.value or b"").decode()
    lib().pcap_freealldevs(devs)
    return out


def live_batches(device: str | None, expr: str | None, batch_size: int = 64) -> Iterator[PacketBatch]:
    """Capture on a device (promiscuous, snap length 8192, 1 s timeout) as nPrint does, in small batches."""
    device = device or default_device()
    err = ctypes.create_string_buffer(ERRBUF_SIZE)
    handle = lib().pcap_open_live(device.encode(), SNAPLEN_LIVE, 1, 1000, err)
    if not handle:
        raise LibpcapError(f"Couldn't open device: {err.value.decode(errors='replace')}")
    try:
        if expr is not None:
            net, mask = ctypes.c_uint32(), ctypes.c_uint32()
            if lib().pcap_lookupnet(device.encode(), ctypes.byref(net), ctypes.byref(mask), err) == -1:
                net = ctypes.c_uint32(0)
            prog = _compile(handle, expr, net.value)
            if lib().pcap_setfilter(handle, ctypes.byref(prog)) == -1:
                raise LibpcapError(f"Couldn't install filter {expr}: {lib().pcap_geterr(handle).decode()}")
            lib().pcap_freecode(ctypes.byref(prog))
        yield from _read_live(handle, batch_size)
    finally:
        lib().pcap_close(handle)


def _read_live(handle: int, batch_size: int) -> Iterator[PacketBatch]:
    linktype = lib().pcap_datalink(handle)
    hdr, data = ctypes.POINTER(_PktHdr)(), ctypes.c_void_p()
    pkts: list[bytes] = []
    ts: list[int] = []
    wire: list[int] = []
    while True:
        rc = lib().pcap_next_ex(handle, ctypes.byref(hdr), ctypes.byref(data))
        if rc == 1:
            h = hdr.contents
            pkts.append(ctypes.string_at(data.value, h.caplen))
            ts.append(h.ts.tv_sec * 1_000_000_000 + h.ts.tv_usec * 1000)
            wire.append(h.len)
        if pkts and (rc != 1 or len(pkts) >= batch_size):
            yield make_batch(pkts, ts, wire, linktype)
            pkts, ts, wire = [], [], []
        if rc < 0:
            if rc == -1:
                raise LibpcapError(f"capture failed: {lib().pcap_geterr(handle).decode(errors='replace')}")
            return
