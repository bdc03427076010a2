"""Tests for netdiff_lib.pcap: crafted classic/pcapng files, the real captures (against scapy), the writer."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.errors import InputError
from netdiff_lib.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    RAW_IP_LINKTYPES,
    PcapFile,
    PcapWriter,
    linktypes,
    reader,
)

PACKETS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "packets"
NS = 1_000_000_000


# ---- fixture builders -------------------------------------------------------------------------------------------

def classic(records: list[tuple[bytes, int, int, int]], order: str = "<", nano: bool = False,
            network: int = LINKTYPE_ETHERNET) -> bytes:
    """A classic pcap: records are (data, ts_sec, ts_frac, wirelen)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, network)]
    for data, sec, frac, wire in records:
        out += [struct.pack(order + "IIII", sec, frac, len(data), wire), data]
    return b"".join(out)


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def block(o: str, btype: int, body: bytes) -> bytes:
    body = _pad(body)
    return struct.pack(o + "II", btype, 12 + len(body)) + body + struct.pack(o + "I", 12 + len(body))


def option(o: str, code: int, value: bytes) -> bytes:
    return struct.pack(o + "HH", code, len(value)) + _pad(value)


def shb(o: str) -> bytes:
    return block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1) + option(o, 4, b"netdiff") +
                 option(o, 0, b""))


def idb(o: str, linktype: int, snaplen: int = 0, tsresol: int | None = None, tsoffset: int | None = None) -> bytes:
    opts = option(o, 2, b"eth0")
    if tsresol is not None:
        opts += option(o, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(o, 14, struct.pack(o + "q", tsoffset))
    return block(o, 1, struct.pack(o + "HHI", linktype, 0, snaplen) + opts + option(o, 0, b""))


def epb(o: str, ifid: int, ticks: int, data: bytes, wire: int | None = None, comment: bytes = b"") -> bytes:
    body = struct.pack(o + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if wire is None else wire) + _pad(data)
    if comment:
        body += option(o, 1, comment) + option(o, 0, b"")
    return block(o, 6, body)


def spb(o: str, data: bytes, wire: int) -> bytes:
    return block(o, 3, struct.pack(o + "I", wire) + data)


def obsolete_pb(o: str, ifid: int, ticks: int, data: bytes) -> bytes:
    return block(o, 2, struct.pack(o + "HHIIII", ifid, 3, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) +
                 data)


def payload(i: int, n: int) -> bytes:
    return bytes((i * 7 + k) % 256 for k in range(n))


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def read_all(path: Path, **kw) -> list[tuple[bytes, int, int, int, int]]:
    """(bytes, ts_ns, wirelen, linktype, index) per packet, checking the batch invariants on the way."""
    return read_with_stats(path, **kw)[0]


def read_with_stats(path: Path, **kw) -> tuple[list[tuple[bytes, int, int, int, int]], reader.PcapStats]:
    out, pf = [], PcapFile(path)
    for b in pf.batches(**kw):
        assert b.data.dtype == np.uint8 and b.offsets.dtype == np.int64 and b.ts_ns.dtype == np.int64
        assert b.caplen.dtype == b.wirelen.dtype == b.linktype.dtype == np.int32 and b.index.dtype == np.int64
        assert len(b) == len(b.caplen) == len(b.wirelen) == len(b.ts_ns) == len(b.linktype) == len(b.index) > 0
        ends = b.offsets + b.caplen
        assert b.offsets[0] == 0 and (b.offsets[1:] >= ends[:-1]).all(), "packets overlap or are out of order"
        assert len(b.data) - ends[-1] >= 64 and not b.data[ends[-1]:].any(), "missing zero padding"
        out += [(b.packet(i), int(b.ts_ns[i]), int(b.wirelen[i]), int(b.linktype[i]), int(b.index[i]))
                for i in range(len(b))]
    return out, pf.stats


# ---- classic pcap -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_orders_and_resolutions(tmp_path, order, nano):
    recs = [(payload(i, n), 1_700_000_000 + i, 999_999 - i, n + i) for i, n in enumerate([60, 0, 1514, 17, 99])]
    path = write(tmp_path, "c.pcap", classic(recs, order, nano, network=LINKTYPE_RAW))
    pf = PcapFile(path)
    assert (pf.format, pf.byteorder, pf.nanosecond, pf.linktype) == ("pcap", order, nano, LINKTYPE_RAW)
    got = read_all(path)
    unit = 1 if nano else 1000
    assert got == [(d, s * NS + f * unit, w, LINKTYPE_RAW, i) for i, (d, s, f, w) in enumerate(recs)]
    list(pf.batches())
    st = pf.stats
    assert (st.records, st.bytes, st.truncated_tail, st.snaplen_truncated) == (5, 1690, False, 4)


def test_classic_fcs_bits_are_masked(tmp_path):
    network = LINKTYPE_ETHERNET | (1 << 26) | (4 << 28)  # FCS present, 4 bytes
    path = write(tmp_path, "fcs.pcap", classic([(b"x" * 64, 1, 2, 64)], network=network))
    assert PcapFile(path).linktype == LINKTYPE_ETHERNET
    assert read_all(path)[0][3] == LINKTYPE_ETHERNET


def test_classic_matches_scapy(tmp_path):
    from scapy.utils import RawPcapReader

    recs = [(payload(i, 40 + 13 * i), 1_600_000_000 + i, i * 1111, 40 + 13 * i) for i in range(20)]
    for order in "<>":
        path = write(tmp_path, f"s{order == '<'}.pcap", classic(recs, order))
        with RawPcapReader(str(path)) as r:
            want = [(d, m.sec * NS + m.usec * 1000, m.wirelen) for d, m in r]
        assert [g[:3] for g in read_all(path)] == want


# ---- pcapng -----------------------------------------------------------------------------------------------------

def multi_interface_pcapng(o: str = "<") -> tuple[bytes, list[tuple[bytes, int, int, int]]]:
    """Three interfaces (µs, ns, 2**-20 s with a 100 s offset), interleaved packets and blocks to skip."""
    t = 1_700_000_000
    blocks = [shb(o), idb(o, LINKTYPE_ETHERNET, 65535), idb(o, LINKTYPE_RAW, 0, tsresol=9),
              block(o, 4, option(o, 0, b"")),  # name resolution block: skipped
              idb(o, LINKTYPE_LINUX_SLL, 0, tsresol=0x80 | 20, tsoffset=100)]
    want = []
    specs = [(0, t * 10**6 + 123_456, t * NS + 123_456_000), (1, t * NS + 987_654_321, t * NS + 987_654_321),
             (2, (t << 20) + (1 << 19), (t + 100) * NS + 500_000_000), (0, t * 10**6 + 1, t * NS + 1000)]
    for i, (ifid, ticks, ts) in enumerate(specs * 2):
        data = payload(i, 30 + 11 * i)
        blocks.append(epb(o, ifid, ticks, data, comment=b"c" * (i % 3)))
        if i == 3:
            blocks += [block(o, 5, struct.pack(o + "III", 0, 0, 0)), block(o, 0x40000BAD, b"custom")]
        want.append((data, ts, len(data), [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL][ifid]))
    return b"".join(blocks), want


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_skipped_blocks(tmp_path, order):
    content, want = multi_interface_pcapng(order)
    path = write(tmp_path, "m.pcapng", content)
    pf = PcapFile(path)
    assert (pf.format, pf.byteorder, pf.linktype) == ("pcapng", order, None)
    got = read_all(path)
    assert [g[:4] for g in got] == want
    assert [g[4] for g in got] == list(range(len(want)))
    pf = PcapFile(path)
    list(pf.batches())
    assert (pf.stats.sections, pf.stats.interfaces, pf.stats.skipped_blocks) == (1, 3, 3)


def test_pcapng_matches_scapy(tmp_path):
    from scapy.utils import RawPcapNgReader

    content, _ = multi_interface_pcapng()
    path = write(tmp_path, "m.pcapng", content)
    with RawPcapNgReader(str(path)) as r:  # scapy ignores if_tsoffset: compare the first two interfaces only
        want = [(d, ((m.tshigh << 32) | m.tslow) * NS // m.tsresol, m.linktype) for d, m in r]
    got = [(g[0], g[1], g[3]) for g in read_all(path)]
    keep = [i for i, g in enumerate(got) if g[2] != LINKTYPE_LINUX_SLL]
    assert len(got) == len(want) == 8 and [got[i] for i in keep] == [want[i] for i in keep]


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path):
    o = "<"
    big, small = payload(1, 100), payload(2, 40)
    # The block holds min(original length, snaplen) bytes, padded to 4: caplen must not count the padding.
    content = b"".join([shb(o), idb(o, LINKTYPE_ETHERNET, snaplen=62), spb(o, big[:62], 100), spb(o, small, 40),
                        obsolete_pb(o, 0, 5 * 10**6 + 7, small)])
    path = write(tmp_path, "spb.pcapng", content)
    got = read_all(path)
    assert got == [(big[:62], 0, 100, 1, 0), (small, 0, 40, 1, 1), (small, 5 * NS + 7000, 40, 1, 2)]
    pf = PcapFile(path)
    list(pf.batches())
    assert pf.stats.snaplen_truncated == 1


def test_pcapng_sections_reset_interfaces_and_byte_order(tmp_path):
    d = [payload(i, 50 + i) for i in range(4)]
    content = b"".join([shb("<"), idb("<", LINKTYPE_ETHERNET), idb("<", LINKTYPE_RAW, tsresol=9),
                        epb("<", 1, 5, d[0]), epb("<", 0, 5, d[1]),
                        shb(">"), idb(">", LINKTYPE_LINUX_SLL, tsresol=3), epb(">", 0, 7, d[2]),
                        obsolete_pb(">", 0, 8, d[3])])
    path = write(tmp_path, "sections.pcapng", content)
    got = read_all(path)
    assert [(g[1], g[3]) for g in got] == [(5, 101), (5000, 1), (7 * 10**6, 113), (8 * 10**6, 113)]
    assert [g[0] for g in got] == d
    # Interface 1 existed in the first section only.
    bad = content + epb(">", 1, 9, d[0])
    with pytest.raises(InputError, match=f"byte {len(content)}: interface 1 not described"):
        read_all(write(tmp_path, "bad.pcapng", bad))


# ---- truncation, bad input, empty files -------------------------------------------------------------------------

def test_truncated_tail_stops_cleanly(tmp_path):
    recs = [(payload(i, 80), i, 0, 80) for i in range(3)]
    full = classic(recs)
    content, want = multi_interface_pcapng()
    last = epb("<", 0, 1_700_000_000 * 10**6 + 1, payload(7, 107), comment=b"c")
    assert content.endswith(last)
    cases = [(full, len(full) - 1, 2), (full, 24 + 96 + 96 + 8, 2), (full, 24 + 20, 0),
             (content, len(content) - 1, len(want) - 1), (content, len(content) - len(last) + 6, len(want) - 1)]
    for k, (blob, cut, n) in enumerate(cases):
        path = write(tmp_path, f"t{k}", blob[:cut])
        pf = PcapFile(path)
        got = [len(b) for b in pf.batches(batch_size=2)]
        assert (sum(got), pf.stats.records, pf.stats.truncated_tail) == (n, n, True), k


def test_real_capture_with_truncated_tail():
    path = PACKETS_DIR / "ppa1e" / "http-fault-post.pcap"
    if not path.exists():
        pytest.skip("reference captures not present")
    pf = PcapFile(path)
    n = sum(len(b) for b in pf.batches())
    assert pf.stats.truncated_tail and n == pf.stats.records > 0


@pytest.mark.parametrize(("content", "match"), [
    (b"", "empty file"),
    (b"\xd4\xc3", "truncated header"),
    (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", r"truncated pcap global header \(8 of 24 bytes\)"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c", r"truncated pcapng section header"),
    (b"\x0a\x0d\x0d\x0a" + b"\0" * 24, "bad byte-order magic 00000000"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "magic 47455420"),
    (b"\x1f\x8b\x08\x00" + b"\0" * 30, "gzip"),
])
def test_bad_headers_raise_input_error(tmp_path, content, match):
    path = write(tmp_path, "bad.pcap", content)
    with pytest.raises(InputError, match=match) as exc:
        PcapFile(path)
    assert exc.value.path == str(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        PcapFile(tmp_path / "nope.pcap")
    with pytest.raises(InputError, match="cannot read"):
        PcapFile(tmp_path)


def test_zero_packets(tmp_path):
    for name, content in [("z.pcap", classic([])), ("z.pcapng", shb("<") + idb("<", 1))]:
        pf = PcapFile(write(tmp_path, name, content))
        assert list(pf.batches()) == []
        assert (pf.stats.records, pf.stats.truncated_tail) == (0, False)


@pytest.mark.parametrize(("corrupt", "match"), [
    (lambda c: c[:24] + struct.pack("<IIII", 0, 0, 300_000, 60) + b"\0" * 300_100, "byte 24: caplen 300000"),
    (lambda c: c[:24] + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 60), "byte 24: caplen"),
    (lambda c: c + struct.pack("<IIII", 0, 0, 262_145, 60) + b"\0" * 262_145, "byte 264: caplen 262145"),
])
def test_corrupt_classic_records(tmp_path, corrupt, match):
    path = write(tmp_path, "c.pcap", corrupt(classic([(payload(i, 64), 0, 0, 64) for i in range(3)])))
    with pytest.raises(InputError, match=match):
        list(PcapFile(path).batches())


def test_corrupt_pcapng_blocks(tmp_path):
    head = shb("<") + idb("<", 1)
    good = epb("<", 0, 1, payload(0, 60))
    at = len(head) + len(good)
    cases = {
        "bad block length 13": good[:4] + struct.pack("<I", 13) + good[8:],
        r"bad block length 92 \(trailer 99\)": good[:-4] + struct.pack("<I", 99),
        "bad block length 3000000000": good[:4] + struct.pack("<I", 3_000_000_000) + good[8:],
        "bad section byte-order magic 01020304": shb("<")[:8] + b"\x01\x02\x03\x04" + shb("<")[12:],
        "caplen 100 exceeds": good[:20] + struct.pack("<I", 100) + good[24:],
        "interface 3 not described": good[:8] + struct.pack("<I", 3) + good[12:],
        "unsupported if_tsresol 20": idb("<", 1, tsresol=20),
        "unsupported if_tsresol 6 or if_tsoffset 9000000000000": idb("<", 1, tsoffset=9 * 10**12),
    }
    for cause, blk in cases.items():
        path = write(tmp_path, "c.pcapng", head + good + blk + good)
        with pytest.raises(InputError, match=f"byte {at}: {cause}"):
            list(PcapFile(path).batches())


# ---- batching and streaming -------------------------------------------------------------------------------------

def test_batch_boundaries_and_max_packets(tmp_path):
    path = write(tmp_path, "ten.pcap", classic([(payload(i, 20 + i), i, i, 20 + i) for i in range(10)]))
    whole = read_all(path)
    assert read_all(path, batch_size=3) == whole
    assert [len(b) for b in PcapFile(path).batches(batch_size=3)] == [3, 3, 3, 1]
    assert read_all(path, batch_size=3, max_packets=4) == whole[:4]
    assert [len(b) for b in PcapFile(path).batches(batch_size=3, max_packets=4)] == [3, 1]
    assert list(PcapFile(path).batches(max_packets=0)) == []
    pf = PcapFile(path)
    list(pf.batches(max_packets=7))
    assert pf.stats.records == 7
    with pytest.raises(ValueError):
        next(PcapFile(path).batches(batch_size=0))


def test_tiny_chunks_give_the_same_packets(tmp_path, monkeypatch):
    content, _ = multi_interface_pcapng()
    sections = content + shb(">") + idb(">", LINKTYPE_RAW) + spb(">", payload(9, 33), 33)
    paths = [write(tmp_path, "a.pcap", classic([(payload(i, 20 + 9 * i), i, i, 20 + 9 * i) for i in range(12)])),
             write(tmp_path, "b.pcapng", sections)]
    want = [read_all(p) for p in paths]
    monkeypatch.setattr(reader, "CHUNK_SIZE", 37)  # records and blocks straddle many chunk boundaries
    for p, w in zip(paths, want, strict=True):
        assert read_all(p, batch_size=4) == w
        assert read_all(p, batch_size=1) == w


def outcome(path: Path, batch_size: int) -> object:
    """The packets, or the byte offset named by the InputError (any other exception fails the test)."""
    try:
        rows, stats = read_with_stats(path, batch_size=batch_size)
    except InputError as e:
        return e.cause.split(":")[0]
    return rows, stats.records, stats.truncated_tail


def test_corrupted_files_fail_cleanly_and_chunking_does_not_matter(tmp_path, monkeypatch):
    content, _ = multi_interface_pcapng()
    seeds = [content + shb(">") + idb(">", LINKTYPE_RAW, 40) + spb(">", payload(1, 40), 90),
             classic([(payload(i, 30 + 17 * i), i, i, 99) for i in range(12)], ">", True)]
    rng = np.random.default_rng(7)
    path = tmp_path / "fuzz"
    for k in range(300):
        blob = bytearray(seeds[k % 2])
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(len(blob)))
            if rng.random() < 0.7:
                blob[at:at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()[:len(blob) - at]
            else:
                del blob[at:]
        path.write_bytes(bytes(blob))
        monkeypatch.setattr(reader, "CHUNK_SIZE", 8 << 20)
        want = outcome(path, 1000)
        monkeypatch.setattr(reader, "CHUNK_SIZE", int(rng.integers(1, 100)))
        assert outcome(path, int(rng.integers(1, 5))) == want, k


# ---- the reference captures against scapy -----------------------------------------------------------------------

def test_reference_captures_match_scapy():
    from scapy.utils import RawPcapNgReader, RawPcapReader

    files = sorted(p for p in PACKETS_DIR.glob("*/*") if p.is_file()) if PACKETS_DIR.is_dir() else []
    if not files:
        pytest.skip("reference captures not present")
    bad = []
    for path in files:
        pf = PcapFile(path)
        with (RawPcapNgReader if pf.format == "pcapng" else RawPcapReader)(str(path)) as r:
            if pf.format == "pcapng":
                want = [(d, 0 if m.tshigh is None else ((m.tshigh << 32) | m.tslow) * NS // m.tsresol, m.wirelen,
                         m.linktype) for d, m in r]
            else:
                unit = 1 if r.nano else 1000
                want = [(d, m.sec * NS + m.usec * unit, m.wirelen, r.linktype) for d, m in r]
        if [g[:4] for g in read_all(path, batch_size=1000)] != want:
            bad.append(path.name)
    assert not bad, f"differ from scapy: {bad}"


# ---- writer -----------------------------------------------------------------------------------------------------

def random_packets(n: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    rng = np.random.default_rng(seed)
    pkts = [rng.integers(0, 256, int(k), dtype=np.uint8).tobytes() for k in rng.integers(0, 1600, n)]
    ts = 1_700_000_000 * NS + np.cumsum(rng.integers(0, 10**9, n))
    return pkts, ts


@pytest.mark.parametrize("nano", [False, True])
def test_writer_round_trip(tmp_path, nano):
    pkts, ts = random_packets(200)
    path = tmp_path / "out.pcap"
    with PcapWriter(path, linktype=LINKTYPE_RAW, nanosecond=nano) as w:
        for p, t in zip(pkts[:50], ts[:50], strict=True):
            w.write(p, int(t))
        w.write_many(pkts[50:], ts[50:])
    assert w.count == 200
    unit = 1 if nano else 1000
    want = [(p, int(t) // unit * unit, len(p), LINKTYPE_RAW, i) for i, (p, t) in enumerate(zip(pkts, ts, strict=True))]
    assert read_all(path, batch_size=64) == want
    assert [f.name for f in tmp_path.iterdir()] == ["out.pcap"]


def test_write_many_equals_write_and_cuts_to_snaplen(tmp_path):
    pkts, ts = random_packets(60, seed=1)
    wire = np.array([len(p) + 5 for p in pkts])
    with PcapWriter(tmp_path / "one.pcap", snaplen=300) as w:
        for p, t, n in zip(pkts, ts, wire, strict=True):
            w.write(p, int(t), int(n))
    with PcapWriter(tmp_path / "many.pcap", snaplen=300) as w:
        w.write_many(pkts, ts, wire)
    assert (tmp_path / "one.pcap").read_bytes() == (tmp_path / "many.pcap").read_bytes()
    got = read_all(tmp_path / "many.pcap")
    assert [g[0] for g in got] == [p[:300] for p in pkts] and [g[2] for g in got] == wire.tolist()


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "keep.pcap"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), PcapWriter(path) as w:
        w.write(b"abc", 0)
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
    w = PcapWriter(tmp_path / "gone.pcap")
    w.abort()
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ValueError), PcapWriter(tmp_path / "x.pcap") as w:
        w.write(b"abc", -1)
    with pytest.raises(ValueError), PcapWriter(tmp_path / "x.pcap") as w:
        w.write_many([b"a", b"b"], np.array([1]))
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_writer_output(tmp_path):
    pkts, ts = random_packets(40, seed=2)
    path = tmp_path / "t.pcap"
    with PcapWriter(path, nanosecond=True) as w:
        w.write_many(pkts, ts)
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len", "-e", "frame.time_epoch"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert [int(r[0]) for r in rows] == [len(p) for p in pkts]
    assert [int(r[1].replace(".", "")) for r in rows] == ts.tolist()


def test_linktype_names():
    assert sorted(RAW_IP_LINKTYPES) == [12, 14, 101, 228, 229]  # DLT_RAW variants, LINKTYPE_IPV4/IPV6
    assert linktypes.name(LINKTYPE_ETHERNET) == "ETHERNET" and linktypes.name(12) == "RAW"
    assert linktypes.name(4242) == "LINKTYPE_4242"
