"""Tests of ``netdiff_lib.storage`` on local paths and against a real S3 server (``weed mini``, see conftest)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdiff_lib import storage
from netdiff_lib.errors import NetdiffError
from netdiff_lib.storage import S3Config, StorageError

MIB = 1024 * 1024


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tree(root: Path) -> dict[str, bytes]:
    files = {"a/one.pcap": b"1" * 10, "a/two.PCAP": b"2" * 20, "b/deep/three.pcapng": b"3", "top.cap": b"t",
             "notes.txt": b"n", ".hidden.pcap": b"h", ".git/x.pcap": b"g"}
    for rel, data in files.items():
        _write(root / rel, data)
    return files


def _all_keys(server, bucket: str) -> list[str]:
    """Every key in the bucket, hidden ones included (straight from the server)."""
    return sorted(o.object_name for o in server.client().list_objects(bucket, recursive=True))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------ local paths


def test_local_put_get_copy_and_folder_targets(tmp_path: Path) -> None:
    src = _write(tmp_path / "src" / "f.pcap", b"abc")
    assert storage.put(src, tmp_path / "out" / "g.pcap") == str(tmp_path / "out" / "g.pcap")
    assert (tmp_path / "out" / "g.pcap").read_bytes() == b"abc"
    assert storage.put(src, str(tmp_path / "out") + "/") == str(tmp_path / "out" / "f.pcap")
    assert storage.get(tmp_path / "out" / "g.pcap", tmp_path / "out") == tmp_path / "out" / "g.pcap"
    assert storage.get(f"file://{src}", tmp_path / "copy.pcap").read_bytes() == b"abc"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.pcap", "g.pcap"]  # no temporary files


def test_local_listing_is_sorted_filtered_and_skips_hidden(tmp_path: Path) -> None:
    _tree(tmp_path)
    caps = storage.list_uri(tmp_path, suffixes=(".pcap", ".pcapng", ".cap"))
    assert [storage.relative(u, tmp_path) for u in caps] == ["a/one.pcap", "a/two.PCAP", "b/deep/three.pcapng",
                                                             "top.cap"]
    assert storage.list_uri(tmp_path, recursive=False) == [str(tmp_path / "notes.txt"), str(tmp_path / "top.cap")]
    assert storage.list_uri(tmp_path / "top.cap") == [str(tmp_path / "top.cap")]
    assert storage.list_uri(tmp_path, suffixes=".txt") == [str(tmp_path / "notes.txt")]


def test_local_missing_paths_raise_storage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for call in (lambda: storage.list_uri(missing), lambda: storage.get(missing, tmp_path / "x"),
                 lambda: storage.put(missing, tmp_path / "x"), lambda: storage.put_dir(missing, "y")):
        with pytest.raises(StorageError, match="nope"):
            call()
    with pytest.raises(StorageError, match="nope"), storage.open_local(tmp_path / "nope"):
        pass
    assert issubclass(StorageError, NetdiffError)
    assert not storage.exists(tmp_path / "nope") and storage.exists(tmp_path)


def test_local_dirs_and_open_local(tmp_path: Path) -> None:
    files = _tree(tmp_path / "src")
    copied = storage.put_dir(tmp_path / "src", tmp_path / "dst")
    assert len(copied) == 5
    got = storage.get_dir(tmp_path / "dst", tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in got) == sorted(
        r for r in files if not r.startswith("."))
    with storage.open_local(tmp_path / "src" / "top.cap") as path:
        assert path == tmp_path / "src" / "top.cap"
    assert path.exists()  # a local file is used in place, never deleted


def test_uri_helpers() -> None:
    assert storage.is_remote("s3://b/k") and storage.is_remote("MINIO://b/k") and not storage.is_remote("/a/b")
    assert not storage.is_remote("gs://b/k") and not storage.is_remote(Path("s3:/x"))
    assert storage.join("s3://bkt", "a", "/b/", "c.pcap") == "s3://bkt/a/b/c.pcap"
    assert storage.join("minio://bkt/p/", "x") == "minio://bkt/p/x"
    assert storage.join("/tmp/a", "b", "c") == "/tmp/a/b/c"
    assert storage.relative("s3://bkt/p/a/b.pcap", "s3://bkt/p/") == "a/b.pcap"
    assert storage.relative("s3://bkt/p/a.pcap", "s3://bkt/p/a.pcap") == "a.pcap"
    with pytest.raises(ValueError):
        storage.relative("s3://bkt/p2/a.pcap", "s3://bkt/p")


# ------------------------------------------------------------------------------------------------ configuration


def test_config_from_env() -> None:
    base = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    cfg = S3Config.from_env(env={**base, "NETDIFF_S3_ENDPOINT": "https://store.example:9000"})
    assert (cfg.endpoint, cfg.secure, cfg.url) == ("store.example:9000", True, "https://store.example:9000")
    cfg = S3Config.from_env(env={"MINIO_ENDPOINT": "seaweedfs.kubeflow:9000", "NETDIFF_S3_SECURE": "false",
                                 "MINIO_ACCESS_KEY": "m", "MINIO_SECRET_KEY": "n", "AWS_REGION": "minio"})
    assert (cfg.endpoint, cfg.secure, cfg.access_key, cfg.region) == ("seaweedfs.kubeflow:9000", False, "m", "minio")
    assert S3Config.from_env(env={**base, "AWS_ENDPOINT_URL": "s.example"}).secure  # TLS unless told otherwise
    secret = S3Config.from_env(env={**base, "AWS_SECRET_ACCESS_KEY": "s3cr3t", "MINIO_ENDPOINT": "h"})
    assert secret.secret_key == "s3cr3t" and "s3cr3t" not in repr(secret)
    bad = [({**base}, "NETDIFF_S3_ENDPOINT"),
           ({"NETDIFF_S3_ENDPOINT": "http://h:1", "AWS_ACCESS_KEY_ID": "a"}, "credentials"),
           ({**base, "NETDIFF_S3_ENDPOINT": "ftp://h"}, "scheme"),
           ({**base, "NETDIFF_S3_ENDPOINT": "http://h:1/path"}, "without a path"),
           ({**base, "NETDIFF_S3_ENDPOINT": "http://h:1", "NETDIFF_S3_SECURE": "1"}, "contradicts"),
           ({**base, "NETDIFF_S3_ENDPOINT": "h:1", "NETDIFF_S3_SECURE": "maybe"}, "not a boolean"),
           ({**base, "NETDIFF_S3_ENDPOINT": "h:1", "NETDIFF_S3_PART_SIZE": "1000"}, "minimum"),
           ({**base, "NETDIFF_S3_ENDPOINT": "h:1", "NETDIFF_S3_RETRIES": "x"}, "not a number")]
    for env, message in bad:
        with pytest.raises(StorageError, match=message) as info:
            S3Config.from_env("s3://bkt/k", env=env)
        assert info.value.uri == "s3://bkt/k"


def test_missing_configuration_names_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NETDIFF_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(StorageError, match=r"s3://bkt/x\.pcap: no object-store endpoint"):
        storage.get("s3://bkt/x.pcap", "/tmp/never")


def test_minio_is_imported_lazily_with_an_install_hint() -> None:
    code = ("import sys; import netdiff_lib.storage as s; assert 'minio' not in sys.modules; "
            "s.list_uri('.'); sys.modules['minio'] = None\n"
            "try:\n s.list_uri('s3://bkt/p')\nexcept s.StorageError as e:\n print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert "s3://bkt/p" in out.stdout and "pip install netdiff[s3]" in out.stdout


# ------------------------------------------------------------------------------------------------ S3 round trips


def test_put_get_list_exists_round_trip(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.make_bucket()
    data = os.urandom(100_000)
    uri = storage.put(_write(tmp_path / "x.pcap", data), f"s3://{bucket}/runs/1/x.pcap")
    assert uri == f"s3://{bucket}/runs/1/x.pcap"
    assert storage.get(uri, tmp_path / "back.pcap").read_bytes() == data
    assert storage.exists(uri) and storage.exists(f"s3://{bucket}/runs") and storage.exists(f"s3://{bucket}")
    assert not storage.exists(f"s3://{bucket}/runs/1/y.pcap") and not storage.exists(f"s3://{bucket}/run")
    assert storage.list_uri(f"s3://{bucket}/runs") == [uri]
    stat = s3_env.client().stat_object(bucket, "runs/1/x.pcap")
    assert stat.metadata.get("x-amz-meta-sha256") == hashlib.sha256(data).hexdigest()
    assert stat.etag.strip('"') == hashlib.md5(data).hexdigest()
    # KFP's minio:// names the same object; a trailing "/" takes the file's name
    assert storage.get(f"minio://{bucket}/runs/1/x.pcap", tmp_path / "m.pcap").read_bytes() == data
    assert storage.put(tmp_path / "m.pcap", f"minio://{bucket}/other/") == f"minio://{bucket}/other/m.pcap"
    assert storage.list_uri(f"minio://{bucket}/other") == [f"minio://{bucket}/other/m.pcap"]


def test_overwrite_and_empty_file(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.make_bucket()
    uri = f"s3://{bucket}/f.bin"
    storage.put(_write(tmp_path / "a", b"first version"), uri)
    storage.put(_write(tmp_path / "b", b"second"), uri)
    assert storage.get(uri, tmp_path / "c").read_bytes() == b"second"
    storage.put(_write(tmp_path / "empty", b""), f"s3://{bucket}/empty")
    assert storage.get(f"s3://{bucket}/empty", tmp_path / "e").read_bytes() == b""
    assert _all_keys(s3_env, bucket) == ["empty", "f.bin"]


def test_listing_treats_a_prefix_as_a_folder(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.make_bucket()
    files = _tree(tmp_path / "src")
    storage.put_dir(tmp_path / "src", f"s3://{bucket}/data")
    client = s3_env.client()
    for key in ("data2/x.pcap", "data/.hidden/y.pcap", "datax.pcap"):
        client.put_object(bucket, key, io.BytesIO(b"z"), 1)
    caps = storage.list_uri(f"s3://{bucket}/data", suffixes=(".pcap", ".pcapng", ".cap"))
    assert caps == [f"s3://{bucket}/data/{r}" for r in ("a/one.pcap", "a/two.PCAP", "b/deep/three.pcapng", "top.cap")]
    assert storage.list_uri(f"s3://{bucket}/data/", recursive=False) == [
        f"s3://{bucket}/data/notes.txt", f"s3://{bucket}/data/top.cap"]
    assert storage.list_uri(f"s3://{bucket}/data/top.cap") == [f"s3://{bucket}/data/top.cap"]
    assert storage.list_uri(f"s3://{bucket}/nothing-here") == []
    back = storage.get_dir(f"s3://{bucket}/data", tmp_path / "back")
    assert {p.relative_to(tmp_path / "back").as_posix(): p.read_bytes() for p in back} == {
        r: d for r, d in files.items() if not r.startswith(".")}


def test_multipart_upload_above_the_part_size(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETDIFF_S3_PART_SIZE", str(5 * MIB))
    bucket = s3_env.make_bucket()
    data = os.urandom(12 * MIB + 123)
    uri = storage.put(_write(tmp_path / "big.bin", data), f"s3://{bucket}/big/big.bin")
    stat = s3_env.client().stat_object(bucket, "big/big.bin")
    assert stat.size == len(data) and stat.etag.strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert stat.metadata.get("x-amz-meta-sha256") == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(storage.get(uri, tmp_path / "back.bin").read_bytes()).digest() == hashlib.sha256(
        data).digest()
    assert _all_keys(s3_env, bucket) == ["big/big.bin"]


def test_atomic_publish_leaves_no_temporary_key(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_env.make_bucket()
    src = _tree(tmp_path / "src")
    storage.put_dir(tmp_path / "src", f"s3://{bucket}/p")
    assert _all_keys(s3_env, bucket) == sorted(f"p/{r}" for r in src if not r.startswith("."))
    # A failed check after the upload publishes nothing and removes the temporary key.
    monkeypatch.setattr(storage, "_digests", lambda path, part_size: ("0" * 64, "0" * 32))
    with pytest.raises(StorageError, match=rf"s3://{bucket}/p/new\.pcap: .*mismatch"):
        storage.put(tmp_path / "src" / "top.cap", f"s3://{bucket}/p/new.pcap")
    assert "p/new.pcap" not in _all_keys(s3_env, bucket)
    assert not [k for k in _all_keys(s3_env, bucket) if "netdiff-tmp" in k]


def test_download_verifies_the_attached_checksum(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.make_bucket()
    s3_env.client().put_object(bucket, "bad.bin", io.BytesIO(b"payload"), 7, metadata={"sha256": "0" * 64})
    with pytest.raises(StorageError, match="sha256 mismatch"):
        storage.get(f"s3://{bucket}/bad.bin", tmp_path / "bad.bin")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_open_local_downloads_to_a_temporary_file(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.make_bucket()
    uri = storage.put(_write(tmp_path / "f.pcap", b"xyz"), f"s3://{bucket}/d/f.pcap")
    with storage.open_local(uri) as path:
        assert path.name == "f.pcap" and path.read_bytes() == b"xyz" and path != tmp_path / "f.pcap"
    assert not path.exists() and not path.parent.exists()
    assert storage.open_uri is storage.open_local


# ------------------------------------------------------------------------------------------------ S3 failures


def _fails_fast(call, *patterns: str, within: float = 5.0) -> StorageError:
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        call()
    assert time.monotonic() - start < within
    for pattern in patterns:
        assert pattern in str(info.value), str(info.value)
    return info.value


def test_missing_bucket_and_key(s3_env, tmp_path: Path) -> None:
    src = _write(tmp_path / "f", b"1")
    uri = "s3://no-such-bucket-here/k/f.pcap"
    for call in (lambda: storage.get(uri, tmp_path / "g"), lambda: storage.put(src, uri),
                 lambda: storage.list_uri(uri), lambda: storage.exists(uri)):
        _fails_fast(call, uri, "bucket 'no-such-bucket-here' does not exist", s3_env.url)
    assert "no-such-bucket-here" not in str(s3_env.client().list_buckets())  # never auto-created
    bucket = s3_env.make_bucket()
    _fails_fast(lambda: storage.get(f"s3://{bucket}/missing.pcap", tmp_path / "g"), "missing.pcap", "no such object")
    _fails_fast(lambda: storage.get("s3://ab/k", tmp_path / "g"), "s3://ab/k", "bucket name")


def test_wrong_credentials(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_env.make_bucket()
    uri = storage.put(_write(tmp_path / "f", b"1"), f"s3://{bucket}/f")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    for call in (lambda: storage.get(uri, tmp_path / "g"), lambda: storage.put(tmp_path / "f", uri),
                 lambda: storage.exists(uri), lambda: storage.list_uri(f"s3://{bucket}/")):
        _fails_fast(call, bucket, "rejected the credentials (SignatureDoesNotMatch)")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    _fails_fast(lambda: storage.get(uri, tmp_path / "g"), uri, "InvalidAccessKeyId", "'nobody'")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.readonly_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.readonly_secret_key)
    assert storage.get(uri, tmp_path / "g").read_bytes() == b"1"
    _fails_fast(lambda: storage.put(tmp_path / "f", f"s3://{bucket}/g"), f"s3://{bucket}/g", "access denied")


def test_unreachable_endpoint_fails_fast_with_default_retries(s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NETDIFF_S3_RETRIES", "NETDIFF_S3_BACKOFF", "NETDIFF_S3_CONNECT_TIMEOUT"):
        monkeypatch.delenv(var)  # production defaults: 3 retries with backoff
    monkeypatch.setenv("NETDIFF_S3_ENDPOINT", f"http://127.0.0.1:{_free_port()}")
    _fails_fast(lambda: storage.list_uri("s3://bkt/p"), "s3://bkt/p", "cannot reach the object store",
                "Connection refused", "3 retries")


def test_tls_against_a_plain_http_endpoint(s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETDIFF_S3_ENDPOINT", s3_env.endpoint)
    monkeypatch.setenv("NETDIFF_S3_SECURE", "1")
    _fails_fast(lambda: storage.exists("s3://bkt/k"), "s3://bkt/k", "TLS", "NETDIFF_S3_SECURE=0")


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, list[str], list[str]]]:
    """A local HTTP server that plays a script of answers ("cut": half the body, "ok": all of it, else 503
    SlowDown) and records the requests; the script runs out into 503s."""
    seen: list[str] = []
    script: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.command)
            step = script.pop(0) if script else "503"
            body, ctype = (PAYLOAD, "application/octet-stream") if step in ("cut", "ok") else (
                b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>", "application/xml")
            self.send_response(200 if step in ("cut", "ok") else 503)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if step == "cut" else body)
            self.close_connection = step == "cut"

        do_GET = do_PUT = do_HEAD = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, script
    server.shutdown()
    server.server_close()


PAYLOAD = os.urandom(64 * 1024)


def test_transient_errors_are_retried_a_bounded_number_of_times(s3_env, flaky_server, monkeypatch, tmp_path) -> None:
    url, seen, _ = flaky_server
    monkeypatch.setenv("NETDIFF_S3_ENDPOINT", url)
    monkeypatch.setenv("NETDIFF_S3_RETRIES", "2")
    _fails_fast(lambda: storage.get("s3://bkt/k.pcap", tmp_path / "k"), "s3://bkt/k.pcap", "SlowDown")
    assert seen == ["GET"] * 3  # one try and two retries


def test_a_download_cut_short_is_started_again(s3_env, flaky_server, monkeypatch, tmp_path) -> None:
    url, seen, script = flaky_server
    monkeypatch.setenv("NETDIFF_S3_ENDPOINT", url)
    monkeypatch.setenv("NETDIFF_S3_RETRIES", "2")
    script[:] = ["cut", "503", "ok"]
    assert storage.get("s3://bkt/k.pcap", tmp_path / "k").read_bytes() == PAYLOAD
    assert seen == ["GET"] * 3
    script[:] = ["cut", "cut", "cut"]
    _fails_fast(lambda: storage.get("s3://bkt/k.pcap", tmp_path / "j"), "s3://bkt/k.pcap", "broke off", "2 retries")
    assert len(seen) == 6 and not (tmp_path / "j").exists()


def test_an_explicit_endpoint_wins_and_stays_out_of_the_environment(monkeypatch) -> None:
    for var in ("NETDIFF_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setenv("NETDIFF_S3_RETRIES", "0")
    with pytest.raises(StorageError, match="no object-store endpoint"):
        storage.exists("s3://bucket/key")
    with storage.endpoint("http://127.0.0.1:9"), pytest.raises(StorageError, match=r"127\.0\.0\.1:9"):
        storage.exists("s3://bucket/key")
    assert "NETDIFF_S3_ENDPOINT" not in os.environ
    with pytest.raises(StorageError, match="no object-store endpoint"):  # the block ended
        storage.exists("s3://bucket/key")
