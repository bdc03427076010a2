"""Every reconstructed pcap replays with tcpreplay onto an interface inside a throw-away network namespace.

The namespace gets a ``dummy`` link where the kernel has that type, otherwise a veth pair with both ends inside
it, so no real interface ever sees the packets; it is deleted afterwards, whatever happens.  The files are the
adversarial corpus of ``test_repair_adversarial.py`` plus the sample captures' reconstructions.  Skipped (with the
reason) only when not root, or when ``ip netns`` or tcpreplay is unavailable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_repair_adversarial import adversarial_corpus, reconstruct_corpus

from netdiff_lib.nprint import encode_pcap
from netdiff_lib.repair import reconstruct
from netdiff_lib.schema import NETDIFFUSION

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "captures"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def namespace() -> Iterator[tuple[str, str]]:
    """(namespace, interface) for replaying; deleted at the end."""
    if os.geteuid() != 0:
        pytest.skip("replay needs root (to create a network namespace)")
    if shutil.which("ip") is None or _run("ip", "netns", "list", check=False).returncode != 0:
        pytest.skip("`ip netns` is not available")
    if shutil.which("tcpreplay") is None:
        pytest.skip("tcpreplay is not installed")
    ns = f"netdiff-replay-{uuid.uuid4().hex[:8]}"
    if _run("ip", "netns", "add", ns, check=False).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    try:
        if _run("ip", "-n", ns, "link", "add", "nd0", "type", "dummy", check=False).returncode == 0:
            links = ["nd0"]
        else:  # no dummy driver: a veth pair, both ends in the namespace
            _run("ip", "-n", ns, "link", "add", "nd0", "type", "veth", "peer", "name", "nd1")
            links = ["nd0", "nd1"]
        for link in links:
            _run("ip", "-n", ns, "link", "set", link, "up")
        yield ns, "nd0"
    finally:
        _run("ip", "netns", "del", ns, check=False)


def _replay(ns: str, iface: str, files: list[Path]) -> int:
    """Replay files at top speed; returns the packets sent (asserts that none failed)."""
    sent = 0
    for start in range(0, len(files), 200):
        chunk = [str(f) for f in files[start:start + 200]]
        proc = _run("ip", "netns", "exec", ns, "tcpreplay", "-i", iface, "--topspeed", *chunk, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        ok = [int(x) for x in re.findall(r"Successful packets:\s+(\d+)", proc.stdout)]
        failed = [int(x) for x in re.findall(r"Failed packets:\s+(\d+)", proc.stdout)]
        assert not any(failed), proc.stdout[-2000:]
        sent += sum(ok)
    return sent


def test_every_reconstructed_pcap_replays(namespace: tuple[str, str], tmp_path: Path) -> None:
    ns, iface = namespace
    outputs = reconstruct_corpus(adversarial_corpus(), tmp_path)
    files = [path for _, rec, path in outputs if len(rec)]
    expected = sum(len(rec) for _, rec, _ in outputs)
    for f in sorted(SAMPLES.glob("*/*.pcap")):
        rec = reconstruct(encode_pcap(f, NETDIFFUSION).trace.matrix, label=f.stem)
        files.append(rec.write(tmp_path / "samples" / f.name))
        expected += len(rec)
    assert len(files) > 1000
    assert _replay(ns, iface, files) == expected


def test_namespace_is_private(namespace: tuple[str, str]) -> None:
    ns, iface = namespace
    assert _run("ip", "-n", ns, "link", "show", iface, check=False).returncode == 0
    assert _run("ip", "link", "show", iface, check=False).returncode != 0  # not in the root namespace
