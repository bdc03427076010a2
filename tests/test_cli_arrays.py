"""decode / reconstruct / render / validate on empty, header-only, noisy, crafted and huge inputs (issue 22).

Every case runs the real command line in a subprocess: bad input is one line naming the file and the cause, exit
status 2 (1 under --keep-going, which goes on with the rest), no traceback and no output file.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdiff_lib.image import WIDTH, matrix_to_rgba
from netdiff_lib.nprint import encode_pcap
from netdiff_lib.nprint.csvio import CsvOptions, write_nprint_csv
from netdiff_lib.pcap import PcapFile, PcapWriter
from netdiff_lib.repair.protocols import packet_rows
from netdiff_lib.repair.timing import PCAP_END_NS
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.trace import ARRAY_FORMAT, Trace, save_trace

S = 1_000_000_000
BIG_ROWS = 200_000  # rows of the compressed "huge" matrix: 218 MB inflated, under 1 MB on disk


def _cli(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netdiff_lib.cli", *map(str, argv)], capture_output=True,
                          text=True, timeout=300)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(captured length, timestamp ns) of every packet of a capture."""
    batches = list(PcapFile(path).batches())
    return (np.concatenate([b.caplen for b in batches] or [np.zeros(0, np.int64)]),
            np.concatenate([b.ts_ns for b in batches] or [np.zeros(0, np.int64)]))


def _refused(proc: subprocess.CompletedProcess, path: Path, cause: str, status: int = 2) -> None:
    """A one-line error that names ``path`` and says ``cause``, no traceback."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if f"{path}: " in ln]
    assert lines and cause in lines[0], proc.stderr


@pytest.fixture(scope="module")
def trace(samples_dir: Path) -> Trace:
    """A real capture's trace (DNS: IPv4/UDP), in the NetDiffusion layout."""
    return encode_pcap(sorted((samples_dir / "dns").glob("*.pcap"))[0], NETDIFFUSION, label="dns").trace


@pytest.fixture
def inputs(tmp_path: Path, trace: Trace) -> dict[str, Path]:
    """A good array file, a header-only nPrint CSV (what nPrint writes for a capture with no IP packets), an
    empty file, and an ARP-only capture."""
    d = tmp_path / "in"
    d.mkdir()
    save_trace(d / "good.npz", trace)
    with open(d / "header_only.nprint", "wb") as fh:
        write_nprint_csv(fh, trace.head(0), CsvOptions(relative=True))
    (d / "empty.nprint").write_bytes(b"")
    arp = bytes.fromhex("ffffffffffff020000000001" "0806" "0001080006040001" "020000000001c0000201"
                        "000000000000c0000202")
    with PcapWriter(tmp_path / "arp.pcap") as w:
        w.write(arp, 1_700_000_000 * S)
        w.write(arp, 1_700_000_001 * S)
    return {"dir": d, "good": d / "good.npz", "header_only": d / "header_only.nprint",
            "empty": d / "empty.nprint", "arp": tmp_path / "arp.pcap"}


# ------------------------------------------------------------------------------------ nothing to write

@pytest.mark.parametrize("command", ["decode", "reconstruct", "render"])
def test_header_only_csv_is_nothing_to_write(tmp_path: Path, inputs: dict[str, Path], command: str) -> None:
    out = tmp_path / "out"
    _refused(_cli(command, inputs["header_only"], "-o", out, "-q"), inputs["header_only"],
             "nothing to write: the file holds no packet rows")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", ["decode", "reconstruct"])
def test_empty_csv_names_the_file(tmp_path: Path, inputs: dict[str, Path], command: str) -> None:
    _refused(_cli(command, inputs["empty"], "-o", tmp_path / "out", "-q"), inputs["empty"], "an empty file")


@pytest.mark.parametrize("command", ["decode", "reconstruct", "render"])
def test_keep_going_counts_nothing_to_write_and_goes_on(tmp_path: Path, inputs: dict[str, Path],
                                                        command: str) -> None:
    out = tmp_path / "out"
    proc = _cli(command, inputs["dir"], "-o", out, "--keep-going", "-q")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "files: 1 done, 2 failed" in proc.stderr
    assert f"{inputs['header_only']}: nothing to write" in proc.stderr and f"{inputs['empty']}: " in proc.stderr
    assert [p.name for p in out.iterdir()] == ["good.png" if command == "render" else "good.pcap"]


def test_render_refuses_what_encode_refuses(tmp_path: Path, inputs: dict[str, Path]) -> None:
    enc = _cli("encode", inputs["arp"], "-o", tmp_path / "enc", "-q")
    ren = _cli("render", inputs["arp"], "-o", tmp_path / "img", "-q")
    _refused(enc, inputs["arp"], "no packet to encode")
    _refused(ren, inputs["arp"], "no packet to encode (2 read; non-IP frame: 2)")
    def cause(proc: subprocess.CompletedProcess) -> str:
        return next(ln for ln in proc.stderr.splitlines() if "error:" in ln).split("error: ", 1)[1]

    assert cause(enc) == cause(ren)
    assert not (tmp_path / "img").exists() or not any((tmp_path / "img").iterdir())


def test_render_refuses_shared_captures_that_encode_refuses(tmp_path: Path, shared_dir: Path) -> None:
    """The tcpdump test captures that encode rejects (no IP packet, ...): render says the same."""
    from netdiff_lib.errors import InputError

    rejected: list[tuple[Path, str]] = []
    for path in sorted((shared_dir / "data" / "packets").rglob("*.pcap*")):
        if path.stat().st_size > 1 << 20:
            continue
        try:
            encode_pcap(path, NETDIFFUSION.full, max_packets=1024).require_packets(path)
        except InputError as exc:
            rejected.append((path, exc.cause))
        if len(rejected) == 3:
            break
    if not rejected:
        pytest.skip("no capture in the shared data that encode rejects")
    for path, cause in rejected:
        _refused(_cli("render", path, "-o", tmp_path / "img", "-q"), path, cause)
    assert not (tmp_path / "img").exists() or not any((tmp_path / "img").iterdir())


def test_validate_empty_pcap_is_not_ok(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    PcapWriter(empty).close()
    tools = ["builtin"] + (["tshark"] if shutil.which("tshark") else [])
    for tool in tools:
        proc = _cli("validate", "--tool", tool, empty)
        assert proc.returncode == 1 and f"{empty}: FAILED ({tool}): no packets" in proc.stdout, proc.stdout


# ------------------------------------------------------------------------------------ noisy images

def _noisy_image(path: Path, trace: Trace, sigma: float = 75.0) -> None:
    """The trace's NetDiffusion image with Gaussian colour noise: after snapping, padding rows hold a few
    red/green cells, as generated and colour-processed images do."""
    rgb = matrix_to_rgba(trace.matrix)[..., :3].astype(np.float64)
    rgb += np.random.default_rng(0).normal(0.0, sigma, rgb.shape)
    Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8), "RGB").save(path)


def test_noisy_padding_rows_are_padding(tmp_path: Path, trace: Trace) -> None:
    img = tmp_path / "noisy_01.png"
    _noisy_image(img, trace)
    proc = _cli("decode", img, "-o", tmp_path / "dec", "-q")
    assert proc.returncode == 0, proc.stderr
    lengths, _ = _read(tmp_path / "dec" / "noisy_01.pcap")
    assert 0 < len(lengths) <= len(trace) and lengths.min() > 0  # no zero-length frames
    padding = 1024 - len(trace)
    assert f"padding rows: {padding}" in proc.stderr
    rec = _cli("reconstruct", img, "-o", tmp_path / "rec", "-q", "--report", tmp_path / "r.json")
    assert rec.returncode == 0, rec.stderr
    assert json.loads((tmp_path / "r.json").read_text())[0]["padding_rows"] == padding  # one rule for both


@pytest.mark.parametrize(("mode", "size"), [("RGB", (WIDTH, 5 * 1024)), ("1", (20_000, 20_000))])
def test_oversized_images_are_refused_before_decoding(tmp_path: Path, mode: str, size: tuple[int, int]) -> None:
    img = tmp_path / "big_01.png"
    Image.new(mode, size).save(img)  # too tall for a trace; a decompression bomb (400 M pixels in 60 KB)
    _refused(_cli("decode", img, "-o", tmp_path / "dec", "-q"), img, "not a NetDiffusion image")


def test_padding_rule(trace: Trace) -> None:
    rng = np.random.default_rng(1)
    pad = np.full((200, NETDIFFUSION.width), -1, np.int8)
    speckle = rng.random(pad.shape) < 0.2  # a fifth of the cells snapped to 0/1
    pad[speckle] = rng.integers(0, 2, int(speckle.sum()))
    assert not packet_rows(pad, NETDIFFUSION).any()
    assert packet_rows(trace.matrix, NETDIFFUSION).all()
    assert (trace.matrix == -1).mean() > 0.5  # why "most cells are -1" cannot be the rule: real rows are, too


# ------------------------------------------------------------------------------------ times past 2106

def _pcapng(path: Path, packets: list[bytes], ts_ns: np.ndarray) -> Path:
    """A little-endian pcapng (one Ethernet interface, microsecond ticks): 64-bit times, so past 2106 too."""
    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + block(1, struct.pack("<HHI", 1, 0, 0))
    for data, ts in zip(packets, ts_ns.tolist(), strict=True):
        ticks = ts // 1000
        out += block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data)
    path.write_bytes(out)
    return path


def test_reconstruct_rebases_times_past_2106(tmp_path: Path, samples_dir: Path) -> None:
    """The array that encode makes of a capture whose times pass 2106: decode refuses it clearly, reconstruct
    moves the times into the pcap range, keeps every gap and says so."""
    src = sorted((samples_dir / "dns").glob("*.pcap"))[0]
    packets = [b.packet(i) for b in PcapFile(src).batches() for i in range(len(b))]
    gaps = np.full(len(packets), S, np.int64)  # 1 s
    gaps[len(packets) // 2] = 4_190_000_000 * S  # 133 years: from 2024 the last packets would pass 2106
    ts = 110_000_000 * S + np.cumsum(gaps)  # 1973 .. 2106 + 3 months
    assert ts[-1] >= PCAP_END_NS
    enc = _cli("encode", _pcapng(tmp_path / "late_01.pcapng", packets, ts), "-o", tmp_path / "enc", "-q")
    assert enc.returncode == 0, enc.stderr
    path = tmp_path / "enc" / "late_01.npz"
    _refused(_cli("decode", path, "-o", tmp_path / "dec", "-q"), path, "outside what a pcap holds")
    proc = _cli("reconstruct", path, "-o", tmp_path / "rec", "-q", "--report", tmp_path / "r.json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    notes = json.loads((tmp_path / "r.json").read_text())[0]["notes"]
    assert len(notes) == 1 and "moved" in notes[0] and "moved" in proc.stderr
    _, out = _read(tmp_path / "rec" / "late_01.pcap")
    assert len(out) == len(packets) and np.abs(np.diff(out) - np.diff(ts)).max() <= 1000  # every gap kept
    assert out.max() < PCAP_END_NS


@pytest.mark.parametrize("name", ["babel_update_oobr.pcap", "olsr-oobr-1.pcap"])
def test_tcpdump_captures_with_times_past_2106(tmp_path: Path, shared_dir: Path, name: str) -> None:
    """tcpdump's own fuzzed test captures: encode keeps their times; reconstruct fits them into a pcap."""
    found = sorted((shared_dir / "data" / "packets").rglob(name))
    if not found:
        pytest.skip(f"{name} is not in the shared data")
    enc = _cli("encode", found[0], "-o", tmp_path / "enc", "-q")
    assert enc.returncode == 0, enc.stderr
    arrays = list((tmp_path / "enc").glob("*.npz"))
    proc = _cli("reconstruct", *arrays, "-o", tmp_path / "rec", "-q")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    _, ts = _read(tmp_path / "rec" / f"{arrays[0].stem}.pcap")
    assert len(ts) and ts.max() < PCAP_END_NS


def test_times_no_pcap_can_hold_are_refused(tmp_path: Path, trace: Trace) -> None:
    ts = np.arange(len(trace), dtype=np.int64) * (1 << 58)  # spans 5.5e9 s
    path = tmp_path / "far_01.npz"
    save_trace(path, Trace(trace.matrix, trace.layout, ts, "dns", None))
    _refused(_cli("reconstruct", path, "-o", tmp_path / "rec", "-q"), path, "more than a pcap holds")
    assert not (tmp_path / "rec").exists() or not any((tmp_path / "rec").iterdir())


# ------------------------------------------------------------------------------------ crafted array files

def _header(layout: object = None) -> np.ndarray:
    h = {"format": ARRAY_FORMAT, "layout": (layout or NETDIFFUSION).to_dict(), "label": "x", "source": None,
         "meta": {}}
    return np.frombuffer(json.dumps(h).encode(), np.uint8)


def _crafted(path: Path, case: str, trace: Trace) -> Path:
    m, ts = trace.matrix, trace.ts_ns
    if case == "truncated":
        save_trace(path, trace)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "damaged inside":  # the zip directory intact, the matrix's compressed bytes not
        rng = np.random.default_rng(2)
        save_trace(path, Trace(rng.integers(-1, 2, (4096, m.shape[1])).astype(np.int8), trace.layout))
        data = bytearray(path.read_bytes())
        data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
    elif case == "zero rows":
        np.savez_compressed(path, matrix=m[:0], ts_ns=ts[:0], header=_header())
    elif case == "wrong width":
        np.savez_compressed(path, matrix=np.zeros((601, 10), np.int8), header=_header())
    elif case == "timestamps of another length":
        np.savez_compressed(path, matrix=m, ts_ns=ts[:5], header=_header())
    elif case == "declared size larger than stored":
        np.savez_compressed(path, matrix=m, header=_header())
        with zipfile.ZipFile(path) as z:
            parts = {n: z.read(n) for n in z.namelist()}
        parts["matrix.npy"] = parts["matrix.npy"].replace(f"({len(m)}, ".encode(), b"(1000000, ", 1)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in parts.items():
                z.writestr(name, data)
    return path


CRAFTED = {
    "truncated": "not a complete .npz zip archive",
    "damaged inside": "not a netdiff array file",
    "zero rows": "nothing to write: the file holds no packet rows",
    "wrong width": "the layout needs (packets, 1088) integers",
    "timestamps of another length": "one integer per packet row",
    "declared size larger than stored": "declares 1,088,000,000 data bytes",
}


@pytest.mark.parametrize("command", ["decode", "reconstruct"])
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_array_files(tmp_path: Path, trace: Trace, case: str, command: str) -> None:
    path = _crafted(tmp_path / "crafted.npz", case, trace)
    _refused(_cli(command, path, "-o", tmp_path / "out", "-q"), path, CRAFTED[case])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------------ huge matrices

@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``BIG_ROWS`` x 1088 matrix of zeros (each row an IPv4 packet to decode) in a small ``.npz``, written a
    block at a time."""
    from numpy.lib import format as npformat

    path = tmp_path_factory.mktemp("huge") / "huge_01.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("header.npy", "w") as fh:
            npformat.write_array(fh, _header())
        with z.open("matrix.npy", "w", force_zip64=True) as fh:
            npformat.write_array_header_1_0(fh, {"descr": "|i1", "fortran_order": False,
                                                 "shape": (BIG_ROWS, NETDIFFUSION.width)})
            block = bytes(NETDIFFUSION.width * 4096)
            for start in range(0, BIG_ROWS, 4096):
                fh.write(block[: NETDIFFUSION.width * min(4096, BIG_ROWS - start)])
    assert path.stat().st_size < 2 << 20
    return path


def _peak_rss(*argv: object) -> tuple[int, str, int]:
    """Run the command line in a fresh interpreter; (exit status, stderr, its peak resident memory in bytes)."""
    code = ("import resource, sys; from netdiff_lib.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=300)
    *rest, peak = proc.stderr.rstrip().splitlines()
    return proc.returncode, "\n".join(rest), int(peak)


def test_huge_matrix_memory_stays_bounded(tmp_path: Path, huge: Path, inputs: dict[str, Path]) -> None:
    inflated = BIG_ROWS * NETDIFFUSION.width
    _, _, base = _peak_rss("decode", inputs["good"], "-o", tmp_path / "small", "-q")
    rc, err, peak = _peak_rss("decode", huge, "-o", tmp_path / "dec", "-q")
    assert rc == 0 and f"packets kept: {BIG_ROWS}" in err, err
    assert peak - base < inflated // 2, (peak, base)  # streamed: far less than the inflated matrix
    assert len(_read(tmp_path / "dec" / "huge_01.pcap")[0]) == BIG_ROWS
    rc, err, peak = _peak_rss("render", huge, "-o", tmp_path / "img", "-q")
    assert rc == 0 and "packets kept: 1024" in err and peak - base < inflated // 4, (err, peak, base)
    rc, err, peak = _peak_rss("reconstruct", huge, "-o", tmp_path / "rec", "-q")
    assert rc == 2 and f"{huge}: 200,000 packet rows, more than the 65,536" in err, err
    assert peak - base < inflated // 4 and not (tmp_path / "rec" / "huge_01.pcap").exists()
