"""The classic pcap reader against libpcap itself (the system's ``libpcap.so``, through ctypes, opened for
microseconds as nPrint opens it): records longer than the header's snap length are cut to it, and with
``libpcap_time`` the seconds and fraction fields read as libpcap reads them (signed in a file of the host's byte
order, nanoseconds cut toward zero).  `netdiff nprint` then writes for a crafted capture what it writes for a
clean capture of the packets libpcap hands over.  tcpdump's test captures that differ for these reasons alone
are checked too where ``../shared`` holds them."""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.cli import main
from netdiff_lib.pcap import PcapFile, PcapWriter

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NETDIFF_SHARED") or REPO.parent / "shared")
TCPDUMP_CAPTURES = ("icmp-icmp_print-oobr-1.pcap", "icmp6_nodeinfo_oobr.pcap", "extract_read2_asan.pcap",
                    "timestamp_invalid_micro.pcap", "timestamp_invalid_nano.pcap")
SNAPLEN = 50
BIG = 0x80000000  # 2**31: the sign bit of a 32-bit field


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _PktHdr(ctypes.Structure):
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap")
    if name is None:
        pytest.skip("libpcap is not installed")
    pcap = ctypes.CDLL(name)
    pcap.pcap_open_offline_with_tstamp_precision.restype = ctypes.c_void_p
    pcap.pcap_open_offline_with_tstamp_precision.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_char_p]
    pcap.pcap_next_ex.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(_PktHdr)),
                                  ctypes.POINTER(ctypes.c_void_p)]
    pcap.pcap_close.argtypes = [ctypes.c_void_p]
    return pcap


def libpcap_packets(path: Path) -> list[tuple[int, int, int, bytes]]:
    """(tv_sec, tv_usec, len, bytes) of every packet libpcap returns, as nPrint gets them."""
    pcap, err = _libpcap(), ctypes.create_string_buffer(256)
    handle = pcap.pcap_open_offline_with_tstamp_precision(str(path).encode(), 0, err)  # 0: microseconds
    assert handle, err.value
    hdr, data, out = ctypes.POINTER(_PktHdr)(), ctypes.c_void_p(), []
    while pcap.pcap_next_ex(handle, ctypes.byref(hdr), ctypes.byref(data)) == 1:
        h = hdr.contents
        out.append((h.ts.tv_sec, h.ts.tv_usec, h.len, ctypes.string_at(data.value, h.caplen)))
    pcap.pcap_close(handle)
    return out


def netdiff_packets(path: Path, libpcap_time: bool) -> list[tuple[int, int, bytes]]:
    return [(int(b.ts_ns[i]), int(b.wirelen[i]), b.packet(i))
            for b in PcapFile(path, libpcap_time=libpcap_time).batches(batch_size=3) for i in range(len(b))]


def _frame(i: int) -> bytes:
    """Ethernet / IPv4 / UDP with 40 bytes of payload (82 bytes): past SNAPLEN, only the payload is cut."""
    payload = bytes((0xA0 + i + k) % 256 for k in range(40))
    udp = struct.pack("!HHHH", 1000 + i, 53, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2 + i]))
    return bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip + udp


# (seconds field, fraction field, captured bytes): captured lengths above, at and below the snap length
RECORDS = [(1_600_000_000, 5, 82), (1_600_000_001, BIG, 82), (1_600_000_002, 0xFFFFFFFF, SNAPLEN),
           (1_600_000_003, 1_500_000, 42), (1_600_000_004, BIG + 1234, 82), (1_600_000_005, 999_999, 82)]


def crafted(tmp_path: Path, order: str, nano: bool, records: list = RECORDS, cut_tail: int = 0) -> Path:
    """A classic pcap with snap length SNAPLEN whose records hold more bytes than that, and fraction fields of
    2**31 and more; ``cut_tail`` drops bytes at the end (a file that ends inside the last record)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    blob = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, SNAPLEN, 1)
    for i, (sec, frac, cap) in enumerate(records):
        frame = _frame(i)
        blob += struct.pack(order + "IIII", sec, frac, cap, len(frame)) + frame[:cap]
    path = tmp_path / f"crafted_{'be' if order == '>' else 'le'}_{'ns' if nano else 'us'}.pcap"
    path.write_bytes(blob[:len(blob) - cut_tail])
    return path


def _fields(order: str, nano: bool, signed: bool) -> list[int]:
    """ts_ns of RECORDS read from the fields as the pcap format says (unsigned) or as signed 32-bit values."""
    dt = np.dtype(order + ("i4" if signed else "u4"))
    out = []
    for sec, frac, _ in RECORDS:
        s, f = np.array([sec, frac], np.uint32).astype(dt.newbyteorder("=")).tolist()
        out.append(s * 10**9 + f * (1 if nano else 1000))
    return out


VARIANTS = [(o, n) for o in "<>" for n in (False, True)]
IDS = [f"{'le' if o == '<' else 'be'}-{'ns' if n else 'us'}" for o, n in VARIANTS]


@pytest.mark.parametrize(("order", "nano"), VARIANTS, ids=IDS)
def test_records_are_cut_to_the_snap_length_and_timed_as_libpcap(order: str, nano: bool, tmp_path: Path) -> None:
    path = crafted(tmp_path, order, nano)
    ref = libpcap_packets(path)
    assert len(ref) == len(RECORDS) and {len(p) for *_, p in ref} == {SNAPLEN, 42}
    assert netdiff_packets(path, libpcap_time=True) == [(s * 10**9 + u * 1000, w, p) for s, u, w, p in ref]
    # netdiff's own reading cuts the same bytes; its timestamps are the unsigned fields, to the nanosecond
    own = netdiff_packets(path, libpcap_time=False)
    assert [(w, p) for _, w, p in own] == [(w, p) for *_, w, p in ref]
    assert [t for t, *_ in own] == _fields(order, nano, signed=False)
    native = order == ("<" if sys.byteorder == "little" else ">")
    libpcap_us = [t // 1000 for t in _fields(order, False, signed=native)] if not nano else None
    if libpcap_us is not None:  # the microsecond fields as libpcap reads them: signed only in host order
        assert [s * 10**6 + u for s, u, *_ in ref] == libpcap_us


def test_signed_seconds_in_host_byte_order(tmp_path: Path) -> None:
    order = "<" if sys.byteorder == "little" else ">"
    path = crafted(tmp_path, order, False, [(BIG, 7, 82), (BIG + 1, BIG, 82)])
    ref = libpcap_packets(path)
    assert [(s, u) for s, u, *_ in ref] == [(-BIG, 7), (-BIG + 1, -BIG)]
    assert [t for t, *_ in netdiff_packets(path, libpcap_time=True)] == [s * 10**9 + u * 1000 for s, u, *_ in ref]


@pytest.mark.parametrize("nano", [False, True], ids=["us", "ns"])
def test_file_ending_inside_a_cut_record(nano: bool, tmp_path: Path) -> None:
    path = crafted(tmp_path, "<", nano, cut_tail=10)  # the last record's snap-length part is there, not its rest
    ref = libpcap_packets(path)
    assert len(ref) == len(RECORDS) - 1
    assert netdiff_packets(path, True) == [(s * 10**9 + u * 1000, w, p) for s, u, w, p in ref]
    pcap = PcapFile(path)
    assert sum(map(len, pcap.batches())) == len(ref) and pcap.stats.truncated_tail


def _clean_copy(path: Path, out: Path) -> Path:
    """The packets libpcap hands over, in a plain capture (no cut record, valid timestamp fields)."""
    with PcapWriter(out, linktype=1) as w:
        for s, u, wire, data in libpcap_packets(path):
            w.write(data, s * 10**9 + u * 1000, wire)
    return out


@pytest.mark.parametrize(("order", "nano"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("flags", ["-4 -u -p 48 -R", "-e -4 -u -p 16 -R -O 4"])
def test_nprint_writes_what_libpcap_hands_over(order: str, nano: bool, flags: str, tmp_path: Path) -> None:
    path = crafted(tmp_path, order, nano)
    clean = _clean_copy(path, tmp_path / "clean.pcap")
    outs = []
    for src in (path, clean):
        out = tmp_path / f"{src.stem}.csv"
        assert main(["nprint", "-P", str(src), *flags.split(), "-W", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") == len(RECORDS) + 1


def _tcpdump_captures() -> list:
    found = {p.name: p for p in SHARED.glob("**/*.pcap") if p.name in TCPDUMP_CAPTURES} if SHARED.is_dir() else {}
    if not found:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"tcpdump's test captures not under {SHARED}"))]
    return [pytest.param(p, id=p.name) for _, p in sorted(found.items())]


@pytest.mark.parametrize("path", _tcpdump_captures())
def test_tcpdump_captures_read_as_libpcap_reads_them(path: Path, tmp_path: Path) -> None:
    ref = libpcap_packets(path)
    assert netdiff_packets(path, True)[:len(ref)] == [(s * 10**9 + u * 1000, w, p) for s, u, w, p in ref]
    clean = _clean_copy(path, tmp_path / "clean.pcap")
    outs = []
    for src in (path, clean):
        out = tmp_path / f"{src.stem}.csv"
        assert main(["nprint", "-P", str(src), "-4", "-6", "-t", "-u", "-i", "-p", "32", "-R", "-W", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize(("order", "nano"), VARIANTS, ids=IDS)
def test_relative_time_drop_in_and_netdiff_mode(order: str, nano: bool, tmp_path: Path) -> None:
    """``-R``: nPrint's ``1e6 * (sec - prev_sec) + usec - prev_usec`` over libpcap's fields in the drop-in;
    the unsigned fields (docs/nprint-differences.md) with ``--netdiff``."""
    path = crafted(tmp_path, order, nano)

    def rts(*extra: str) -> list[int]:
        out = tmp_path / "rts.csv"
        assert main(["nprint", "-P", str(path), "-4", "-R", *extra, "-W", str(out)]) == 0
        return [int(line.split(",")[1]) for line in out.read_text().splitlines()[1:]]

    libpcap_us = [s * 10**6 + u for s, u, *_ in libpcap_packets(path)]
    unsigned_us = [t // 1000 for t in _fields(order, nano, signed=False)]
    for got, us in ((rts(), libpcap_us), (rts("--netdiff"), unsigned_us)):
        assert got == [0] + [b - a for a, b in itertools.pairwise(us)]
    native = order == ("<" if sys.byteorder == "little" else ">")
    assert (libpcap_us != unsigned_us) == native  # libpcap reads the fields signed in the host's byte order
