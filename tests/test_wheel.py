"""An installed netdiff (a built wheel in a fresh virtual environment, outside the source tree) compiles the
pipelines: components/ and pipelines/ install with the package."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("kfp")


@pytest.mark.slow
def test_installed_wheel_compiles_the_pipelines(repo_root: Path, tmp_path: Path) -> None:
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from the source tree
    src = tmp_path / "src"  # a copy of what the wheel is built from (the build leaves build/ behind)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("netdiff_lib", "components", "pipelines"):
        shutil.copytree(repo_root / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(repo_root / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, env=env, timeout=300, cwd=elsewhere)
    (wheel,) = wheels.glob("netdiff-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # the dependencies come from this interpreter's site-packages (a virtual environment's too, which
    # --system-site-packages would miss), appended after the new venv's own; a plain path in a .pth file runs no
    # editable-install hook from there, so the wheel's netdiff_lib, components and pipelines are the ones found
    new_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(new_site, "_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", str(wheel)],
                   check=True, env=env, timeout=300, cwd=elsewhere)
    where = subprocess.run([str(python), "-c", "import netdiff_lib, pipelines, components; "
                            "print(netdiff_lib.__file__, pipelines.__file__, components.__file__)"],
                           capture_output=True, text=True, check=True, env=env, cwd=elsewhere).stdout.split()
    assert all(str(venv) in w for w in where), where
    for name in ("netdiff", "generate"):
        out = elsewhere / f"{name}.yaml"
        proc = subprocess.run([str(venv / "bin" / "netdiff"), "compile", "--pipeline", name, "-o", str(out)],
                              capture_output=True, text=True, env=env, timeout=300, cwd=elsewhere)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "sample_steps" in out.read_text() and "guidance" in out.read_text()
