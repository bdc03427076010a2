"""What a user sees while and after the pipeline runs: a line per long-running task with its progress, an
explanation when real captures "fail" validation only on offloaded checksums, and no temporary path in the
report."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from netdiff_lib.evaluate.compliance import offload_note
from netdiff_lib.kfp_local import TICK_S, _Console
from netdiff_lib.stages.summary import summary_text

LOOPBACK = {"failed_rate": 0.765, "checksum_only_rate": 0.765, "offload_rate": 0.765, "invalid_rate": 0.0,
            "malformed_rate": 0.0}


def test_long_task_reports_its_progress() -> None:
    console = io.StringIO()
    stream = _Console(io.StringIO(), console)
    stream.write("11:03:55.372 - INFO - Executing task \x1b[96m'evaluate'\x1b[0m\n")
    stream.write("validate synthetic:  48%|####8     | 12/25 [00:05<00:06,  2.1file/s]\r")
    stream.write("validate synthetic:  52%|#####2    | 13/25 [00:06<00:05,  2.1file/s]\n")
    stream.tick()
    assert console.getvalue() == ""  # not yet TICK_S seconds old
    (key,) = stream.running
    stream.running[key] = ("evaluate", time.monotonic() - TICK_S - 1)
    stream.tick()
    assert console.getvalue() == f"  evaluate                 running  {TICK_S + 1:6.0f} s  validate synthetic 13/25\n"
    stream.progress[key] = (stream.progress[key][0], time.monotonic() - TICK_S - 1)  # the bar stopped moving
    stream.tick()
    assert console.getvalue().splitlines()[-1] == f"  evaluate                 running  {TICK_S + 1:6.0f} s"
    stream.write("11:05:17.099 - INFO - Task \x1b[96m'evaluate'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n")
    stream.tick()
    assert console.getvalue().splitlines()[-1].startswith("  evaluate                 success")
    assert not stream.running


def test_parallel_tasks_end_with_one_logged_end() -> None:
    stream = _Console(io.StringIO(), io.StringIO())
    for _ in range(2):  # a ParallelFor: two shards, each started from its own thread
        worker = threading.Thread(target=stream.write, args=("Executing task 'encode'\n",))
        worker.start()
        worker.join()
    assert sorted(n for n, _ in stream.running.values()) == ["encode", "encode"]
    stream.write("Task 'encode' finished with status SUCCESS\n")  # kfp.local logged one end of the two (seen)
    assert not stream.running and stream.console.getvalue().count("encode") == 1


def test_lines_of_parallel_tasks_do_not_mix() -> None:
    stream = _Console(io.StringIO(), io.StringIO())
    stream.write("Task 'enc")  # a partial line from this thread, then a whole one from another
    other = threading.Thread(target=stream.write, args=("Task 'reconstruct' finished with status SUCCESS\n",))
    other.start()
    other.join()
    stream.write("ode' finished with status SUCCESS\n")
    assert stream.console.getvalue().split() == ["reconstruct", "success", "0.0", "s", "encode", "success", "0.0", "s"]


def test_offload_note_only_when_checksums_explain_the_failures() -> None:
    assert "captured on the sending host" in offload_note(LOOPBACK)
    assert offload_note({"failed_rate": 0.5, "checksum_only_rate": 0.1}) is None  # mostly other faults
    assert offload_note({"failed_rate": 0.0, "checksum_only_rate": 0.0}) is None
    assert offload_note({"failed_rate": 0.3}) is None  # a report from before the count existed


def test_summary_does_not_call_offloaded_real_traffic_invalid(samples_dir: Path) -> None:
    from netdiff_lib.evaluate.compliance import compliance
    from netdiff_lib.evaluate.report import COMPLIANCE_KEYS

    files = [(str(p), "dns") for p in sorted((samples_dir / "dns").glob("*.pcap"))]
    rates = compliance(files, max_files=2)["all"]  # loopback captures: every TCP/UDP checksum left to the card
    assert rates["failed"] == rates["offload"] > 0 and rates["invalid"] == 0 and rates["pass_rate"] == 1.0
    text = summary_text({"evaluation": {"reference": {k: rates[k] for k in COMPLIANCE_KEYS}}})
    head, row = (line.split() for line in text.splitlines() if line.startswith(("evaluation", "  real-train")))
    values = dict(zip(head[-6:], row[-6:], strict=True))  # the last columns: JSD ... invalid offload
    assert values["invalid"] == "0.0%" and values["offload"] == "100.0%"
    assert "fail only on checksums left to the network card" in " ".join(text.split())


def test_summary_explains_the_reference_rows_failures() -> None:
    summary = {"netdiff_version": "x", "output_uri": "out", "pcaps": {"count": 1, "uri": "out/pcaps"},
               "evaluation": {"reference": {"fidelity_jsd_macro": 0.2, **LOOPBACK},
                              "synthetic": {"fidelity_jsd_macro": 0.3, "failed_rate": 0.0, "checksum_only_rate": 0.0}}}
    text = summary_text(summary)
    assert "76.5%" in text and "76.5% of the real-test packets fail only on checksums" in " ".join(text.split())
    assert "synthetic packets fail" not in text and max(map(len, text.splitlines())) <= 112


def test_report_names_sources_and_explains_offload(samples_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from netdiff_lib.evaluate import evaluate

    names = {"real_train": "train split of samples/captures", "real_test": "test split of samples/captures"}
    result = evaluate(str(samples_dir), str(samples_dir / "dns"), None, tmp_path, pictures=False, progress=False,
                      compliance_files=2, names=names)
    assert {k: v["uri"] for k, v in result["inputs"].items()} == names
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["compliance"]["reference"]["sampled"] == {"files": 2, "of": 10}
    md = (tmp_path / "report.md").read_text()
    assert "train split of samples/captures" in md and "/tmp" not in md
    assert "fail only on checksums left to the network card (checksum offload): they were captured on the sending " \
           "host" in " ".join(md.split())
    assert "class-stratified sample" in md
