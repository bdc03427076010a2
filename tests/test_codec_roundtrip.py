"""pcap -> nPrint -> pcap keeps every header byte; nPrint -> image -> nPrint and CSV round trips are exact."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.image import image_to_matrix, load_image, matrix_to_image, save_image, snap
from netdiff_lib.inputs import CAPTURE_SUFFIXES, expand
from netdiff_lib.nprint import encode_pcap, pack_matrix, read_nprint_csv, write_nprint_csv
from netdiff_lib.nprint.csvio import CsvOptions
from netdiff_lib.nprint.encode import iter_encoded
from netdiff_lib.pcap import PcapFile
from netdiff_lib.schema import NETDIFFUSION, Layout, bits_to_uint
from netdiff_lib.trace import Trace, load_trace, save_trace

FULL_ETH = Layout(("eth", "ipv4", "ipv6", "tcp", "udp", "icmp"))


def _header_lengths(enc) -> tuple[np.ndarray, np.ndarray]:
    """(start of Ethernet header, bytes of eth + IP + L4 headers) for every kept packet."""
    loc, k = enc.loc, enc.keep
    l4_end = np.where(loc.proto[k] > 0, loc.l4[k] + loc.l4_len[k], loc.l3[k] + loc.ip_len[k])
    return loc.eth[k], l4_end - loc.eth[k]


def _roundtrip_mismatches(path: Path) -> tuple[int, int]:
    """Encode with eth+IP+L4, decode, and count packets whose header bytes differ (and packets checked)."""
    checked = bad = 0
    for enc in iter_encoded(path, FULL_ETH):
        if not len(enc.keep):
            continue
        eth_start, hdr_len = _header_lengths(enc)
        loc, k = enc.loc, enc.keep
        # VLAN tags and IPv6 extension headers are not nPrint headers: compare the packets without them
        no_ext = (loc.proto[k] == 0) | (loc.l4[k] == loc.l3[k] + loc.ip_len[k])
        simple = (loc.ethertype_at[k] == eth_start + 12) & no_ext
        packed = pack_matrix(enc.matrix, FULL_ETH)
        data = enc.batch.data
        for i in np.flatnonzero(simple & (eth_start >= 0)):
            o, n = int(eth_start[i]), int(hdr_len[i])
            got = packed.data[packed.offsets[i] : packed.offsets[i] + n]
            checked += 1
            bad += int(not np.array_equal(got, data[o : o + n]))
    return checked, bad


def test_roundtrip_samples_preserve_header_bytes(samples_dir: Path) -> None:
    files = expand([samples_dir], CAPTURE_SUFFIXES)
    total = 0
    for f in files:
        checked, bad = _roundtrip_mismatches(f)
        assert bad == 0, f"{f}: {bad} packets changed header bytes"
        total += checked
    assert total > 1000


def test_roundtrip_shared_captures(shared_dir: Path) -> None:
    files = expand([shared_dir / "data" / "packets"], CAPTURE_SUFFIXES)
    total = 0
    for f in files:
        try:
            checked, bad = _roundtrip_mismatches(f)
        except Exception as exc:
            pytest.fail(f"{f}: {exc}")
        assert bad == 0, f"{f}: {bad} packets changed header bytes"
        total += checked
    assert total > 1000


def test_decoded_length_and_zero_payload(samples_dir: Path) -> None:
    path = sorted((samples_dir / "http").glob("*.pcap"))[0]
    trace = encode_pcap(path, FULL_ETH).trace
    packed = pack_matrix(trace.matrix, FULL_ETH)
    wire = [int(b) for batch in PcapFile(path).batches() for b in batch.wirelen]
    # loopback frames: decoded length = 14 + IP total length = original frame length
    assert packed.lengths.tolist() == wire
    ihl = bits_to_uint(trace.matrix[:, FULL_ETH.span("ipv4_hl").slice]).astype(int)
    doff = bits_to_uint(trace.matrix[:, FULL_ETH.span("tcp_doff").slice]).astype(int)
    for pkt, i, d in zip(packed.packets(), ihl, doff, strict=True):
        assert set(pkt[14 + 4 * i + 4 * d :]) <= {0}  # payload zero-filled


def test_array_file_roundtrip(tmp_path: Path, samples_dir: Path) -> None:
    path = sorted((samples_dir / "dns").glob("*.pcap"))[0]
    trace = encode_pcap(path, NETDIFFUSION, label="dns").trace
    save_trace(tmp_path / "t.npz", trace)
    back = load_trace(tmp_path / "t.npz")
    assert np.array_equal(back.matrix, trace.matrix)
    assert np.array_equal(back.ts_ns, trace.ts_ns)
    assert (back.label, back.source, back.layout) == ("dns", str(path), NETDIFFUSION)
    assert list(tmp_path.iterdir()) == [tmp_path / "t.npz"]  # no temporary file left behind


def test_csv_roundtrip_any_layout(tmp_path: Path, samples_dir: Path) -> None:
    path = sorted((samples_dir / "tls").glob("*.pcap"))[0]
    for layout in (NETDIFFUSION, FULL_ETH, Layout(("ipv4", "tcp"), payload_bytes=8)):
        trace = encode_pcap(path, layout, index=0).trace
        buf = io.BytesIO()
        write_nprint_csv(buf, trace, CsvOptions(absolute=True))
        f = tmp_path / "rt.nprint"
        f.write_bytes(buf.getvalue())
        back = read_nprint_csv(f)
        assert back.layout == layout
        assert np.array_equal(back.matrix, trace.matrix)
        assert np.array_equal(back.ts_ns // 1000, trace.ts_ns // 1000)
        assert back.index == trace.index


def test_image_roundtrip_exact(tmp_path: Path, samples_dir: Path) -> None:
    path = sorted((samples_dir / "ssh").glob("*.pcap"))[0]
    trace = encode_pcap(path, NETDIFFUSION).trace
    save_image(tmp_path / "x.png", trace.matrix)
    img_matrix = load_image(tmp_path / "x.png")
    assert np.array_equal(img_matrix, trace.matrix)
    img = matrix_to_image(trace.matrix)
    assert img.size == (1088, 1024) and img.mode == "RGBA"
    rgba = np.asarray(img)
    assert (rgba[len(trace) :, :, :3] == [0, 0, 255]).all()  # padding rows blue
    assert np.array_equal(image_to_matrix(img, trim=False)[: len(trace)], trace.matrix)


def test_snap_rules() -> None:
    px = np.array([[250, 10, 10], [20, 240, 30], [5, 5, 250], [0, 0, 0], [200, 200, 0], [120, 170, 90], [90, 90, 90]])
    assert snap(px, "netdiffusion").tolist() == [1, 0, -1, 1, 1, 0, 1]
    assert snap(px, "nearest").tolist() == [1, 0, -1, 1, 1, 0, 1]
    # where the two rules differ: NetDiffusion's red rule catches a mostly-blue pixel with some red
    assert snap(np.array([[90, 50, 99]]), "netdiffusion").tolist() == [1]
    assert snap(np.array([[60, 50, 99]]), "nearest").tolist() == [-1]


def test_netdiffusion_png_with_index_column_and_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    m = rng.integers(-1, 2, size=(30, 1088)).astype(np.int8)
    m[:, 0] = 0  # a real row is never all -1
    rgba = np.asarray(matrix_to_image(m))
    wide = np.concatenate([np.zeros((1024, 1, 4), np.uint8), rgba], axis=1)  # SD3 conditioning image layout
    from PIL import Image

    assert np.array_equal(image_to_matrix(Image.fromarray(wide, "RGBA")), m)
    noisy = np.clip(rgba[..., :3].astype(int) + rng.integers(-40, 40, size=rgba[..., :3].shape), 0, 255)
    assert np.array_equal(image_to_matrix(Image.fromarray(noisy.astype(np.uint8), "RGB")), m)


def test_trace_layout_conversion(samples_dir: Path) -> None:
    path = sorted((samples_dir / "icmp").glob("*.pcap"))[0]
    full = encode_pcap(path, NETDIFFUSION.full).trace
    small = encode_pcap(path, NETDIFFUSION).trace
    assert np.array_equal(full.with_layout(NETDIFFUSION).matrix, small.matrix)
    assert small.matrix.shape[1] == 1088 and full.matrix.shape[1] == 1408
    with pytest.raises(ValueError):
        Trace(np.zeros((2, 5), np.int8), NETDIFFUSION)
