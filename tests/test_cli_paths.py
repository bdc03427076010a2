"""A newcomer's mistakes get one clear line naming their path, exit status 2 and no traceback: an output that is
a file or cannot be created (`run`, `encode`, `evaluate`, `train`, checked before any work), an earlier run's
results in `netdiff run`'s output (refused without --resume or --overwrite), a bad capture inside `netdiff run`
(named as the user gave it, not as staged), and captures whose timestamps jump backwards (`decode` and
`reconstruct` keep nPrint's order, no traceback)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.cli import main
from netdiff_lib.destination import check_output_dir, reuse_policy
from netdiff_lib.errors import OutputError
from netdiff_lib.pcap import PcapFile, PcapWriter

REPO = Path(__file__).resolve().parents[1]
UNWRITABLE = Path("/proc/sys/netdiff-out")  # read-only for every user, root included


def _commands(samples: Path, out: Path) -> dict[str, list[str]]:
    return {
        "encode": ["encode", str(samples / "dns"), "-o", str(out), "-q"],
        "evaluate": ["evaluate", "--real-train", str(samples), "--real-test", str(samples), "--out", str(out), "-q"],
        "train": ["train", "--data", str(samples), "--out", str(out), "--config", "tiny", "--steps", "1"],
        "run": ["run", "--input", str(samples), "--out", str(out), "--config", "tiny", "--steps", "1"],
    }


@pytest.mark.parametrize("command", ["encode", "evaluate", "train", "run"])
@pytest.mark.parametrize("where", ["file", "under a file", "unwritable"])
def test_bad_output_path_is_one_line_before_any_work(command: str, where: str, samples_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    out = {"file": a_file, "under a file": a_file / "sub", "unwritable": UNWRITABLE}[where]
    assert main(_commands(samples_dir, out)[command]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"netdiff {command}: error: {out}: ") and "\n" not in err, err
    if where == "file":
        assert "is a file" in err
    assert a_file.read_text() == "not a folder" and not list(tmp_path.glob("**/*.npz"))


def test_bad_output_from_the_shell_has_no_traceback(samples_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("")
    proc = subprocess.run([sys.executable, "-m", "netdiff_lib.cli", "train", "--data", str(samples_dir), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"netdiff train: error: {tmp_path / 'out'}: is a file; the model "
                                                "folder must be a folder"]


def test_check_output_dir_accepts_new_and_existing_folders(tmp_path: Path) -> None:
    check_output_dir(tmp_path)
    check_output_dir(tmp_path / "new" / "deeper")
    check_output_dir("s3://bucket/prefix")  # the object store answers for itself
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_run_refuses_an_earlier_runs_output(samples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    (out / "model" / "checkpoints").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    assert main(_commands(samples_dir, out)["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"netdiff run: error: {out}: already holds results (summary.json, model): pass --resume to "
                   "continue training its model, --overwrite to replace them, or choose a new folder")
    assert (out / "model" / "checkpoints").is_dir()  # nothing touched


def test_reuse_policy_resume_keeps_and_overwrite_deletes(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_text("w")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "mine.txt").write_text("kept")
    found = ["summary.json", "model"]
    reuse_policy(tmp_path, found, resume=True, overwrite=False)
    assert (tmp_path / "model" / "weights").is_file()
    with pytest.raises(OutputError, match="already holds results"):
        reuse_policy(tmp_path, found, resume=False, overwrite=False)
    reuse_policy(tmp_path, found, resume=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]  # only the run's own results go


def test_bad_capture_inside_run_is_named_as_given(samples_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("kfp")
    data = tmp_path / "captures"
    shutil.copytree(samples_dir, data)
    bad = data / "http" / "http_03.pcap"
    bad.write_text("garbage, not a capture\n")
    assert main(["run", "--input", str(data), "--out", str(tmp_path / "out"), "--config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert f"InputError: {bad}: not a pcap or pcapng file" in err, err[-2000:]
    message = next(line for line in err.splitlines() if line.startswith("netdiff run: error:"))
    assert ".kfp" not in message.split("(full log:")[0]  # no staging path in the message itself


def _backwards(path: Path, samples_dir: Path, jumps: dict[int, int]) -> Path:
    """dns_01's packets, 1 ms apart, with packet i moved ``jumps[i]`` ns (back) in time."""
    batch = next(PcapFile(samples_dir / "dns" / "dns_01.pcap").batches())
    with PcapWriter(path) as w:
        for i in range(len(batch)):
            start, n = int(batch.offsets[i]), int(batch.caplen[i])
            w.write(bytes(batch.data[start:start + n]), 1_700_000_000 * 10**9 + i * 10**6 + jumps.get(i, 0))
    return path


def _times(pcap: Path) -> np.ndarray:
    return np.concatenate([b.ts_ns for b in PcapFile(pcap).batches()])


@pytest.mark.parametrize("jumps", [{1: -10**9}, {i: -10 * 10**9 for i in range(10, 20)}],
                         ids=["second packet a second early", "second half ten seconds back"])
def test_backwards_time_decodes_and_reconstructs(jumps: dict[int, int], samples_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    cap = _backwards(tmp_path / "back.pcap", samples_dir, jumps)
    want = _times(cap)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, flags in (("rel", ["-R"]), ("abs", ["-A"])):
        assert main(["nprint", "-P", str(cap), "-4", "-t", "-u", "-i", *flags, "-W", str(inputs / f"{name}.csv")]) == 0
    assert main(["encode", str(cap), "-o", str(inputs), "-q"]) == 0
    assert main(["decode", str(inputs), "-o", str(tmp_path / "dec"), "-q"]) == 0
    assert np.array_equal(_times(tmp_path / "dec" / "abs.pcap"), want // 1000 * 1000)
    assert np.array_equal(_times(tmp_path / "dec" / "back.pcap"), want // 1000 * 1000)
    rel = _times(tmp_path / "dec" / "rel.pcap")  # nPrint's gaps, backwards ones included, from time 0 on
    assert rel.min() == 0 and np.array_equal(np.diff(rel)[1:], np.diff(want // 1000 * 1000)[1:])
    assert main(["reconstruct", str(inputs), "-o", str(tmp_path / "rec"), "-q"]) == 0
    for name in ("rel", "abs", "back"):
        got = _times(tmp_path / "rec" / f"{name}.pcap")
        assert len(got) >= len(want) and (np.diff(got) >= 0).all()  # repaired: time runs forwards
    assert "Traceback" not in capsys.readouterr().err
