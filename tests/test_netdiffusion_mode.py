"""NetDiffusion's conventions: `render/encode --mode netdiffusion` give NetDiffusion's own images pixel for
pixel; nPrint CSV as pandas writes it (floats, empty cells, index column) reads without a traceback; `decode`
trims padding rows of a CSV as of a PNG."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdiff_lib.cli import main
from netdiff_lib.nprint.compat import NprintJob, write_csv
from netdiff_lib.nprint.csvio import CsvOptions
from netdiff_lib.schema import NETDIFFUSION_FULL

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "data" / "nprint-samples-cases.tsv"
ND_FLAGS = "-F -1 -4 -6 -t -u -i -p 0 -c 1024"
SHARED = Path(os.environ.get("NETDIFF_SHARED") or REPO.parent / "shared")
ADDRESS_COLUMNS = ("ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "src_ip")
COLOURS = {1: (255, 0, 0, 255), 0: (0, 255, 0, 255), -1: (0, 0, 255, 255)}


def netdiffusion_image(nprint_csv: bytes) -> np.ndarray:
    """NetDiffusion's pcap_to_img.py / nprint_to_png.py, written out: drop every column whose name contains an
    address name, pad to 1,024 rows with blue, 1 red / 0 green / -1 blue, RGBA."""
    lines = nprint_csv.decode().splitlines()
    header = lines[0].split(",")
    keep = [i for i, c in enumerate(header) if not any(a in c for a in ADDRESS_COLUMNS)]
    canvas = np.zeros((1024, len(keep), 4), np.uint8)
    canvas[:] = COLOURS[-1]
    for r, line in enumerate(lines[1:1025]):
        cells = line.split(",")
        canvas[r] = [COLOURS[int(cells[i])] for i in keep]
    return canvas


def _nprint_bytes(pcap: Path) -> bytes:
    buf = io.BytesIO()
    write_csv(NprintJob(pcap=str(pcap), blocks=NETDIFFUSION_FULL.blocks, count=1024, csv=CsvOptions()), buf)
    return buf.getvalue()


def _captures() -> list[Path]:
    rows = [ln.split("\t") for ln in CASES.read_text().splitlines()[1:] if ln.strip()]
    found = [REPO / r[0] for r in rows if r[1] == ND_FLAGS]
    extra = SHARED / "golden" / "nprint" / "pcaps" / "iot_huebridge.pcap"  # ARP, EAPoL, ICMPv6 (issue 14)
    return found + ([extra] if extra.is_file() else [])


def test_netdiffusion_mode_images_equal_netdiffusions_own(tmp_path: Path) -> None:
    want_sha = {ln.split("\t")[0]: ln.split("\t")[3] for ln in CASES.read_text().splitlines()[1:]
                if ln.split("\t")[1:2] == [ND_FLAGS]}
    captures = _captures()
    assert len(captures) >= 50
    folder = tmp_path / "in"
    folder.mkdir()
    for i, pcap in enumerate(captures):
        (folder / f"{i:02d}_{pcap.name}").symlink_to(pcap)
    status = main(["render", str(folder), "-o", str(tmp_path / "png"), "--mode", "netdiffusion", "--keep-going",
                   "-q"])
    empty = 0
    for i, pcap in enumerate(captures):
        csv = _nprint_bytes(pcap)  # what NetDiffusion's nprint command writes (checked against nPrint's hash)
        key = str(pcap.relative_to(REPO)) if pcap.is_relative_to(REPO) else None
        if key in want_sha:
            assert hashlib.sha256(csv).hexdigest() == want_sha[key]
        png = tmp_path / "png" / f"{i:02d}_{pcap.stem}.png"
        if csv.count(b"\n") == 1:  # no row: NetDiffusion's image would be all padding; render says so instead
            assert not png.exists(), pcap.name
            empty += 1
            continue
        assert np.array_equal(np.asarray(Image.open(png)), netdiffusion_image(csv)), pcap.name
    assert status == (1 if empty else 0)


def test_default_mode_keeps_icmpv6_that_netdiffusion_drops(samples_dir: Path) -> None:
    from netdiff_lib.nprint.encode import encode_pcap

    counts = [(len(encode_pcap(p, mode="netdiff").trace), len(encode_pcap(p, mode="nprint", max_packets=1024,
                                                                        count_read=True).trace))
              for p in sorted((samples_dir / "icmp").glob("*.pcap"))]
    assert all(ours >= theirs for ours, theirs in counts)
    assert any(ours > theirs for ours, theirs in counts)  # the ICMPv6 echoes nPrint (so NetDiffusion) drops


PANDAS_STYLE = [
    ("floats", lambda v: f"{v}.0"),
    ("empty_for_absent", lambda v: "" if v == -1 else str(v)),
]


@pytest.mark.parametrize(("name", "cell"), PANDAS_STYLE, ids=[p[0] for p in PANDAS_STYLE])
def test_pandas_written_csv_reads_and_decodes(name: str, cell, tmp_path: Path, samples_dir: Path) -> None:
    pcap = samples_dir / "dns" / "dns_01.pcap"
    assert main(["encode", str(pcap), "-o", str(tmp_path / "enc"), "--format", "csv", "-q"]) == 0
    lines = (tmp_path / "enc" / "dns_01.nprint").read_text().splitlines()
    header = lines[0].split(",")
    first = header.index("ipv4_ver_0")
    body = [",".join([str(r)] + [cell(int(v)) for v in ln.split(",")[first:]]) for r, ln in enumerate(lines[1:])]
    pad = ",".join([str(len(body))] + [cell(-1)] * (len(header) - first))
    pandas = tmp_path / "in" / f"{name}.nprint"
    pandas.parent.mkdir()
    pandas.write_text(",".join(["", *header[first:]]) + "\n" + "\n".join(body + [pad] * 5) + "\n")
    assert main(["decode", str(pandas), str(tmp_path / "enc" / "dns_01.nprint"), "-o", str(tmp_path / "out"),
                 "-q"]) == 0
    assert (tmp_path / "out" / f"{name}.pcap").read_bytes()[24:] == (tmp_path / "out" / "dns_01.pcap").read_bytes()[
        24:] or _same_packets(tmp_path / "out" / f"{name}.pcap", tmp_path / "out" / "dns_01.pcap")


def _same_packets(a: Path, b: Path) -> bool:
    from netdiff_lib.pcap import PcapFile

    pa = [bt.packet(i) for bt in PcapFile(a).batches() for i in range(len(bt))]
    pb = [bt.packet(i) for bt in PcapFile(b).batches() for i in range(len(bt))]
    return pa == pb


BAD_CSVS = {
    "text_cell": "src_ip,ipv4_ver_0,ipv4_ver_1,ipv4_ver_2,ipv4_ver_3\n1.2.3.4,0,1,x,0\n",
    "two_cell": "src_ip,ipv4_ver_0,ipv4_ver_1,ipv4_ver_2,ipv4_ver_3\n1.2.3.4,0,1,2,0\n",
    "short_row": "src_ip,ipv4_ver_0,ipv4_ver_1,ipv4_ver_2,ipv4_ver_3\n1.2.3.4,0,1\n",
    "no_bits": "a,b,c\n1,2,3\n",
    "binary": "\x89PNG\r\n\x1a\n\x00\x00",
    "bad_rts": "src_ip,rts,ipv4_ver_0,ipv4_ver_1,ipv4_ver_2,ipv4_ver_3\n1.2.3.4,abc,0,1,0,0\n",
}


@pytest.mark.parametrize("name", list(BAD_CSVS))
def test_bad_csv_is_a_clear_error_never_a_traceback(name: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in" / f"{name}.nprint"
    src.parent.mkdir()
    src.write_bytes(BAD_CSVS[name].encode("latin-1"))
    assert main(["decode", str(src), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "Traceback" not in err
    assert main(["decode", str(src), "-o", str(tmp_path / "out"), "-q", "--keep-going"]) == 1
    assert "failed: 1" in capsys.readouterr().err.replace("1 failed", "failed: 1")
