"""``netdiff run``: the real pipeline end to end through kfp.local (SubprocessRunner) on the sample captures,
with the tiny model and a few training steps; then the generate-only pipeline from the model it trained."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest

from netdiff_lib.cli import main
from netdiff_lib.pcap import PcapFile

pytest.importorskip("kfp")
pytest.importorskip("torch")

STEPS, PER_CLASS, SHARDS = 20, 2, 2
LABELS = ["dns", "http", "icmp", "ssh", "tls"]


@pytest.fixture(scope="module")
def local_run(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One end-to-end run; what it wrote and printed."""
    out = tmp_path_factory.mktemp("run") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["run", "--input", str(samples_dir), "--out", str(out), "--config", "tiny", "--steps",
                   str(STEPS), "--traces-per-class", str(PER_CLASS), "--shards", str(SHARDS)])
    return {"rc": rc, "out": out, "stdout": stdout.getvalue(), "work": out / ".kfp"}


def _task_outputs(work: Path, task: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(work.glob(f"artifacts/*/**/{task}/executor_output.json"))]


def test_run_publishes_pcaps_report_and_summary(local_run: dict) -> None:
    assert local_run["rc"] == 0
    out = local_run["out"]
    pcaps = sorted(out.glob("pcaps/*/*.pcap"))
    assert sorted({p.parent.name for p in pcaps}) == LABELS and len(pcaps) == PER_CLASS * len(LABELS)
    for path in pcaps:
        assert path.name.startswith(path.parent.name + "_")
        assert sum(len(b.caplen) for b in PcapFile(path).batches()) > 0, path
    html = (out / "report" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "synthetic vs real-test" in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pcaps"]["count"] == len(pcaps) and summary["pcaps"]["classes"] == dict.fromkeys(LABELS, 2)
    assert set(summary["evaluation"]) == {"reference", "synthetic"}
    assert summary["repair"]["traces"] == len(pcaps) and summary["repair"]["packets"] > 0
    assert set(summary["files"]) >= {"report/report.html", "report/report.json", "inputs.json"}
    text = local_run["stdout"]
    for key in ("inputs ", "model ", "pcaps ", "evaluation", "synthetic vs real-test", "report "):
        assert key in text, key
    assert len(text.splitlines()) <= 15  # one screen


def test_model_folder_and_checkpoint_at_the_output(local_run: dict) -> None:
    model = local_run["out"] / "model"
    card = json.loads((model / "model_card.json").read_text())
    assert card["backend"] == "native" and card["config"]["preset"] == "tiny"
    assert card["training"]["steps"] == STEPS
    assert (model / "checkpoints" / "latest").read_text().strip() == f"ckpt-{STEPS:08d}"
    summary = json.loads((local_run["out"] / "summary.json").read_text())
    assert summary["model"]["model_uri"] == str(model) and summary["model"]["steps"] == STEPS


def test_split_and_shards_cover_every_capture_once(local_run: dict, samples_dir: Path) -> None:
    inputs = json.loads((local_run["out"] / "inputs.json").read_text())
    assert len(inputs["captures"]) == len(list(samples_dir.glob("*/*.pcap"))) == 50
    assert {c["split"] for c in inputs["captures"]} == {"train", "test"}
    assert sum(c["split"] == "test" for c in inputs["captures"]) == 10  # 20 % of each class, by file
    shards = _task_outputs(local_run["work"], "encode")
    assert len(shards) == SHARDS
    dirs = [Path(s["artifacts"]["data"]["artifacts"][0]["uri"]) for s in shards]
    encoded = sorted(p.relative_to(d / "nprint").as_posix().removesuffix(".npz") for d in dirs
                     for p in (d / "nprint").rglob("*.npz"))
    assert encoded == sorted(c["dest"] for c in inputs["captures"])
    assert sum(len(list((d / "payloads").rglob("*.npz"))) for d in dirs) == 50
    if importlib.util.find_spec("nfstream"):  # each capture's flows, for the evaluation's flow section
        assert sum(len(list((d / "flows").rglob("*.json"))) for d in dirs) == 50
    assert not [p for d in dirs for p in d.rglob("*.pcap")]  # the captures stay behind: train and evaluate read these


def test_kfp_visualizations(local_run: dict) -> None:
    (ev,) = _task_outputs(local_run["work"], "evaluate")
    arts = {name: a["artifacts"][0] for name, a in ev["artifacts"].items()}
    metrics = arts["metrics"]["metadata"]
    assert {"synthetic_rf_macro_f1", "reference_rf_macro_f1", "synthetic_fidelity_jsd_macro"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    if importlib.util.find_spec("nfstream"):
        assert {"reference_flow_one_packet_share", "synthetic_flow_one_packet_share", "synthetic_flow_rf_ratio",
                "synthetic_flow_handshake_share", "synthetic_flows_per_trace"} <= set(metrics)
    matrix = arts["confusion"]["metadata"]["confusionMatrix"]
    assert [a["displayName"] for a in matrix["annotationSpecs"]] == LABELS
    assert sum(sum(r["row"]) for r in matrix["rows"]) == 10  # every real-test trace classified once
    html = Path(arts["html"]["uri"]).read_text()
    assert html == (local_run["out"] / "report" / "report.html").read_text()
    assert Path(arts["markdown"]["uri"]).read_text().startswith("# netdiff evaluation report")


def test_generate_pipeline_from_the_trained_model(local_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    rc = main(["run", "--pipeline", "generate", "--model", str(local_run["out"] / "model"), "--out", str(out),
               "--traces-per-class", "1", "--shards", "1"])
    assert rc == 0
    assert sorted(p.parent.name for p in out.glob("pcaps/*/*.pcap")) == LABELS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluation"] is None and summary["model"]["backend"] == "native"
    assert not (out / "model").exists()  # the model is read, not copied to the output


def test_missing_input_fails_with_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["run", "--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "failed in task 'list-inputs'" in err and "nowhere: no such folder" in err and "run.log" in err


def test_run_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--pipeline", "generate", "--input", "x", "--out", str(tmp_path)]) == 2
    assert "--input and --config are for the netdiff pipeline" in capsys.readouterr().err
    assert main(["run", "--pipeline", "generate", "--out", str(tmp_path)]) == 2
    assert "missing model_uri" in capsys.readouterr().err
