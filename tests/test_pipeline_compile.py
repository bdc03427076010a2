"""Compile both pipelines with ``netdiff compile`` and check the YAML a cluster receives: placement (GPU, node
selector, toleration only on train and generate; CPU requests/limits elsewhere), Secret-backed environment,
retries, ParallelFor fan-out, caching, Kueue label and image tags. Then ``netdiff submit``: argument handling
and the requests ``kfp.Client`` sends, against a recording HTTP server on 127.0.0.1 (no cluster)."""

from __future__ import annotations

import json
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

import netdiff_lib
from netdiff_lib.cli import main

pytest.importorskip("kfp.kubernetes")

GPU_STEPS = {"exec-train", "exec-generate"}
STORE_STEPS = {"netdiff": {"exec-list-inputs", "exec-encode", "exec-train", "exec-publish"},
               "generate": {"exec-import-model", "exec-publish"}}
CACHED = {"netdiff": {"encode", "train", "generate", "reconstruct", "evaluate"},
          "generate": {"generate", "reconstruct"}}
NOT_CACHED = {"netdiff": {"list-inputs", "publish"}, "generate": {"import-model", "publish"}}


def compile_yaml(tmp_path: Path, pipeline: str, *extra: str) -> tuple[dict, dict]:
    out = tmp_path / f"{pipeline}{len(extra)}.yaml"
    assert main(["compile", "-o", str(out), "--pipeline", pipeline, *extra]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 2, "IR + platform spec"
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module", params=["netdiff", "generate"])
def compiled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, dict]:
    spec, platform = compile_yaml(tmp_path_factory.mktemp("ir"), request.param)
    return request.param, spec, platform


def executors(spec: dict) -> dict[str, Any]:
    return {name: e["container"] for name, e in spec["deploymentSpec"]["executors"].items()}


def all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the root DAG and of the components' DAGs (ParallelFor bodies), by task name."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name: task for dag in dags for name, task in dag["tasks"].items()}


def test_gpu_only_on_train_and_generate(compiled: tuple[str, dict, dict]) -> None:
    name, spec, _ = compiled
    gpu = {n: c["resources"]["accelerator"] for n, c in executors(spec).items() if "accelerator" in c["resources"]}
    assert set(gpu) == GPU_STEPS & set(executors(spec))
    assert "gpu_type" in gpu["exec-generate"]["resourceType"]  # the GPU resource name is a run parameter
    assert gpu["exec-generate"]["resourceCount"] == "1"
    if name == "netdiff":
        assert "gpu_type" in gpu["exec-train"]["resourceType"]
        assert "gpu_count" in gpu["exec-train"]["resourceCount"]  # training takes every GPU it asks for
        params = spec["root"]["inputDefinitions"]["parameters"]
        assert params["gpu_type"]["defaultValue"] == "nvidia.com/gpu" and params["gpu_count"]["defaultValue"] == 1


def test_node_selector_toleration_and_shm_only_on_gpu_steps(compiled: tuple[str, dict, dict]) -> None:
    _, spec, platform = compiled
    for key in ("nodeSelector", "tolerations", "emptyDirMounts"):
        assert {n for n, e in platform.items() if key in e} == GPU_STEPS & set(executors(spec)), key
    for step in GPU_STEPS & set(platform):
        assert "gpu_node_selector" in platform[step]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
        assert "gpu_toleration" in platform[step]["tolerations"][0]["tolerationJson"]["componentInputParameter"]
        shm = {"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"}
        assert platform[step]["emptyDirMounts"] == [shm]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gpu_node_selector"]["defaultValue"] == {"nvidia.com/gpu.present": "true"}
    assert params["gpu_toleration"]["defaultValue"] == {"key": "nvidia.com/gpu", "operator": "Exists",
                                                         "effect": "NoSchedule"}


def test_cpu_steps_request_and_limit_cpu_and_memory(compiled: tuple[str, dict, dict]) -> None:
    _, spec, _ = compiled
    cpu_steps = {n: c for n, c in executors(spec).items() if n not in GPU_STEPS}
    assert cpu_steps
    for name, container in cpu_steps.items():
        res = container["resources"]
        wanted = {"resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"}
        assert wanted <= set(res), name
        assert "accelerator" not in res, name
        assert float(res["cpuLimit"]) >= float(res["cpuRequest"]) and res["memoryLimit"] >= res["memoryRequest"]


def test_object_store_credentials_come_from_the_secret(compiled: tuple[str, dict, dict]) -> None:
    name, spec, platform = compiled
    with_secret = {n for n, e in platform.items() if "secretAsEnv" in e}
    assert with_secret == STORE_STEPS[name]
    for step in with_secret:
        (entry,) = platform[step]["secretAsEnv"]
        assert {(k["secretKey"], k["envVar"]) for k in entry["keyToEnv"]} == {
            ("accesskey", "AWS_ACCESS_KEY_ID"), ("secretkey", "AWS_SECRET_ACCESS_KEY")}
        assert "s3_secret" in entry["secretNameParameter"]["componentInputParameter"]
        assert entry["optional"] is False
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["s3_secret"]["defaultValue"] == "netdiff-object-store"  # manifests/base
    assert "minio-service" not in params["s3_endpoint"]["defaultValue"]  # KFP >= 2.16 serves SeaweedFS


def test_gpu_steps_retry_with_backoff(compiled: tuple[str, dict, dict]) -> None:
    _, spec, _ = compiled
    tasks = all_tasks(spec)
    retried = {n: t["retryPolicy"] for n, t in tasks.items() if "retryPolicy" in t}
    assert set(retried) == {f.removeprefix("exec-") for f in GPU_STEPS} & set(tasks)
    for policy in retried.values():
        assert policy["maxRetryCount"] == 3 and policy["backoffDuration"] == "60s"
        assert policy["backoffFactor"] == 2.0 and policy["backoffMaxDuration"] == "900s"


def test_parallel_for_fans_out_encode_and_reconstruct(compiled: tuple[str, dict, dict]) -> None:
    name, spec, _ = compiled
    loops = {n: t for n, t in spec["root"]["dag"]["tasks"].items() if "parameterIterator" in t}
    bodies = {n: set(spec["components"][t["componentRef"]["name"]]["dag"]["tasks"]) for n, t in loops.items()}
    sources = {n: t["parameterIterator"]["items"]["inputParameter"] for n, t in loops.items()}
    expected = {"netdiff": {("encode",): "list-inputs-Output", ("reconstruct",): "generate-Output"},
                "generate": {("reconstruct",): "generate-Output"}}[name]
    assert {(tuple(sorted(bodies[n])), sources[n].removeprefix("pipelinechannel--")) for n in loops} == set(
        expected.items())
    consumers = {"netdiff": {"train": "data", "evaluate": "pcaps", "publish": "pcaps"},
                 "generate": {"publish": "pcaps"}}
    components = spec["components"]
    for task, arg in consumers[name].items():  # fan-in: the shards' artifacts arrive as one list
        comp = components[spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
        assert comp["inputDefinitions"]["artifacts"][arg]["isArtifactList"] is True


def test_deterministic_steps_are_cached(compiled: tuple[str, dict, dict]) -> None:
    name, spec, _ = compiled
    tasks = all_tasks(spec)
    assert {n for n, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")} == CACHED[name]
    for step in NOT_CACHED[name]:  # listing reads the object store, publishing writes it: always run
        assert not tasks[step]["cachingOptions"].get("enableCache"), step


def test_images_are_versioned(compiled: tuple[str, dict, dict]) -> None:
    _, spec, _ = compiled
    version = netdiff_lib.__version__
    for name, container in executors(spec).items():
        image = container["image"]
        assert image.endswith(f":{version}-cuda" if name in GPU_STEPS else f":{version}"), (name, image)
        assert "pip install" not in " ".join(container["command"])  # the image brings kfp: no PyPI at run time


def test_kueue_queue_labels_the_gpu_pods_only(tmp_path: Path) -> None:
    _, platform = compile_yaml(tmp_path, "netdiff")
    assert not any("podMetadata" in e for e in platform.values())
    _, platform = compile_yaml(tmp_path, "netdiff", "--kueue-queue", "team-a-gpu")
    labelled = {n: e["podMetadata"]["labels"] for n, e in platform.items() if "podMetadata" in e}
    priority = {"exec-train": "netdiff-training", "exec-generate": "netdiff-generation"}
    assert labelled == {step: {"kueue.x-k8s.io/queue-name": "team-a-gpu",
                               "kueue.x-k8s.io/priority-class": priority[step]} for step in GPU_STEPS}


def test_kubernetes_manifest_format(tmp_path: Path) -> None:
    out = tmp_path / "k8s.yaml"
    assert main(["compile", "-o", str(out), "--pipeline", "generate", "--kubernetes-manifest"]) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(out.read_text())]
    assert kinds == ["Pipeline", "PipelineVersion"]


def test_image_override_and_latest_refused(tmp_path: Path, repo_root: Path) -> None:
    import subprocess
    import sys

    code = "import components._image as i; print(i.IMAGE, i.GPU_IMAGE)"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo_root), "NETDIFF_REGISTRY": "registry.example/team/"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    v = netdiff_lib.__version__
    assert out.stdout.split() == [f"registry.example/team/netdiff:{v}", f"registry.example/team/netdiff:{v}-cuda"]
    bad = subprocess.run([sys.executable, "-c", code], env={**env, "NETDIFF_IMAGE": "registry.example/x:latest"},
                         cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0 and "needs a version tag" in bad.stderr


# --- netdiff submit: argument handling and the requests kfp.Client sends, against a recording HTTP server ---

class _KfpApi(BaseHTTPRequestHandler):
    """Answers the three calls a run submission makes (find experiment, create it, create the run)."""

    seen: list[tuple[str, str, Any]]
    status: int = 200

    def _reply(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, None))
        if self.status != 200:
            return self._reply(self.status, {"error_message": "namespace team-a: permission denied"})
        self._reply(200, {"experiments": [], "total_size": 0})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.seen.append(("POST", self.path.split("?")[0], body))
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply(200, {"experiment_id": "exp-1", "display_name": body.get("display_name")})
        self._reply(200, {"run_id": "run-1", "display_name": body.get("display_name"), "experiment_id": "exp-1"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, type[_KfpApi]]]:
    handler = type("Api", (_KfpApi,), {"seen": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def test_submit_sends_the_compiled_pipeline_and_arguments(kfp_api: tuple[str, type[_KfpApi]],
                                                          capsys: pytest.CaptureFixture) -> None:
    url, api = kfp_api
    selector = '{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}'
    rc = main(["submit", "--host", url, "--namespace", "team-a", "--experiment", "netdiff-exp", "--input",
               "s3://data/captures", "--out", "s3://data/runs/1", "--config", "small", "--param", "gpu_count=8",
               "--param", f"gpu_node_selector={selector}", "--kueue-queue", "team-a-gpu", "--run-name", "r1",
               "--no-cache"])
    assert rc == 0
    assert f"run run-1 started: {url}/#/runs/details/run-1" in capsys.readouterr().out
    (find, create, run) = api.seen
    assert find[0] == "GET" and "netdiff-exp" in unquote(find[1]) and "namespace=team-a" in find[1]
    assert create == ("POST", "/apis/v2beta1/experiments", {"display_name": "netdiff-exp", "namespace": "team-a"})
    method, path, body = run
    assert (method, path, body["experiment_id"], body["display_name"]) == ("POST", "/apis/v2beta1/runs", "exp-1", "r1")
    assert body["runtime_config"]["parameters"] == {
        "input_uri": "s3://data/captures", "output_uri": "s3://data/runs/1", "config": "small", "gpu_count": 8,
        "gpu_node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
    spec, platform = body["pipeline_spec"]["pipeline_spec"], body["pipeline_spec"]["platform_spec"]
    assert spec["pipelineInfo"]["name"] == "netdiff"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-train"]["podMetadata"]["labels"] == {"kueue.x-k8s.io/queue-name": "team-a-gpu",
                                                                "kueue.x-k8s.io/priority-class": "netdiff-training"}
    assert body["service_account"] == "netdiff-runner"  # manifests/base
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in all_tasks(spec).values())


def test_submit_emits_no_future_warning(kfp_api: tuple[str, type[_KfpApi]]) -> None:
    url, _ = kfp_api
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # kfp.Client warned on every construction that it needs KFP >= 2.0
        assert main(["submit", "--host", url, "--namespace", "team-a", "--input", "s3://b/in", "--output",
                     "s3://b/o"]) == 0
    assert not [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]


def test_compile_warns_when_the_default_images_are_used(tmp_path: Path, repo_root: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NETDIFF_")} | {"PYTHONPATH": str(repo_root)}
    cmd = [sys.executable, "-m", "netdiff_lib.cli", "compile", "-o", str(tmp_path / "p.yaml")]
    plain = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    v = netdiff_lib.__version__
    assert plain.returncode == 0 and "NETDIFF_REGISTRY is not set" in plain.stderr
    assert f"ghcr.io/netdiff/netdiff:{v} and ghcr.io/netdiff/netdiff:{v}-cuda" in plain.stderr
    assert "ImagePullBackOff" in plain.stderr and f"ghcr.io/netdiff/netdiff:{v}" in (tmp_path / "p.yaml").read_text()
    mine = subprocess.run(cmd, env=env | {"NETDIFF_REGISTRY": "registry.example/team"}, cwd=tmp_path,
                          capture_output=True, text=True)
    assert mine.returncode == 0 and "warning" not in mine.stderr
    assert f"registry.example/team/netdiff:{v}" in (tmp_path / "p.yaml").read_text()


def test_submit_to_a_closed_port_fails_clearly(capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    rc = main(["submit", "--host", f"http://127.0.0.1:{port}", "--namespace", "team-a", "--input", "s3://b/in",
               "--out", "s3://b/out"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"submitting to http://127.0.0.1:{port} failed: cannot connect to the KFP API" in err
    assert "Connection refused" in err and "check --host" in err


def test_submit_reports_http_errors(kfp_api: tuple[str, type[_KfpApi]], capsys: pytest.CaptureFixture) -> None:
    url, api = kfp_api
    api.status = 403
    rc = main(["submit", "--host", url, "--namespace", "team-a", "--input", "s3://b/in", "--out", "s3://b/o"])
    err = capsys.readouterr().err
    assert rc == 2 and "HTTP 403" in err and "permission denied" in err and "check --namespace" in err


@pytest.mark.parametrize(("extra", "message"), [
    (["--param", "gpu_count=eight"], "--param gpu_count: 'eight' is not a valid Integer"),
    (["--param", "gpus=2"], "--param 'gpus=2': expected KEY=VALUE with KEY one of input_uri"),
    (["--param", "gpu_toleration={bad json"], "--param gpu_toleration: '{bad json' is not a valid Dict"),
    (["--pipeline", "generate"], "--input and --config are for the netdiff pipeline"),
])
def test_submit_argument_errors_stop_before_the_network(extra: list[str], message: str,
                                                        kfp_api: tuple[str, type[_KfpApi]],
                                                        capsys: pytest.CaptureFixture) -> None:
    url, api = kfp_api
    rc = main(["submit", "--host", url, "--namespace", "ns", "--input", "s3://b/i", "--out", "s3://b/o", *extra])
    assert rc == 2 and message in capsys.readouterr().err
    assert api.seen == []


def test_submit_needs_the_pipeline_inputs(kfp_api: tuple[str, type[_KfpApi]], capsys: pytest.CaptureFixture) -> None:
    url, api = kfp_api
    assert main(["submit", "--host", url, "--namespace", "ns", "--out", "s3://b/o"]) == 2
    assert "pipeline 'netdiff': missing input_uri" in capsys.readouterr().err
    assert main(["submit", "--host", url, "--namespace", "ns", "--pipeline", "generate", "--out", "s3://b/o"]) == 2
    assert "missing model_uri" in capsys.readouterr().err
    assert api.seen == []


def test_sampling_and_max_packets_are_pipeline_parameters(compiled: tuple[str, dict, dict]) -> None:
    """Guidance, sampler steps and timing reach the generate step; max_packets (netdiff) the encode step."""
    name, spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    expected = {"sample_steps": ("NUMBER_INTEGER", 0), "guidance": ("NUMBER_DOUBLE", -1.0),
                "timing": ("STRING", "generated")}
    if name == "netdiff":
        expected["max_packets"] = ("NUMBER_INTEGER", 1024)
    for key, (kind, default) in expected.items():
        assert params[key]["parameterType"] == kind and params[key]["defaultValue"] == default, key
    tasks = all_tasks(spec)
    wired = tasks["generate"]["inputs"]["parameters"]
    assert {k: wired[k]["componentInputParameter"] for k in ("sample_steps", "guidance", "timing")} == {
        "sample_steps": "sample_steps", "guidance": "guidance", "timing": "timing"}
    if name == "netdiff":  # inside the ParallelFor body: the pipeline's parameter through the loop's channel
        assert tasks["encode"]["inputs"]["parameters"]["max_packets"]["componentInputParameter"] == (
            "pipelinechannel--max_packets")
