"""Captures are read once, in one pass: a FIFO, ``/dev/stdin`` fed by a pipe and bash's ``<(...)`` work in
`encode`, `nprint` and `render` and give what the same capture as a regular file gives.

Every run has a timeout, so that a reader opening its input twice (the second open of a FIFO blocks for ever)
fails instead of hanging the suite."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.errors import InputError
from netdiff_lib.pcap import PcapFile

REPO = Path(__file__).resolve().parents[1]
CAPTURE = REPO / "samples" / "captures" / "http" / "http_08.pcap"  # 200 KB: more than a pipe holds at once
CLI = [sys.executable, "-m", "netdiff_lib.cli"]
TIMEOUT = 60


def _feed(fifo: Path, data: bytes, piece: int = 1 << 30) -> threading.Thread:
    """A thread writing ``data`` into ``fifo`` (in pieces of ``piece`` bytes) once a reader opens it."""

    def write() -> None:
        try:
            fd = os.open(fifo, os.O_WRONLY)
            try:
                for i in range(0, len(data), piece):
                    os.write(fd, data[i:i + piece])
            finally:
                os.close(fd)
        except BrokenPipeError:  # a reader that closed early: the test's assertions say what went wrong
            pass

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def _fifo(tmp_path: Path, name: str = "stream.pcap") -> Path:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    _feed(fifo, CAPTURE.read_bytes())
    return fifo


def _run(*args: str, **kw: object) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, cwd=REPO, timeout=TIMEOUT, **kw)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def _bash(command: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", command], capture_output=True, cwd=REPO, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def _packets(pcap: PcapFile) -> list[tuple[bytes, int]]:
    return [(b.packet(i), int(b.ts_ns[i])) for b in pcap.batches(batch_size=7) for i in range(len(b))]


def test_pcap_file_reads_a_fifo_once_in_one_pass(tmp_path: Path) -> None:
    fifo = tmp_path / "slow.pcap"
    os.mkfifo(fifo)
    _feed(fifo, CAPTURE.read_bytes(), piece=5)  # the header and every record arrive in parts
    got: list = []
    reader = threading.Thread(target=lambda: got.append((pf := PcapFile(fifo), _packets(pf))), daemon=True)
    reader.start()
    reader.join(TIMEOUT)
    assert got, "reading the FIFO did not finish"
    pcap, packets = got[0]
    assert packets == _packets(PcapFile(CAPTURE)) and pcap.size is None and not pcap.stats.truncated_tail
    with pytest.raises(InputError, match="read only once"):
        next(pcap.batches())
    regular = PcapFile(CAPTURE)
    assert _packets(regular) == _packets(regular)  # a regular file may be read again


def test_nprint_reads_a_fifo_stdin_and_process_substitution(tmp_path: Path) -> None:
    flags = ["-4", "-t", "-u", "-R"]
    want = _run("nprint", "-P", str(CAPTURE), *flags).stdout
    assert want.count(b"\n") > 20
    assert _run("nprint", "-P", str(_fifo(tmp_path)), *flags).stdout == want
    assert _run("nprint", "-P", "/dev/stdin", *flags, stdin=CAPTURE.open("rb")).stdout == want  # a regular file
    cli, cap, f = shlex.join(CLI), shlex.quote(str(CAPTURE)), " ".join(flags)
    assert _bash(f"cat {cap} | {cli} nprint -P /dev/stdin {f}").stdout == want
    assert _bash(f"{cli} nprint -P <(cat {cap}) {f}").stdout == want


def test_nprint_reads_a_hex_csv_from_a_fifo(tmp_path: Path) -> None:
    batch = next(PcapFile(CAPTURE).batches())
    text = "id,label,hexpkt\n" + "".join(f"{i},http,{batch.packet(i).hex()}\n" for i in range(20))
    (tmp_path / "hex.csv").write_text(text)
    want = _run("nprint", "-C", str(tmp_path / "hex.csv"), "-4", "-t").stdout
    fifo = tmp_path / "hex.fifo"
    os.mkfifo(fifo)
    _feed(fifo, text.encode())
    assert _run("nprint", "-C", str(fifo), "-4", "-t").stdout == want


@pytest.mark.parametrize("command", ["encode", "render"])
def test_encode_and_render_read_a_fifo_and_process_substitution(command: str, tmp_path: Path) -> None:
    ext = ".npz" if command == "encode" else ".png"
    _run(command, str(CAPTURE), "-o", str(tmp_path / "file"), "-q")
    want = (tmp_path / "file" / f"{CAPTURE.stem}{ext}").read_bytes() if ext == ".png" else None
    _run(command, str(_fifo(tmp_path)), "-o", str(tmp_path / "fifo"), "-q")
    _bash(f"{shlex.join(CLI)} {command} <(cat {shlex.quote(str(CAPTURE))}) -o {tmp_path / 'subst'} -q")
    outs = [tmp_path / "fifo" / f"stream{ext}", *(tmp_path / "subst").glob(f"*{ext}")]
    assert len(outs) == 2
    for out in outs:
        if want is not None:
            assert out.read_bytes() == want
        else:
            with np.load(tmp_path / "file" / f"{CAPTURE.stem}.npz") as a, np.load(out) as b:
                assert len(a["matrix"]) > 20 and np.array_equal(a["matrix"], b["matrix"])


def test_stream_that_is_no_capture_is_named(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", "-c", f"{shlex.join(CLI)} render <(echo hello) -o {tmp_path} -q"],
                          capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert "/dev/fd/" in proc.stderr and "not a pcap or pcapng file" in proc.stderr
