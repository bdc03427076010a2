"""Integration: the pipeline run through kfp.local against a real S3 server (SeaweedFS ``weed mini`` with
credentials): captures put in a bucket, s3:// input and output, published pcaps and report found in the
bucket, training resumed from its checkpoint there; wrong credentials and missing buckets fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import S3_ENV_VARS, S3Server

from netdiff_lib.cli import main
from netdiff_lib.pcap import PcapFile

pytest.importorskip("kfp")
pytest.importorskip("minio")
pytest.importorskip("torch")

STEPS = 10
LABELS = ["dns", "http", "icmp", "ssh", "tls"]


def _put_captures(server: S3Server, samples_dir: Path) -> str:
    bucket = server.make_bucket()
    client = server.client()
    for path in sorted(samples_dir.glob("*/*.pcap")):
        client.fput_object(bucket, f"data/captures/{path.parent.name}/{path.name}", str(path))
    return bucket


@pytest.fixture(scope="module")
def s3_run(s3_server: S3Server, samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run with s3:// input and output (storage settings from the environment, as a Secret gives them)."""
    bucket = _put_captures(s3_server, samples_dir)
    work = tmp_path_factory.mktemp("s3run")
    with pytest.MonkeyPatch.context() as mp:
        for var in S3_ENV_VARS:
            mp.delenv(var, raising=False)
        for key, value in s3_server.env().items():
            mp.setenv(key, value)
        rc = main(["run", "--input", f"s3://{bucket}/data/captures", "--out", f"s3://{bucket}/runs/r1",
                   "--steps", str(STEPS), "--traces-per-class", "1", "--shards", "2", "--work", str(work)])
    keys = sorted(o.object_name for o in s3_server.client().list_objects(bucket, prefix="runs/r1/", recursive=True))
    return {"rc": rc, "bucket": bucket, "work": work, "keys": [k.removeprefix("runs/r1/") for k in keys]}


def test_published_pcaps_report_and_model_are_in_the_bucket(s3_run: dict, s3_server: S3Server,
                                                            tmp_path: Path) -> None:
    assert s3_run["rc"] == 0
    keys = s3_run["keys"]
    pcaps = [k for k in keys if k.startswith("pcaps/")]
    assert sorted(k.split("/")[1] for k in pcaps) == LABELS
    assert {"report/report.html", "report/report.md", "report/report.json", "summary.json", "inputs.json",
            "model/model_card.json", "model/model.safetensors", "model/checkpoints/latest",
            f"model/checkpoints/ckpt-{STEPS:08d}/meta.json"} <= set(keys)
    assert not [k for k in keys if ".netdiff-tmp-" in k]  # atomic publish left no staging objects
    client = s3_server.client()
    local = tmp_path / "x.pcap"
    client.fget_object(s3_run["bucket"], f"runs/r1/{pcaps[0]}", str(local))
    assert sum(len(b.caplen) for b in PcapFile(local).batches()) > 0
    summary = json.loads(client.get_object(s3_run["bucket"], "runs/r1/summary.json").read())
    assert summary["output_uri"] == f"s3://{s3_run['bucket']}/runs/r1"
    assert summary["report"]["html"] == f"s3://{s3_run['bucket']}/runs/r1/report/report.html"
    assert summary["inputs"]["input_uri"] == f"s3://{s3_run['bucket']}/data/captures"
    assert set(summary["evaluation"]) == {"reference", "synthetic"}
    assert sorted(summary["files"] + ["summary.json"]) == sorted(k for k in keys if not k.startswith("model/"))


def test_training_resumes_from_its_checkpoint_in_the_bucket(s3_run: dict, s3_env: S3Server, tmp_path: Path,
                                                            capfd: pytest.CaptureFixture) -> None:
    from netdiff_lib.stages import train_model

    shards = sorted(s3_run["work"].glob("artifacts/*/for-loop-*/encode/data"))
    assert len(shards) == 2
    model_uri = f"s3://{s3_run['bucket']}/runs/r1/model"
    meta = train_model([str(s) for s in shards], tmp_path / "model", model_uri=model_uri, backend="native",
                       config="tiny", steps=STEPS + 5, seed=0, processes=1)
    assert f"resumed from step {STEPS}" in capfd.readouterr().out
    assert meta["steps"] == STEPS + 5 and meta["model_uri"] == model_uri
    assert json.loads((tmp_path / "model" / "model_card.json").read_text())["training"]["steps"] == STEPS + 5
    assert not (tmp_path / "model" / "checkpoints").exists()  # the artifact holds the model, not checkpoints


def _run_fails(tmp_path: Path, capsys: pytest.CaptureFixture, input_uri: str, output_uri: str) -> str:
    rc = main(["run", "--input", input_uri, "--out", output_uri, "--work", str(tmp_path), "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "the pipeline failed in task 'list-inputs'" in err and "Traceback" not in err
    return err


def test_wrong_credentials_fail_clearly(s3_run: dict, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    bucket = s3_run["bucket"]
    err = _run_fails(tmp_path, capsys, f"s3://{bucket}/data/captures", f"s3://{bucket}/runs/bad")
    assert f"s3://{bucket}/data/captures" in err and "rejected the credentials" in err
    assert "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in err


def test_missing_input_bucket_fails_clearly(s3_env: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _run_fails(tmp_path, capsys, "s3://no-such-bucket/captures", f"s3://{s3_env.make_bucket()}/out")
    assert "bucket 'no-such-bucket' does not exist" in err


def test_missing_output_bucket_fails_before_any_work(s3_run: dict, s3_env: S3Server, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    err = _run_fails(tmp_path, capsys, f"s3://{s3_run['bucket']}/data/captures", "s3://no-output-bucket/run")
    assert "bucket 'no-output-bucket' does not exist" in err
    assert not list(tmp_path.glob("artifacts/*/for-loop-*"))  # nothing was encoded


def test_rerun_into_a_finished_prefix_is_refused(s3_run: dict, s3_env: S3Server, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    output = f"s3://{s3_run['bucket']}/runs/r1"
    rc = main(["run", "--input", f"s3://{s3_run['bucket']}/data/captures", "--out", output, "--work",
               str(tmp_path), "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"netdiff run: error: {output}: already holds results (summary.json, model,")
    assert not list(tmp_path.glob("artifacts/*"))  # refused before any step
