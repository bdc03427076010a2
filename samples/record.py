#!/usr/bin/env python3
"""Record the project's small labelled sample captures from real programs on loopback.

Each capture is one short session of a real client against a real server, both bound to
127.0.0.1 (or ::1), recorded with ``tcpdump -i lo`` (Ethernet link type, zero MAC addresses)
with a capture filter limited to that session's ports (or ICMP echo identifier).  Output:
``<out>/<label>/<label>_<NN>.pcap`` plus ``<out>/manifest.json`` (the parameters of every capture).

Classes and programs:

* ``http``: curl (HTTP/1.1) against ``python3 -m http.server`` (HTTP/1.0 or 1.1), 1-3 files of 300 B-200 KB.
* ``dns``: dig/host (A, AAAA, TXT, MX; names that exist and NXDOMAIN) against dnsmasq ``--no-resolv``,
  over UDP and, in some captures, one ``dig +tcp`` lookup.
* ``icmp``: ping to 127.0.0.x and ::1 with varied counts, payload sizes and intervals.
* ``tls``: ``openssl s_server -WWW`` with a throw-away self-signed certificate, queried by ``curl -k`` or
  ``openssl s_client`` with varied TLS versions, cipher suites and response sizes.
* ``ssh``: sshd on a free port with a throw-away host key, config and client key (no PAM, key login for
  root), running short commands (or stopping after the key exchange).

Every parameter comes from a RNG seeded with ``--seed``, the label and the capture index, so re-recording
gives captures of the same shapes (timestamps, ephemeral ports and key material differ).  Needs root,
tcpdump, curl, dnsmasq, dig/host (dnsutils), ping (iputils-ping), openssl, OpenSSH (client and server).

    python3 samples/record.py --out samples/captures --per-class 10 --seed 7
    python3 samples/record.py --summary --out samples/captures      # markdown table of the captures
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLASSES: tuple[str, ...] = ("http", "dns", "icmp", "tls", "ssh")
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
MIN_PACKETS = 6
SSHD = "/usr/sbin/sshd"  # sshd refuses to start unless executed with an absolute path


class RecordError(RuntimeError):
    """A session could not be recorded."""


@dataclass
class Session:
    """What one capture holds: its filter and the parameters/commands that produced it."""

    label: str
    index: int
    params: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# process helpers


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port(udp: bool = False) -> int:
    """A port free on 127.0.0.1 for TCP (and UDP when ``udp``)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not udp:
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RecordError("no free port on 127.0.0.1")


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RecordError(f"timed out waiting for {what}")


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def file_contains(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Stop a process started by this script (in its own session) and everything it forked."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with_kill = True
        else:
            with_kill = False
        if with_kill:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    else:
        # the leader is gone; make sure forked children (sshd/dnsmasq per-connection) are too
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def server(argv: Sequence[str], logfile: Path, ready: Callable[[], bool], what: str, cwd: Path | None = None,
           stdin: int | None = subprocess.DEVNULL) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group until the block ends; wait until ``ready()``."""
    with logfile.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=stdin, cwd=cwd,
                                start_new_session=True)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                tail = logfile.read_text(errors="replace")[-2000:]
                raise RecordError(f"{what} exited with {proc.returncode}: {tail}")
            return ready()

        wait_for(up, 15.0, what)
        yield proc
    finally:
        stop(proc)


def run(argv: Sequence[str], session: Session, timeout: float = 30.0, stdin: bytes | None = None,
        ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess[bytes]:
    """Run a client command; remember it (shell-quoted, temp paths shortened) in the session record."""
    session.commands.append(" ".join(_short(a) for a in argv))
    res = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout, check=False,
                         start_new_session=True)
    if res.returncode not in ok:
        raise RecordError(f"{argv[0]} exited {res.returncode}: {res.stderr.decode(errors='replace')[-800:]}")
    return res


def _short(arg: str) -> str:
    tmp = tempfile.gettempdir()
    if arg.startswith(tmp + "/"):
        arg = "$TMP/" + arg.split("/", 3)[-1]
    return arg if arg and all(c.isalnum() or c in "-_./:=@+,%$" for c in arg) else repr(arg)


@contextmanager
def tcpdump(path: Path, bpf: str, workdir: Path) -> Iterator[None]:
    """Capture on ``lo`` with ``bpf`` into ``path``; started and listening on entry, flushed on exit."""
    errlog = workdir / "tcpdump.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = path.with_suffix(".pcap.part")
    argv = ["tcpdump", "-i", "lo", "-n", "-s", str(SNAPLEN), "-U", "--immediate-mode", "-Z", "root",
            "-w", str(tmp_out), bpf]
    with errlog.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                raise RecordError(f"tcpdump exited: {errlog.read_text(errors='replace')}")
            return file_contains(errlog, "listening on")

        wait_for(listening, 10.0, "tcpdump")
        time.sleep(0.3)
        yield
        time.sleep(0.5)  # let FIN/ACKs and late replies arrive
        stop(proc, signal.SIGINT, timeout=10.0)
        if not file_contains(errlog, "packets captured"):
            raise RecordError(f"tcpdump did not exit cleanly: {errlog.read_text(errors='replace')}")
        tmp_out.replace(path)
    finally:
        stop(proc, signal.SIGINT)
        tmp_out.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------
# content helpers


def log_uniform(rng: random.Random, lo: float, hi: float) -> int:
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


WORDS = ("packet", "flow", "diffusion", "netdiff", "loopback", "capture", "sample", "traffic", "label", "model",
         "matrix", "header", "payload", "session", "client", "server", "synthetic", "noise", "image", "byte")


def make_file(rng: random.Random, path: Path, size: int, kind: str) -> None:
    """A file of exactly ``size`` bytes: random binary, or text/HTML/JSON made of words."""
    if kind == "bin":
        data = rng.randbytes(size)
    else:
        parts: list[str] = []
        n = 0
        while n < size:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
            if kind == "html":
                line = f"<p>{line}</p>"
            elif kind == "json":
                line = json.dumps({"id": len(parts), "text": line}) + ","
            parts.append(line)
            n += len(line) + 1
        data = "\n".join(parts).encode()[:size]
    path.write_bytes(data)


def make_docroot(rng: random.Random, root: Path, count: int, lo: int, hi: int) -> list[tuple[str, int]]:
    files = []
    for i in range(count):
        kind = rng.choice(("bin", "txt", "html", "json"))
        size = log_uniform(rng, lo, hi)
        name = f"f{i}_{size}.{kind}"
        make_file(rng, root / name, size, kind)
        files.append((name, size))
    return files


# --------------------------------------------------------------------------------------------------------------
# classes: each recorder starts its servers, then records its clients inside tcpdump()


def record_http(rng: random.Random, s: Session, out: Path, work: Path) -> None:
    root = work / "www"
    root.mkdir()
    nreq = rng.randint(1, 3)
    files = make_docroot(rng, root, nreq, 300, 200_000)
    port = free_port()
    proto = rng.choice(("HTTP/1.0", "HTTP/1.1"))
    mode = rng.choice(("one-curl", "separate"))
    s.params.update(port=port, server_protocol=proto, requests=[f[0] for f in files], curl_mode=mode)
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root),
            "--protocol", proto, str(port)]
    with server(argv, work / "http.log", lambda: tcp_open(port), "http.server"):
        base = f"http://127.0.0.1:{port}/"
        with tcpdump(out, f"tcp port {port}", work):
            curl = ["curl", "-sS", "--http1.1", "-o", "/dev/null", "--max-time", "20"]
            if rng.random() < 0.3:
                curl += ["-H", f"User-Agent: netdiff-sample/{rng.randint(1, 9)}"]
            if mode == "one-curl":
                argv = list(curl)
                for i, (name, _) in enumerate(files):
                    argv += ([] if i == 0 else ["-o", "/dev/null"]) + [base + name]
                run(argv, s)
            else:
                for name, _ in files:
                    method = ["-I"] if rng.random() < 0.15 else []
                    run([*curl, *method, base + name], s)
                    time.sleep(rng.uniform(0.05, 0.6))
            if rng.random() < 0.2:
                run([*curl, base + "missing.html"], s)


DNS_ZONE = "netdiff.test"
DNS_HOSTS = {  # name -> addresses (all loopback)
    f"www.{DNS_ZONE}": ["127.0.0.10", "::1"],
    f"api.{DNS_ZONE}": ["127.0.0.11", "127.0.0.12"],
    f"mail.{DNS_ZONE}": ["127.0.0.13"],
    f"db.{DNS_ZONE}": ["127.0.0.14", "::1"],
    f"cache.{DNS_ZONE}": ["127.0.0.15"],
    f"v6only.{DNS_ZONE}": ["::1"],
}
DNS_TXT = {
    DNS_ZONE: "v=spf1 -all",
    f"_info.{DNS_ZONE}": "netdiff sample zone; loopback only",
    f"www.{DNS_ZONE}": "site=www",
}
DNS_MX = [(DNS_ZONE, f"mail.{DNS_ZONE}", 10), (f"api.{DNS_ZONE}", f"mail.{DNS_ZONE}", 20)]


def record_dns(rng: random.Random, s: Session, out: Path, work: Path) -> None:
    hosts = work / "hosts"
    hosts.write_text("".join(f"{a} {n}\n" for n, addrs in DNS_HOSTS.items() for a in addrs))
    port = free_port(udp=True)
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--no-poll", f"--addn-hosts={hosts}", f"--port={port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--pid-file=", "--log-facility=-", "--user=root",
            f"--local=/{DNS_ZONE}/", "--local=/test/", "--address=/wild.netdiff.test/127.0.0.20"]
    argv += [f"--txt-record={n},{t}" for n, t in DNS_TXT.items()]
    argv += [f"--mx-host={n},{h},{p}" for n, h, p in DNS_MX]
    names = [*DNS_HOSTS, DNS_ZONE, f"_info.{DNS_ZONE}", f"x{rng.randint(1, 99)}.wild.netdiff.test"]
    nqueries = rng.randint(4, 10)
    use_tcp = rng.random() < 0.5
    tcp_at = rng.randrange(nqueries) if use_tcp else -1
    s.params.update(port=port, queries=nqueries, tcp_query=use_tcp)
    with server(argv, work / "dnsmasq.log", lambda: tcp_open(port), "dnsmasq"), tcpdump(out, f"port {port}", work):
        for q in range(nqueries):
            qtype = rng.choice(("A", "A", "AAAA", "TXT", "MX"))
            if rng.random() < 0.25:
                name = f"{rng.choice(('nope', 'old', 'gone', 'tmp'))}{rng.randint(1, 999)}.{DNS_ZONE}"
            else:
                name = rng.choice(names)
            if q != tcp_at and rng.random() < 0.2:
                run(["host", "-W", "2", "-p", str(port), "-t", qtype, name + ".", "127.0.0.1"], s, ok=(0, 1))
            else:
                opts = ["+tries=1", "+time=2"]
                opts += rng.sample(["+noedns", "+nocookie", "+dnssec", "+norec", "+bufsize=1232"],
                                   rng.randint(0, 2))
                if q == tcp_at:
                    opts.append("+tcp")
                run(["dig", "@127.0.0.1", "-p", str(port), *opts, name, qtype], s)
            time.sleep(rng.uniform(0.02, 0.4))


def record_icmp(rng: random.Random, s: Session, out: Path, work: Path) -> None:
    ident = rng.randint(1, 0xFFFF)
    runs = []
    for _ in range(rng.choice((1, 1, 2))):
        target = rng.choice(("127.0.0.1", "127.0.0.1", f"127.0.0.{rng.randint(2, 254)}", "::1"))
        count = rng.randint(6, 16)
        size = rng.choice((16, 32, 56, 56, 64, 100, 200, 512, 1000, 1400))  # >= 16: room for ping's timestamp
        interval = rng.choice((0.05, 0.1, 0.2, 0.2, 0.3, 0.5))
        interval = min(interval, 3.5 / count)
        runs.append((target, count, size, round(interval, 2)))
    if rng.random() < 0.3 and all(r[0] != "::1" for r in runs):
        runs.append(("::1", rng.randint(3, 8), rng.choice((56, 120, 900)), 0.2))
    s.params.update(ident=ident, pings=[dict(zip(("target", "count", "size", "interval"), r, strict=True))
                                        for r in runs])
    bpf = f"(icmp and icmp[4:2] == {ident}) or (icmp6 and icmp6[4:2] == {ident})"
    with tcpdump(out, bpf, work):
        for target, count, size, interval in runs:
            argv = ["ping", "-n", "-e", str(ident), "-c", str(count), "-s", str(size), "-i", str(interval),
                    "-W", "2"]
            if target == "::1":
                argv.insert(1, "-6")
            if rng.random() < 0.3:
                argv += ["-p", f"{rng.randrange(256):02x}{rng.randrange(256):02x}"]
            if rng.random() < 0.2 and target != "::1":
                argv += ["-t", str(rng.choice((16, 32, 128)))]
            run([*argv, target], s, timeout=30)
            time.sleep(rng.uniform(0.1, 0.5))


TLS12_RSA = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305",
             "AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA256", "DHE-RSA-AES256-GCM-SHA384")
TLS12_EC = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-ECDSA-AES128-SHA256")
TLS13 = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")


def record_tls(rng: random.Random, s: Session, out: Path, work: Path) -> None:
    root = work / "www"
    root.mkdir()
    nreq = rng.randint(1, 3)
    files = make_docroot(rng, root, nreq, 200, 100_000)
    key_type = rng.choice(("rsa:2048", "ec"))
    key, cert = work / "key.pem", work / "cert.pem"
    newkey = ["-newkey", "rsa:2048"] if key_type != "ec" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost/O=netdiff sample", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    port = free_port()
    tickets = rng.choice((0, 1, 2))
    s.params.update(port=port, key=key_type, session_tickets=tickets, requests=[f[0] for f in files], clients=[])
    log_path = work / "s_server.log"
    argv = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
            "-WWW", "-http_server_binmode", "-num_tickets", str(tickets)]
    with server(argv, log_path, lambda: file_contains(log_path, "ACCEPT"), "openssl s_server", cwd=root,
                stdin=subprocess.PIPE), tcpdump(out, f"tcp port {port}", work):
        for name, _ in files:
            version = rng.choice(("1.2", "1.3", "1.3"))
            cipher = rng.choice(TLS12_EC if key_type == "ec" else TLS12_RSA) if version == "1.2" else rng.choice(TLS13)
            client = rng.choice(("curl", "s_client"))
            s.params["clients"].append({"client": client, "tls": version, "cipher": cipher, "path": name})
            url = f"https://127.0.0.1:{port}/{name}"
            if client == "curl":
                argv = ["curl", "-sS", "-k", "--http1.1", "-o", "/dev/null", "--max-time", "20"]
                argv += (["--tlsv1.2", "--tls-max", "1.2", "--ciphers", cipher] if version == "1.2"
                         else ["--tlsv1.3", "--tls13-ciphers", cipher])
                run([*argv, url], s)
            else:
                argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                        "-quiet", "-ign_eof"]
                argv += (["-tls1_2", "-cipher", cipher] if version == "1.2" else ["-tls1_3", "-ciphersuites", cipher])
                req = f"GET /{name} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode()
                run(argv, s, stdin=req)
            time.sleep(rng.uniform(0.05, 0.5))


SSH_KEX = ("curve25519-sha256", "sntrup761x25519-sha512@openssh.com", "ecdh-sha2-nistp256",
           "diffie-hellman-group14-sha256", "ecdh-sha2-nistp384")
SSH_CIPHERS = ("chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr",
               "aes256-ctr")
SSH_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "umac-64-etm@openssh.com",
            "hmac-sha2-256")


def keygen(path: Path, kind: str) -> None:
    bits = {"rsa": ["-b", "2048"], "ecdsa": ["-b", "256"], "ed25519": []}[kind]
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", "netdiff-sample", "-f", str(path)],
                   check=True, capture_output=True, timeout=60)


def record_ssh(rng: random.Random, s: Session, out: Path, work: Path) -> None:
    host_kind = rng.choice(("ed25519", "ecdsa", "rsa"))
    client_kind = rng.choice(("ed25519", "ecdsa", "rsa"))
    host_key, client_key = work / "host_key", work / "client_key"
    keygen(host_key, host_kind)
    keygen(client_key, client_kind)
    auth = work / "authorized_keys"
    shutil.copyfile(client_key.with_suffix(".pub"), auth)
    port = free_port()
    cfg = work / "sshd_config"
    cfg.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {work / 'sshd.pid'}",
        "UsePAM no", "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", f"AuthorizedKeysFile {auth}",
        "StrictModes no", "UseDNS no", "PrintMotd no", "PrintLastLog no", "X11Forwarding no",
        "AllowTcpForwarding no", "PermitTTY no", "LogLevel ERROR", "",
    ]))
    privsep = Path("/run/sshd")  # sshd's compiled-in privilege separation directory
    made_privsep = not privsep.exists()
    if made_privsep:
        privsep.mkdir(mode=0o755, parents=True)
    kex, cipher = rng.choice(SSH_KEX), rng.choice(SSH_CIPHERS)
    mac = rng.choice(SSH_MACS)
    compress = rng.random() < 0.25
    kex_only = rng.random() < 0.2
    commands: list[str] = []
    if not kex_only:
        for _ in range(rng.choice((1, 1, 2))):
            c = rng.random()
            if c < 0.3:
                commands.append(f"echo netdiff-sample-{rng.randint(1, 9999)}")
            elif c < 0.8:
                commands.append(f"head -c {log_uniform(rng, 64, 24_000)} /dev/urandom | base64")
            else:
                commands.append(f"seq 1 {rng.randint(10, 2000)}")
    s.params.update(port=port, host_key=host_kind, client_key=client_kind, kex=kex, cipher=cipher,
                    mac=None if "gcm" in cipher or "chacha" in cipher else mac, compression=compress,
                    kex_only=kex_only, remote_commands=commands)
    ssh = ["ssh", "-F", "/dev/null", "-i", str(client_key), "-p", str(port), "-o", "IdentitiesOnly=yes",
           "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
           "-o", f"KexAlgorithms={kex}", "-o", f"Ciphers={cipher}", "-o", f"MACs={mac}",
           "-o", f"HostKeyAlgorithms={_hostkey_alg(host_kind)}", "-T"]
    if compress:
        ssh.append("-C")
    try:
        with server([SSHD, "-D", "-e", "-f", str(cfg)], work / "sshd.log", lambda: tcp_open(port), "sshd"):
            time.sleep(0.2)  # the readiness probe's preauth child exits
            with tcpdump(out, f"tcp port {port}", work):
                if kex_only:
                    run([*ssh, "-o", "PreferredAuthentications=none", "root@127.0.0.1", "true"], s, ok=(255,))
                for cmd in commands:
                    run([*ssh, "root@127.0.0.1", cmd], s)
                    time.sleep(rng.uniform(0.05, 0.5))
    finally:
        if made_privsep:
            shutil.rmtree(privsep, ignore_errors=True)


def _hostkey_alg(kind: str) -> str:
    return {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp256", "rsa": "rsa-sha2-512,rsa-sha2-256"}[kind]


RECORDERS: dict[str, Callable[[random.Random, Session, Path, Path], None]] = {
    "http": record_http, "dns": record_dns, "icmp": record_icmp, "tls": record_tls, "ssh": record_ssh,
}


# --------------------------------------------------------------------------------------------------------------
# pcap reading (stdlib): packet counts and the loopback-only check


@dataclass
class PcapInfo:
    packets: int
    bytes_on_wire: int
    file_size: int
    duration: float
    problems: list[str]


def inspect_pcap(path: Path) -> PcapInfo:
    """Count packets and check link type, zero MACs and that every IP address is loopback."""
    data = path.read_bytes()
    problems: list[str] = []
    if len(data) < 24:
        return PcapInfo(0, 0, len(data), 0.0, ["truncated global header"])
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<",
              b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    if endian is None:
        return PcapInfo(0, 0, len(data), 0.0, ["not a classic pcap file"])
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    if linktype != LINKTYPE_ETHERNET:
        problems.append(f"link type {linktype}, expected Ethernet")
    off, n, wire, first, last = 24, 0, 0, None, 0.0
    while off < len(data):
        if off + 16 > len(data):
            problems.append("truncated record header")
            break
        sec, frac, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16: off + 16 + incl]
        off += 16 + incl
        if len(pkt) != incl:
            problems.append("truncated packet")
            break
        ts = sec + frac / (1e9 if nano else 1e6)
        first = ts if first is None else first
        last = ts
        n += 1
        wire += orig
        if incl != orig:
            problems.append(f"packet {n} cut at {incl} of {orig} bytes")
        if pkt[:12] != bytes(12):
            problems.append(f"packet {n}: non-zero MAC address")
        etype = int.from_bytes(pkt[12:14], "big")
        for addr in _addresses(etype, pkt[14:]):
            if not addr.is_loopback:
                problems.append(f"packet {n}: non-loopback address {addr}")
        if etype not in (0x0800, 0x86DD):
            problems.append(f"packet {n}: ethertype {etype:#06x}")
    return PcapInfo(n, wire, len(data), (last - first) if first is not None else 0.0, problems)


def _addresses(etype: int, ip: bytes) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if etype == 0x0800 and len(ip) >= 20:
        addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ipaddress.IPv4Address(ip[12:16]),
                                                                       ipaddress.IPv4Address(ip[16:20])]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] == 1 and len(ip) >= ihl + 8 + 20 and ip[ihl] in (3, 11, 12):  # ICMP error: quoted header
            q = ip[ihl + 8:]
            addrs += [ipaddress.IPv4Address(q[12:16]), ipaddress.IPv4Address(q[16:20])]
        return addrs
    if etype == 0x86DD and len(ip) >= 40:
        return [ipaddress.IPv6Address(ip[8:24]), ipaddress.IPv6Address(ip[24:40])]
    return []


# --------------------------------------------------------------------------------------------------------------
# driver


def record_one(label: str, index: int, seed: int, out_dir: Path, attempts: int = 3) -> tuple[Session, PcapInfo]:
    path = out_dir / label / f"{label}_{index:02d}.pcap"
    last_err: Exception | None = None
    for attempt in range(attempts):
        rng = random.Random(f"netdiff-samples:{seed}:{label}:{index}")
        session = Session(label, index)
        with tempfile.TemporaryDirectory(prefix=f"netdiff-{label}-") as tmp:
            try:
                RECORDERS[label](rng, session, path, Path(tmp))
            except (RecordError, subprocess.SubprocessError, OSError) as exc:
                last_err = exc
                log(f"  {path.name}: attempt {attempt + 1} failed: {exc}")
                path.unlink(missing_ok=True)
                continue
        info = inspect_pcap(path)
        if info.packets >= MIN_PACKETS and not info.problems:
            return session, info
        last_err = RecordError(f"{info.packets} packets, problems: {info.problems[:5]}")
        log(f"  {path.name}: attempt {attempt + 1} rejected: {last_err}")
        path.unlink(missing_ok=True)
    raise RecordError(f"{path}: giving up after {attempts} attempts: {last_err}")


def program_versions() -> dict[str, str]:
    probes = {
        "tcpdump": ["tcpdump", "--version"], "curl": ["curl", "--version"], "dnsmasq": ["dnsmasq", "--version"],
        "dig": ["dig", "-v"], "ping": ["ping", "-V"], "openssl": ["openssl", "version"], "openssh": ["ssh", "-V"],
        "python": [sys.executable, "--version"],
    }
    versions = {}
    for name, argv in probes.items():
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            text = (res.stdout + res.stderr).strip().splitlines()
            versions[name] = text[0] if text else "?"
        except (OSError, subprocess.SubprocessError):
            versions[name] = "missing"
    return versions


def check_tools(labels: Sequence[str]) -> None:
    need = {"http": ["curl"], "dns": ["dnsmasq", "dig", "host"], "icmp": ["ping"], "tls": ["openssl", "curl"],
            "ssh": ["ssh", "ssh-keygen", SSHD]}
    missing = sorted({t for lb in labels for t in ["tcpdump", *need[lb]] if shutil.which(t) is None})
    if missing:
        raise SystemExit(f"missing programs: {', '.join(missing)} (apt-get install tcpdump curl dnsmasq dnsutils "
                         "iputils-ping openssl openssh-client openssh-server)")
    if os.geteuid() != 0:
        raise SystemExit("needs root (tcpdump on lo, sshd, raw ICMP with a chosen identifier)")


def summary_table(out_dir: Path, per_file: bool = False) -> str:
    rows = ["| class | captures | packets (total) | packets min / median / max | wire bytes | file bytes |",
            "|---|---:|---:|---|---:|---:|"]
    detail = ["| file | packets | wire bytes | file bytes | duration s |", "|---|---:|---:|---:|---:|"]
    tot = [0, 0, 0, 0]
    for label_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        infos = [(p, inspect_pcap(p)) for p in sorted(label_dir.glob("*.pcap"))]
        if not infos:
            continue
        counts = sorted(i.packets for _, i in infos)
        med = statistics.median(counts)
        row = [len(infos), sum(counts), sum(i.bytes_on_wire for _, i in infos), sum(i.file_size for _, i in infos)]
        tot = [a + b for a, b in zip(tot, row, strict=True)]
        rows.append(f"| {label_dir.name} | {row[0]} | {row[1]} | {counts[0]} / {med:g} / {counts[-1]} | {row[2]} | "
                    f"{row[3]} |")
        for p, i in infos:
            detail.append(f"| {label_dir.name}/{p.name} | {i.packets} | {i.bytes_on_wire} | {i.file_size} | "
                          f"{i.duration:.2f} |")
    rows.append(f"| **all** | {tot[0]} | {tot[1]} | | {tot[2]} | {tot[3]} |")
    return "\n".join(rows + (["", *detail] if per_file else [])) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "captures",
                    help="output folder (default: samples/captures next to this script)")
    ap.add_argument("--per-class", type=int, default=10, help="captures per class (default 10)")
    ap.add_argument("--classes", default=",".join(CLASSES), help=f"comma-separated subset of {','.join(CLASSES)}")
    ap.add_argument("--seed", type=int, default=7, help="RNG seed for all session parameters (default 7)")
    ap.add_argument("--summary", action="store_true", help="only print a markdown table of the captures in --out")
    ap.add_argument("--per-file", action="store_true", help="with --summary: add a per-file table")
    args = ap.parse_args(argv)

    out_dir: Path = args.out
    if args.summary:
        print(summary_table(out_dir, args.per_file), end="")
        return 0
    labels = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = [c for c in labels if c not in RECORDERS]
    if unknown or not labels:
        ap.error(f"unknown classes {unknown}; choose from {','.join(CLASSES)}")
    if args.per_class < 1 or args.per_class > 99:
        ap.error("--per-class must be 1..99")
    check_tools(labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    manifest: dict[str, Any] = {"captures": {}}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    manifest["recorded_with"] = program_versions()
    failures = 0
    for label in labels:
        label_dir = out_dir / label
        label_dir.mkdir(exist_ok=True)
        for old in label_dir.glob(f"{label}_*.pcap"):  # idempotent: the class is re-recorded as a whole
            old.unlink()
        manifest["captures"] = {k: v for k, v in manifest["captures"].items() if not k.startswith(label + "/")}
        for index in range(1, args.per_class + 1):
            try:
                session, info = record_one(label, index, args.seed, out_dir)
            except RecordError as exc:
                log(f"FAILED {exc}")
                failures += 1
                continue
            key = f"{label}/{label}_{index:02d}.pcap"
            manifest["captures"][key] = {"label": label, "seed": args.seed, "packets": info.packets,
                                         "params": session.params, "commands": session.commands}
            log(f"{key}: {info.packets} packets, {info.file_size} bytes")
    manifest["captures"] = dict(sorted(manifest["captures"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    print(summary_table(out_dir), end="")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
