"""The cluster side, offline: every kustomization under ``manifests/`` builds with ``kubectl kustomize``, every
object validates against real schemas (``tests/k8s_schemas.py``: Kubernetes' own for built-in kinds, the vendored
Kueue and Profile CRDs for the rest) and misspelled fields fail; no real secret is committed; quotas and
queues fit together; the compiled pipelines parse strictly into KFP's ``PipelineSpec``/``PlatformSpec``; and the
names the compiled pipeline uses are the ones the manifests create."""

from __future__ import annotations

import copy
import subprocess
from typing import Any

import pytest
import yaml
from k8s_schemas import MANIFESTS, custom_kinds, kustomize, validate

from netdiff_lib.kfp_pipelines import compile_pipeline

pytest.importorskip("kfp.kubernetes")

OVERLAYS = ["base", "overlays/tenant-team-a", "overlays/tenant-team-b", "overlays/scheduling",
            "overlays/object-store"]
TENANTS = {"team-a": "overlays/tenant-team-a", "team-b": "overlays/tenant-team-b"}
REPO = MANIFESTS.parent


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize(MANIFESTS / name) for name in OVERLAYS}


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def test_every_kustomization_is_listed_and_builds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    tops = {p.parent.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("kustomization.yaml")}
    nested = {"overlays/tenant-team-a/namespaced"}  # built as part of its parent
    assert tops == set(OVERLAYS) | nested
    for name, docs in rendered.items():
        assert docs, f"{name} renders nothing"


def test_every_object_validates_against_its_schema(rendered: dict[str, list[dict[str, Any]]]) -> None:
    errors = [err for docs in rendered.values() for obj in docs for err in validate(obj)]
    assert errors == []
    kinds = {(d["apiVersion"], d["kind"]) for docs in rendered.values() for d in docs}
    assert {k for k in kinds if k in custom_kinds()} == {
        ("kubeflow.org/v1", "Profile"), ("kueue.x-k8s.io/v1beta2", "ClusterQueue"),
        ("kueue.x-k8s.io/v1beta2", "LocalQueue"), ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"),
        ("kueue.x-k8s.io/v1beta2", "WorkloadPriorityClass")}


def _mutated(docs: list[dict[str, Any]], kind: str, change: Any) -> dict[str, Any]:
    obj = copy.deepcopy(objects(docs, kind)[0])
    change(obj)
    return obj


def _rename(d: dict[str, Any], old: str, new: str) -> None:
    d[new] = d.pop(old)


MISTAKES = {  # kind, change, what the error must name
    "ClusterQueue cohortName": ("ClusterQueue", lambda o: _rename(o["spec"], "cohortName", "cohortNam"), "cohortNam"),
    "ClusterQueue v1beta1 cohort": ("ClusterQueue", lambda o: _rename(o["spec"], "cohortName", "cohort"), "cohort"),
    "ClusterQueue quota type": ("ClusterQueue", lambda o: o["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]
                                .update(nominalQuota="eight"), "'eight'"),
    "LocalQueue clusterQueue": ("LocalQueue", lambda o: _rename(o["spec"], "clusterQueue", "clusterQueu"),
                                "clusterQueu"),
    "ResourceFlavor nodeLabels": ("ResourceFlavor", lambda o: _rename(o["spec"], "nodeLabels", "nodeLabel"),
                                  "nodeLabel"),
    "WorkloadPriorityClass value": ("WorkloadPriorityClass", lambda o: o.update(value="high"), "'high'"),
    "Profile resourceQuotaSpec": ("Profile", lambda o: _rename(o["spec"], "resourceQuotaSpec", "resourceQuota"),
                                  "resourceQuota"),
    "Profile on a namespace": ("Profile", lambda o: o["metadata"].update(namespace="team-a"), "cluster-scoped"),
    "StatefulSet replicas": ("StatefulSet", lambda o: _rename(o["spec"], "replicas", "replica"), "replica"),
    "ResourceQuota hard": ("ResourceQuota", lambda o: _rename(o["spec"], "hard", "hardd"), "hardd"),
    "LimitRange default": ("LimitRange",
                           lambda o: _rename(o["spec"]["limits"][0], "defaultRequest", "defaultRequests"),
                           "defaultRequests"),
    "PriorityClass value": ("PriorityClass", lambda o: o.update(value="high"), "'high'"),
    "Role without namespace": ("Role", lambda o: o["metadata"].pop("namespace"), "names no namespace"),
    "unknown kind": ("LocalQueue", lambda o: o.update(kind="LocalQueues"), "no schema"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_misspelled_field_fails(rendered: dict[str, list[dict[str, Any]]], mistake: str) -> None:
    kind, change, named = MISTAKES[mistake]
    docs = [d for ds in rendered.values() for d in ds]
    assert validate(objects(docs, kind)[0]) == []
    errors = validate(_mutated(docs, kind, change))
    assert errors and any(named in e for e in errors), errors


def test_no_real_secret_is_committed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    secrets = [s for docs in rendered.values() for s in objects(docs, "Secret")]
    assert {s["metadata"]["name"] for s in secrets} == {"netdiff-object-store", "seaweedfs-s3-config"}
    for secret in secrets:
        assert "data" not in secret  # base64 would hide what is in it
        for key, value in secret["stringData"].items():
            values = [value] if key != "s3.json" else [
                c[f] for i in yaml.safe_load(value)["identities"] for c in i["credentials"] for f in c]
            assert all(v.startswith("REPLACE-WITH-") for v in values), (secret["metadata"]["name"], key)


def _quantity(value: Any) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}
    text = str(value)
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def test_namespace_quota_admits_what_kueue_may_admit(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Kueue's gated pods count against the ResourceQuota at creation: the namespace's quota must hold the
    team's nominal Kueue quota plus what it may borrow, or borrowing can never happen."""
    scheduling = rendered["overlays/scheduling"]
    for tenant, overlay in TENANTS.items():
        docs = rendered[overlay]
        profiles = objects(docs, "Profile")
        hard = (profiles[0]["spec"]["resourceQuotaSpec"]["hard"] if profiles
                else one(docs, "ResourceQuota")["spec"]["hard"])
        assert not [k for k in hard if k.startswith("limits.nvidia.com")], "extended resources: requests. only"
        queue = one(scheduling, "ClusterQueue", one(
            [q for q in objects(scheduling, "LocalQueue") if q["metadata"]["namespace"] == tenant],
            "LocalQueue")["spec"]["clusterQueue"])
        assert queue["spec"]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": tenant}
        (group,) = queue["spec"]["resourceGroups"]
        for res in group["flavors"][0]["resources"]:
            most = _quantity(res["nominalQuota"]) + _quantity(res.get("borrowingLimit", 0))
            assert _quantity(hard[f"requests.{res['name']}"]) >= most, (tenant, res["name"])


def test_every_tenant_has_a_queue_in_the_shared_cohort(rendered: dict[str, list[dict[str, Any]]]) -> None:
    scheduling = rendered["overlays/scheduling"]
    queues = objects(scheduling, "ClusterQueue")
    assert {q["spec"]["cohortName"] for q in queues} == {"netdiff-gpus"} and len(queues) == len(TENANTS)
    flavors = {f["metadata"]["name"] for f in objects(scheduling, "ResourceFlavor")}
    for queue in queues:
        for group in queue["spec"]["resourceGroups"]:
            assert {f["name"] for f in group["flavors"]} <= flavors
            assert "nvidia.com/gpu" in group["coveredResources"]
    assert {q["metadata"]["namespace"] for q in objects(scheduling, "LocalQueue")} == set(TENANTS)
    for tenant, overlay in TENANTS.items():  # the tenant overlays create the namespaces the queues live in
        made = {p["metadata"]["name"] for p in objects(rendered[overlay], "Profile")} | {
            n["metadata"]["name"] for n in objects(rendered[overlay], "Namespace")}
        assert made == {tenant}
        assert {d["metadata"].get("namespace") for d in rendered[overlay] if d["kind"] != "Profile"} <= {tenant, None}


# The compiled pipeline.


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    from pipelines._placement import LOCAL_QUEUE

    out = {}
    for name in ("netdiff", "generate"):
        path = compile_pipeline(name, tmp_path_factory.mktemp("ir") / f"{name}.yaml", queue=LOCAL_QUEUE)
        spec, platform = yaml.safe_load_all(path.read_text())
        out[name] = (spec, platform)
    return out


def test_compiled_pipelines_parse_strictly(compiled: dict[str, tuple[dict, dict]]) -> None:
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    for spec, platform in compiled.values():
        pipeline = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        assert pipeline.deployment_spec and pipeline.root.dag.tasks
        platform_spec = json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
        assert "kubernetes" in platform_spec.platforms
        bad = copy.deepcopy(spec)
        bad["root"]["dag"]["taskz"] = bad["root"]["dag"].pop("tasks")
        with pytest.raises(json_format.ParseError, match="taskz"):
            json_format.ParseDict(bad, pipeline_spec_pb2.PipelineSpec())


def _executors(platform: dict) -> dict[str, dict]:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_names_in_the_pipeline_are_the_ones_the_manifests_create(
        compiled: dict[str, tuple[dict, dict]], rendered: dict[str, list[dict[str, Any]]]) -> None:
    from pipelines import _placement

    base, scheduling = rendered["base"], rendered["overlays/scheduling"]
    for name, (spec, platform) in compiled.items():
        params = spec["root"]["inputDefinitions"]["parameters"]
        executors = _executors(platform)
        # Secret: the default s3_secret, with the keys the steps read.
        if "s3_secret" in params:
            secret = one(base, "Secret", params["s3_secret"]["defaultValue"])
            keys = {k["secretKey"] for e in executors.values() for s in e.get("secretAsEnv", [])
                    for k in s["keyToEnv"]}
            assert keys and keys <= set(secret["stringData"]), name
        # Queue and priorities: every label value names an object of the scheduling overlay.
        labels = {k: v for e in executors.values() for k, v in e.get("podMetadata", {}).get("labels", {}).items()}
        queued = [e["podMetadata"]["labels"] for e in executors.values() if "podMetadata" in e]
        assert queued and all(lab[_placement.KUEUE_LABEL] == _placement.LOCAL_QUEUE for lab in queued)
        assert {q["metadata"]["name"] for q in objects(scheduling, "LocalQueue")} == {labels[_placement.KUEUE_LABEL]}
        wanted = {lab[_placement.KUEUE_PRIORITY_LABEL] for lab in queued}
        assert wanted <= {w["metadata"]["name"] for w in objects(scheduling, "WorkloadPriorityClass")}
        assert wanted <= {p["metadata"]["name"] for p in objects(scheduling, "PriorityClass")}
        # GPU placement defaults: the ResourceFlavor selects the nodes the pipeline asks for.
        if "gpu_node_selector" in params:
            flavor = one(scheduling, "ResourceFlavor")["spec"]
            assert params["gpu_node_selector"]["defaultValue"] == flavor["nodeLabels"]
            assert params["gpu_toleration"]["defaultValue"] in flavor["tolerations"]
    # Service account: the one submit passes is created and bound in the base.
    account = one(base, "ServiceAccount")["metadata"]["name"]
    assert account == _placement.SERVICE_ACCOUNT
    binding = one(base, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "netdiff"}]
    assert one(base, "Role", binding["roleRef"]["name"])
    role_secrets = {n for r in one(base, "Role")["rules"] for n in r.get("resourceNames", [])}
    assert _placement.S3_SECRET in role_secrets
    launcher = yaml.safe_load(one(base, "ConfigMap", "kfp-launcher")["data"]["providers"])
    assert launcher["minio"]["default"]["credentials"]["secretRef"]["secretName"] == _placement.S3_SECRET


def test_images_in_the_pipeline_are_the_ones_the_build_script_tags(compiled: dict[str, tuple[dict, dict]]) -> None:
    out = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh"), "--print-tags"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    tags = dict(line.split("=", 1) for line in out.stdout.split())
    used = {c["container"]["image"] for spec, _ in compiled.values()
            for c in spec["deploymentSpec"]["executors"].values()}
    assert used == {tags["cpu"], tags["gpu"]}


def test_object_store_overlay_serves_the_endpoint_it_documents(rendered: dict[str, list[dict[str, Any]]]) -> None:
    store = rendered["overlays/object-store"]
    service = one(store, "Service", "seaweedfs")
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} >= {(9000, 8333)}
    sts = one(store, "StatefulSet", "seaweedfs")
    pod = sts["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (container,) = pod["spec"]["containers"]
    assert "-s3.config=/etc/seaweedfs/s3.json" in container["args"]
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == one(store, "Secret")["metadata"]["name"]
    job = one(store, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == container["image"] and "s3.bucket.create -name netdiff" in job["args"][0]
    assert ":latest" not in container["image"]
