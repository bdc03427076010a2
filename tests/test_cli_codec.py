"""`netdiff encode / render / decode / nprint` end to end, including bad input and --keep-going."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.cli import main
from netdiff_lib.errors import InputError
from netdiff_lib.nprint import encode_pcap
from netdiff_lib.pcap import PcapFile
from netdiff_lib.schema import NETDIFFUSION
from netdiff_lib.trace import load_trace


@pytest.fixture
def captures(tmp_path: Path, samples_dir: Path) -> Path:
    """A folder with two real sample captures."""
    d = tmp_path / "in"
    d.mkdir()
    for label in ("dns", "http"):
        shutil.copy(sorted((samples_dir / label).glob("*.pcap"))[0], d / f"{label}_01.pcap")
    return d


def _corrupt(folder: Path) -> Path:
    bad = folder / "broken_01.pcap"
    bad.write_bytes(b"this is not a capture at all")
    return bad


def test_encode_render_decode(tmp_path: Path, captures: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "enc"
    assert main(["encode", str(captures), "-o", str(out), "--format", "both", "-q"]) == 0
    err = capsys.readouterr().err
    assert "files: 2 done, 0 failed" in err and "packets kept:" in err
    assert sorted(p.name for p in out.iterdir()) == ["dns_01.nprint", "dns_01.npz", "http_01.nprint", "http_01.npz"]
    t = load_trace(out / "dns_01.npz")
    assert t.label == "dns" and t.layout == NETDIFFUSION and len(t) > 5
    assert (out / "dns_01.nprint").read_text().startswith("src_ip,rts,ipv4_ver_0")

    img = tmp_path / "img"
    assert main(["render", str(out / "dns_01.npz"), str(captures / "http_01.pcap"), "-o", str(img), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["dns_01.png", "http_01.png"]

    assert main(["decode", str(tmp_path / "img"), "-o", str(tmp_path / "pcap"), "-q"]) == 0
    back = encode_pcap(tmp_path / "pcap" / "dns_01.pcap", NETDIFFUSION).trace
    assert np.array_equal(back.matrix, t.matrix)  # image -> pcap -> nPrint keeps every encoded bit
    if shutil.which("tshark"):
        proc = subprocess.run(["tshark", "-r", str(tmp_path / "pcap" / "http_01.pcap")], capture_output=True)
        assert proc.returncode == 0 and proc.stdout.count(b"\n") == len(load_trace(out / "http_01.npz"))


def test_bad_file_stops_the_batch_without_partial_output(tmp_path: Path, captures: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    bad = _corrupt(captures)
    out = tmp_path / "enc"
    assert main(["encode", str(captures), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "magic" in err
    assert not out.exists() or not any(out.iterdir())  # broken_01 sorts first: nothing written, no temporary files


def test_keep_going_reports_and_continues(tmp_path: Path, captures: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _corrupt(captures)
    out = tmp_path / "enc"
    assert main(["encode", str(captures), "-o", str(out), "--keep-going", "-q"]) == 1
    err = capsys.readouterr().err
    assert "files: 2 done, 1 failed" in err and str(bad) in err
    assert sorted(p.name for p in out.iterdir()) == ["dns_01.npz", "http_01.npz"]


def test_truncated_capture_is_a_counted_skip(tmp_path: Path, captures: Path, capsys: pytest.CaptureFixture) -> None:
    src = captures / "http_01.pcap"
    cut = tmp_path / "cut_01.pcap"
    cut.write_bytes(src.read_bytes()[:-7])
    full = encode_pcap(src).trace
    res = encode_pcap(cut)
    assert len(res.trace) == len(full) - 1
    assert res.skipped["record cut at end of file"] == 1
    assert main(["encode", str(cut), "-o", str(tmp_path / "o")]) == 0
    assert "record cut at end of file: 1" in capsys.readouterr().err


def test_empty_capture_and_empty_folder(tmp_path: Path, captures: Path, capsys: pytest.CaptureFixture) -> None:
    src = captures / "dns_01.pcap"
    header_only = tmp_path / "empty_01.pcap"
    header_only.write_bytes(src.read_bytes()[:24])
    assert len(list(PcapFile(header_only).batches())) == 0
    assert main(["encode", str(header_only), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert f"{header_only}: no packet to encode (0 read" in capsys.readouterr().err
    (tmp_path / "none").mkdir()
    assert main(["encode", str(tmp_path / "none"), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert "none: no input files" in capsys.readouterr().err
    with pytest.raises(InputError, match="magic"):
        PcapFile(_corrupt(tmp_path))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_nprint_dropin_reverse(tmp_path: Path, captures: Path) -> None:
    csv = tmp_path / "x.nprint"
    src = captures / "http_01.pcap"
    assert main(["nprint", "-P", str(src), "-4", "-t", "-u", "-i", "-p", "2000", "-W", str(csv)]) == 0
    assert main(["nprint", "-N", str(csv), "-W", str(tmp_path / "x.pcap")]) == 0
    batches = list(PcapFile(tmp_path / "x.pcap").batches())
    assert (batches[0].ts_ns == 0).all()  # as nPrint: timestamps 0
    again = tmp_path / "y.nprint"
    flags = ["-4", "-t", "-u", "-i", "-p", "2000"]
    assert main(["nprint", "-P", str(tmp_path / "x.pcap"), *flags, "-W", str(again)]) == 0
    assert again.read_bytes() == csv.read_bytes()  # header and payload bytes survive the round trip
