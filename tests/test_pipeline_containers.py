"""The pipeline in containers: build the images with ``scripts/build-images.sh`` and run the whole tiny pipeline
through ``kfp.local.DockerRunner``, every step in its own container from the images the compiled pipeline names.

The containers see nothing of this checkout: they get only the pipeline root (bind-mounted by kfp.local, where
the input captures are copied), run as the images' non-root user, and import netdiff from the wheel installed in
the image. First with a local pipeline root and no network at all, then with input and output in a SeaweedFS
bucket on the host (``s3_server``), reached from the containers over the host's network.

Needs a Docker engine: the one ``docker info`` finds, or one this module starts (``dockerd`` from Debian's
``docker.io``, installed by ``scripts/setup.sh --tests``; root). Where no registry is reachable the images are built
from a local debootstrap base (``--local-base``, the default here; ``NETDIFF_IMAGE_BASE=registry`` builds from
the registry bases instead). ``NETDIFF_DOCKER_ROOT`` (default ``/var/lib/netdiff-docker``) keeps a started
engine's images and build cache between runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import S3Server

from netdiff_lib.pcap import PcapFile

pytest.importorskip("kfp")
pytest.importorskip("docker")

pytestmark = [pytest.mark.container, pytest.mark.slow]

STEPS, PER_CLASS, SHARDS = 10, 1, 2
LABELS = ["dns", "http", "icmp", "ssh", "tls"]
TASKS = {"list-inputs", "encode", "train", "generate", "reconstruct", "evaluate", "publish"}
IMAGE_UID = 1000  # the images' USER


def _docker_ok(env: dict[str, str]) -> bool:
    try:
        return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    """``DOCKER_HOST`` of a running engine: the current one, else a ``dockerd`` started (and stopped) here."""
    if shutil.which("docker") and _docker_ok(dict(os.environ)):
        yield os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or shutil.which("docker") is None:
        pytest.fail("no Docker engine answers and dockerd/docker are missing: apt-get install docker.io "
                    "(scripts/setup.sh --tests does), or deselect with -m 'not container'")
    if os.geteuid() != 0:
        pytest.fail("no Docker engine answers and starting dockerd needs root (or deselect -m 'not container')")
    run = Path(tempfile.mkdtemp(prefix="netdiff-dockerd-"))
    data_root = Path(os.environ.get("NETDIFF_DOCKER_ROOT", "/var/lib/netdiff-docker"))
    data_root.mkdir(parents=True, exist_ok=True)
    host = f"unix://{run}/docker.sock"
    log = open(run / "dockerd.log", "wb")  # noqa: SIM115 - open for the daemon's lifetime
    proc = subprocess.Popen(
        [dockerd, "--data-root", str(data_root), "--exec-root", str(run / "exec"), "-H", host, "--pidfile",
         str(run / "dockerd.pid"), "--iptables=false", "--ip-masq=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    env = dict(os.environ, DOCKER_HOST=host)
    deadline = time.monotonic() + 60
    while not _docker_ok(env):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = (run / "dockerd.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"dockerd did not come up (exit {proc.poll()}); its log ends:\n{tail}")
        time.sleep(0.5)
    try:
        yield host
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="module")
def images(docker_host: str, repo_root: Path) -> dict[str, Any]:
    """Build both images from this tree (cached layers make a rebuild quick); their tags and build time."""
    env = dict(os.environ, DOCKER_HOST=docker_host)
    args = [] if os.environ.get("NETDIFF_IMAGE_BASE") == "registry" else ["--local-base"]
    start = time.monotonic()
    out = subprocess.run(["bash", "scripts/build-images.sh", *args], cwd=repo_root, env=env, capture_output=True,
                         text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-4000:]
    tags = dict(line.split("=", 1) for line in subprocess.run(
        ["bash", "scripts/build-images.sh", "--print-tags"], cwd=repo_root, capture_output=True, text=True,
        check=True).stdout.split())
    return {"tags": tags, "seconds": time.monotonic() - start, "env": env}


def _docker(images: dict[str, Any], *args: str) -> str:
    out = subprocess.run(["docker", *args], env=images["env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_images_hold_netdiff_from_the_wheel_not_the_checkout(images: dict[str, Any], repo_root: Path) -> None:
    probe = ("import json, os, shutil, sys, netdiff_lib, kfp; print(json.dumps({'file': netdiff_lib.__file__, "
             "'uid': os.getuid(), 'kfp': kfp.__version__, 'tshark': bool(shutil.which('tshark')), "
             f"'checkout': os.path.exists({str(repo_root)!r}), 'torch': __import__('importlib.util').util"
             ".find_spec('torch') is not None}))")
    import kfp

    seen = {}
    for target, tag in images["tags"].items():
        seen[target] = json.loads(_docker(images, "run", "--rm", "--network", "none", tag, "python3", "-c", probe))
        assert "site-packages/netdiff_lib" in seen[target]["file"], seen
        assert seen[target]["uid"] == IMAGE_UID and not seen[target]["checkout"]
        assert seen[target]["kfp"] == kfp.__version__  # the components run the image's kfp executor
    assert seen["cpu"]["tshark"] and not seen["cpu"]["torch"]
    assert seen["gpu"]["torch"]
    labels = json.loads(_docker(images, "image", "inspect", "-f", "{{json .Config.Labels}}", images["tags"]["cpu"]))
    assert labels["org.opencontainers.image.version"] == images["tags"]["cpu"].rsplit(":", 1)[1]


def _pipeline_root() -> Path:
    """The pipeline root: a folder the images' user can write, outside any checkout. kfp.local mounts it at the
    same path in every container, and it is all they see: the input captures and the output go here too."""
    root = Path(tempfile.mkdtemp(prefix="netdiff-docker-run-"))
    root.chmod(0o777)
    return root


def _run_in_containers(images: dict[str, Any], root: Path, arguments: dict[str, Any], *,
                       network: str, environment: dict[str, str], capfd: pytest.CaptureFixture) -> dict[str, Any]:
    from kfp import local

    from netdiff_lib.kfp_pipelines import load_pipeline

    pipeline = load_pipeline("netdiff", gpu_retries=0)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **environment}
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = images["env"]["DOCKER_HOST"]
    umask = os.umask(0)  # kfp.local makes the task folders here, the containers' user writes into them
    try:
        local.init(runner=local.DockerRunner(network_mode=network, environment=env),
                   pipeline_root=str(root), raise_on_error=True)
        start = time.monotonic()
        capfd.readouterr()
        pipeline(**arguments)
        seconds = time.monotonic() - start
    finally:
        os.umask(umask)
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old
    log = capfd.readouterr()
    return {"seconds": seconds, "log": log.out + log.err}


def _base_arguments(input_uri: str, output_uri: str, s3_endpoint: str) -> dict[str, Any]:
    return {"input_uri": input_uri, "output_uri": output_uri, "config": "tiny", "train_steps": STEPS,
            "traces_per_class": PER_CLASS, "shards": SHARDS, "s3_endpoint": s3_endpoint}


def _check_tasks(run: dict[str, Any], images: dict[str, Any], root: Path) -> None:
    log = re.sub(r"\x1b\[[0-9;]*m", "", run["log"])
    for image in images["tags"].values():
        assert f"Found image {image!r}" in log  # every step ran in a container from the project's images
    assert "Pulling image" not in log
    finished = set(re.findall(r"Task '([\w-]+)' finished with status SUCCESS", log))
    assert finished >= TASKS, (TASKS - finished, log[-3000:])
    owners = {p.stat().st_uid for p in root.glob("netdiff-*/**/executor_output.json")}
    assert owners == {IMAGE_UID}, owners  # written inside the containers, by the images' user


def test_tiny_pipeline_in_containers_with_a_local_pipeline_root(
        images: dict[str, Any], samples_dir: Path, capfd: pytest.CaptureFixture) -> None:
    root = _pipeline_root()
    try:
        shutil.copytree(samples_dir, root / "input", ignore=shutil.ignore_patterns("*.md", "*.py"))
        run = _run_in_containers(images, root, _base_arguments(str(root / "input"), str(root / "out"), ""),
                                 network="none", environment={}, capfd=capfd)
        print(f"\nimages built in {images['seconds']:.0f} s; pipeline in containers (local root): "
              f"{run['seconds']:.0f} s")
        _check_tasks(run, images, root)
        out = root / "out"
        pcaps = sorted(out.glob("pcaps/*/*.pcap"))
        assert sorted({p.parent.name for p in pcaps}) == LABELS and len(pcaps) == PER_CLASS * len(LABELS)
        assert all(sum(len(b.caplen) for b in PcapFile(p).batches()) > 0 for p in pcaps)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["pcaps"]["count"] == len(pcaps) and set(summary["evaluation"]) == {"reference", "synthetic"}
        assert (out / "report" / "report.html").read_text().startswith("<!DOCTYPE html>")
        card = json.loads((out / "model" / "model_card.json").read_text())
        assert card["training"]["steps"] == STEPS and card["config"]["preset"] == "tiny"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_tiny_pipeline_in_containers_with_the_object_store(
        images: dict[str, Any], s3_server: S3Server, samples_dir: Path, capfd: pytest.CaptureFixture) -> None:
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    for path in sorted(samples_dir.glob("*/*.pcap")):
        client.fput_object(bucket, f"data/captures/{path.parent.name}/{path.name}", str(path))
    root = _pipeline_root()
    try:
        env = {k: v for k, v in s3_server.env().items() if k != "NETDIFF_S3_ENDPOINT"}  # the endpoint: a parameter
        run = _run_in_containers(
            images, root, _base_arguments(f"s3://{bucket}/data/captures", f"s3://{bucket}/runs/r1", s3_server.url),
            network="host", environment=env, capfd=capfd)
        print(f"\npipeline in containers (object store): {run['seconds']:.0f} s")
        _check_tasks(run, images, root)
        keys = {o.object_name.removeprefix("runs/r1/")
                for o in client.list_objects(bucket, prefix="runs/r1/", recursive=True)}
        pcaps = sorted(k for k in keys if k.startswith("pcaps/"))
        assert sorted({k.split("/")[1] for k in pcaps}) == LABELS
        assert {"summary.json", "inputs.json", "report/report.html", "model/model_card.json",
                f"model/checkpoints/ckpt-{STEPS:08d}/meta.json"} <= keys
        summary = json.loads(client.get_object(bucket, "runs/r1/summary.json").read())
        assert summary["output_uri"] == f"s3://{bucket}/runs/r1"
    finally:
        shutil.rmtree(root, ignore_errors=True)
