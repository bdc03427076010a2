"""Outputs are renamed into place only over a new path or a regular file: a device (``-W /dev/null`` as root), a
FIFO, or a link to one (``/proc/self/fd/1``) is written in place and stays what it was; a link to a regular
file stays a link.  Symbolic link loops are named as such, for inputs and outputs.

The device case uses a copy of /dev/null's node (char 1,3) made with mknod in a temporary folder (root only):
the real /dev/null is never a target, since the bug under test would replace it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from netdiff_lib.atomic import atomic_open, write_json
from netdiff_lib.cli import main
from netdiff_lib.destination import check_output_dir
from netdiff_lib.errors import OutputError

REPO = Path(__file__).resolve().parents[1]
DNS = REPO / "samples" / "captures" / "dns" / "dns_01.pcap"
TIMEOUT = 60


def _nprint(*args: str, capture: bool = True, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netdiff_lib.cli", "nprint", *args], capture_output=capture,
                          cwd=REPO, timeout=TIMEOUT, **kw)


def _reader(path: Path) -> tuple[threading.Thread, list[bytes]]:
    """A thread reading ``path`` (a FIFO) to its end; what it read lands in the list."""
    got: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as fh:
            got.append(fh.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, got


@pytest.fixture
def expected_csv(tmp_path: Path) -> bytes:
    out = tmp_path / "regular.csv"
    assert _nprint("-P", str(DNS), "-4", "-u", "-W", str(out)).returncode == 0
    return out.read_bytes()


def test_nprint_into_a_fifo_writes_in_place(tmp_path: Path, expected_csv: bytes) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    t, got = _reader(fifo)
    proc = _nprint("-P", str(DNS), "-4", "-u", "-W", str(fifo))
    t.join(10)  # the writer is done: the reader has had everything
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert got == [expected_csv]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo", "regular.csv"]  # no temporary file left


def test_nprint_into_a_link_to_a_fifo_keeps_both(tmp_path: Path, expected_csv: bytes) -> None:
    fifo, link = tmp_path / "out.fifo", tmp_path / "link.csv"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    t, got = _reader(fifo)
    proc = _nprint("-P", str(DNS), "-4", "-u", "-W", str(link))
    t.join(10)  # the writer is done: the reader has had everything
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(fifo) and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert got == [expected_csv]


def test_nprint_into_proc_self_fd_1_reaches_stdout(tmp_path: Path, expected_csv: bytes) -> None:
    link = tmp_path / "stdout.csv"
    link.symlink_to("/proc/self/fd/1")
    proc = _nprint("-P", str(DNS), "-4", "-u", "-W", str(link))  # stdout is a pipe to this test
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected_csv
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"


def test_nprint_into_a_link_to_stdout_that_is_a_file(tmp_path: Path, expected_csv: bytes) -> None:
    """A script's ``-W /dev/stdout`` with stdout a regular file it reads back: the output reaches that open
    file, not a new file at its path (a link in the test folder stands for /dev/stdout)."""
    link = tmp_path / "stdout.csv"
    link.symlink_to("/proc/self/fd/1")
    with open(tmp_path / "captured", "w+b") as stdout:
        proc = _nprint("-P", str(DNS), "-4", "-u", "-W", str(link), stdout=stdout, stderr=subprocess.PIPE,
                       capture=False)
        stdout.seek(0)
        assert proc.returncode == 0 and stdout.read() == expected_csv
    assert link.is_symlink()


def test_char_device_stays_a_device(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    null = os.stat("/dev/null")
    dev = tmp_path / "null"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, null.st_rdev)
        with open(dev, "wb") as fh:
            fh.write(b"x")
    except OSError as exc:
        pytest.skip(f"cannot make or open a device node here ({exc.strerror})")
    proc = _nprint("-P", str(DNS), "-4", "-u", "-W", str(dev))
    assert proc.returncode == 0, proc.stderr
    write_json(dev, {"a": 1})
    with atomic_open(dev, "w") as fh:
        fh.write("text")
    st = dev.lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


def test_link_to_a_regular_file_stays_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target, link = tmp_path / "real" / "data.json", tmp_path / "data.json"
    target.write_text("old")
    link.symlink_to(target)
    write_json(link, {"new": True})
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().strip() == '{\n "new": true\n}'
    with pytest.raises(RuntimeError), atomic_open(link, "w") as fh:  # a failure leaves the old file whole
        fh.write("partial")
        raise RuntimeError
    assert target.read_text().strip() == '{\n "new": true\n}'
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["data.json"]


def test_regular_file_and_new_path_are_still_written_atomically(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text("old")
    inode = old.stat().st_ino
    for path in (old, tmp_path / "sub" / "new.json"):
        with pytest.raises(RuntimeError), atomic_open(path, "w") as fh:
            fh.write("partial")
            raise RuntimeError
    assert old.read_text() == "old" and not (tmp_path / "sub" / "new.json").exists()
    write_json(old, [1])
    assert old.stat().st_ino != inode and not old.is_symlink()  # renamed over, not rewritten in place


def _loop(tmp_path: Path, name: str = "loop.pcap") -> Path:
    a, b = tmp_path / name, tmp_path / f"other-{name}"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


@pytest.mark.parametrize("command", ["encode", "render"])
def test_symlink_loop_input_is_named_as_a_loop(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    loop = _loop(tmp_path)
    assert main([command, str(loop), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"netdiff {command}: error: {loop}: symlink loop (too many levels of symbolic links)"


def test_symlink_loop_in_nprint_input_and_output(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    proc = _nprint("-P", str(loop), "-4")
    assert proc.returncode == 2 and f"{loop}: symlink loop".encode() in proc.stderr
    out = _loop(tmp_path, "out.csv")
    proc = _nprint("-P", str(DNS), "-4", "-W", str(out))
    assert proc.returncode == 2 and f"{out}: symlink loop".encode() in proc.stderr
    assert out.is_symlink()


def test_symlink_loop_output_folder(tmp_path: Path) -> None:
    loop = _loop(tmp_path, "out")
    with pytest.raises(OutputError, match="symlink loop"):
        check_output_dir(loop)
