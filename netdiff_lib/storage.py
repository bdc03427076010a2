"""One small API over local paths and object-store URIs (``s3://bucket/key``, or KFP's ``minio://bucket/key``).

Local copies and downloads are atomic (temporary file, then rename). Uploads are published atomically: the file
goes to a hidden temporary key beside the target (multipart above the part size), its size, ETag and attached
``sha256`` metadata are checked, the server copies it onto the final key, and the temporary key is deleted.
Listings skip names with a component that starts with ``.``. Failures raise :class:`StorageError` naming the URI.

Configuration comes from the environment (in a cluster, from a Kubernetes Secret): endpoint ``NETDIFF_S3_ENDPOINT``,
``AWS_ENDPOINT_URL`` or ``MINIO_ENDPOINT`` (``http://host:port``, ``https://host`` or ``host:port``; TLS follows
the scheme or ``NETDIFF_S3_SECURE``, default on); credentials ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
(``AWS_SESSION_TOKEN``) or ``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``; ``AWS_REGION``; tuning
``NETDIFF_S3_RETRIES`` (3), ``NETDIFF_S3_BACKOFF`` (0.25 s), ``NETDIFF_S3_CONNECT_TIMEOUT`` (5 s),
``NETDIFF_S3_READ_TIMEOUT`` (120 s), ``NETDIFF_S3_PART_SIZE`` (64 MiB, >= 5 MiB) and ``NETDIFF_S3_VERIFY_ETAG``
(1; turn off for buckets whose encryption changes ETags). ``minio`` is imported only for URIs
(``pip install netdiff[s3]``); the client and its error messages live in :mod:`netdiff_lib.s3client`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from netdiff_lib.atomic import atomic_path
from netdiff_lib.s3client import _ENDPOINT as _ENDPOINTS
from netdiff_lib.s3client import (  # noqa: F401  (StorageError and S3Config are part of this module's API)
    DEFAULT_PART_SIZE,
    MIB,
    MIN_PART_SIZE,
    SCHEMES,
    S3Config,
    StorageError,
    _errors,
    _parse,
    _s3,
)

_MAX_COPY_SIZE = 5 * 1024**3  # larger objects are copied part by part (compose)
_MAX_PARTS = 10_000
_CHUNK = MIB
_SHA_META = "sha256"
_TMP_MARK = ".netdiff-tmp-"



@contextlib.contextmanager
def endpoint(url: str) -> Iterator[None]:
    """Use the object store at ``url`` (``http(s)://host:port``) for the calls inside the block, whatever the
    environment says; an empty ``url`` keeps the environment's endpoint. Nothing is written to ``os.environ``."""
    _ENDPOINTS.append(url.strip() if url else _ENDPOINTS[-1])
    try:
        yield
    finally:
        _ENDPOINTS.pop()


def is_remote(uri: str | Path) -> bool:
    """True for ``s3://`` and ``minio://`` URIs, False for local paths."""
    scheme, sep, _ = str(uri).partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def join(uri: str | Path, *parts: str) -> str:
    """Join path segments onto a local path or a URI (``/`` separated)."""
    if not is_remote(uri):
        return str(Path(_local(uri), *parts))
    segments = [p.strip("/") for p in parts if p.strip("/")]
    return "/".join([str(uri).rstrip("/"), *segments])


def relative(uri: str | Path, root: str | Path) -> str:
    """``uri`` relative to ``root`` as a ``/``-separated path (the file name when ``uri`` is ``root``)."""
    if is_remote(uri):
        u, r = str(uri).rstrip("/"), str(root).rstrip("/")
        if u == r:
            return _basename(u)
        if not u.startswith(r + "/"):
            raise ValueError(f"{uri} is not under {root}")
        return u[len(r) + 1:]
    path, base = _local(uri), _local(root)
    return path.name if path == base else path.relative_to(base).as_posix()


def _local(uri: str | Path) -> Path:
    text = str(uri)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def _basename(uri: str | Path) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _check(uri: str, got_size: int, size: int, got_sha: str | None, sha: str | None) -> None:
    if got_size != size:
        raise StorageError(uri, f"size mismatch: {got_size} bytes instead of {size}")
    if got_sha and sha and got_sha != sha:
        raise StorageError(uri, f"sha256 mismatch: {got_sha} instead of {sha}")


def list_uri(prefix: str | Path, suffixes: Sequence[str] | str | None = None, recursive: bool = True) -> list[str]:
    """Files under a folder or object-store prefix (or the file itself), sorted by relative path.

    ``suffixes`` filters by name ending (case-insensitive); hidden names (``.x``) are skipped. A URI's prefix is
    a folder: ``s3://b/data`` lists ``data/...``, never ``data2/...``.
    """
    return [uri for _, uri in _walk(prefix, suffixes, recursive)]


def _walk(prefix: str | Path, suffixes: Sequence[str] | str | None = None,
          recursive: bool = True) -> list[tuple[str, str]]:
    """``(relative path, uri)`` pairs under ``prefix``, filtered and sorted."""
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    ends = None if suffixes is None else tuple(s.lower() for s in suffixes)
    items = _walk_s3(str(prefix), recursive) if is_remote(prefix) else _walk_local(_local(prefix), recursive)
    return sorted((rel, uri) for rel, uri in items
                  if not _hidden(rel) and (ends is None or rel.lower().endswith(ends)))


def _walk_local(root: Path, recursive: bool) -> list[tuple[str, str]]:
    if root.is_file():
        return [(root.name, str(root))]
    if not root.is_dir():
        raise StorageError(root, "no such file or directory")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for name in filenames:
            path = Path(dirpath, name)
            out.append((path.relative_to(root).as_posix(), str(path)))
    return out


def _walk_s3(prefix: str, recursive: bool) -> list[tuple[str, str]]:
    client, cfg, bucket, key = _s3(prefix)
    scheme = _parse(prefix)[0]
    folder = key.rstrip("/") + "/" if key.strip("/") else ""
    with _errors(prefix, cfg):
        out = [(obj.object_name[len(folder):], f"{scheme}://{bucket}/{obj.object_name}")
               for obj in client.list_objects(bucket, prefix=folder, recursive=recursive) if not obj.is_dir]
        if not out and key and not key.endswith("/") and _stat(client, bucket, key) is not None:
            out = [(_basename(key), f"{scheme}://{bucket}/{key}")]
    return out


def _stat(client: Any, bucket: str, key: str) -> Any | None:
    from minio.error import S3Error

    try:
        return client.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NotFound"):
            return None
        raise


def exists(uri: str | Path) -> bool:
    """True if ``uri`` is a file or object, or a folder or prefix holding at least one object.

    A missing bucket, wrong credentials or an unreachable endpoint raise :class:`StorageError`.
    """
    if not is_remote(uri):
        return _local(uri).exists()
    uri = str(uri)
    client, cfg, bucket, key = _s3(uri)
    folder = key.rstrip("/") + "/" if key.strip("/") else ""
    with _errors(uri, cfg):  # a listing first: GET answers carry the real error codes, HEAD answers do not
        if next(iter(client.list_objects(bucket, prefix=folder)), None) is not None:
            return True
        return bool(key) and not key.endswith("/") and _stat(client, bucket, key) is not None


def size(uri: str | Path) -> int:
    """Bytes of a file or object."""
    if not is_remote(uri):
        try:
            return _local(uri).stat().st_size
        except OSError as exc:
            raise StorageError(f"{uri}: {exc.strerror or exc}") from None
    client, cfg, bucket, key = _s3(str(uri))
    with _errors(str(uri), cfg):
        found = _stat(client, bucket, key)
    if found is None:
        raise StorageError(f"{uri}: no such object")
    return int(found.size)


def get(uri: str | Path, local_path: str | Path) -> Path:
    """Download (or copy) one file to ``local_path`` atomically; into it when it is a folder. Returns the path."""
    dest = Path(local_path)
    if dest.is_dir():
        dest = dest / _basename(uri)
    if not is_remote(uri):
        src = _local(uri)
        if not src.is_file():
            raise StorageError(uri, "no such file")
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        return dest
    import urllib3.exceptions as ux

    uri = str(uri)
    client, cfg, bucket, key = _s3(uri)
    if not key or key.endswith("/"):
        raise StorageError(uri, "not an object key")
    with _errors(uri, cfg):
        for attempt in itertools.count():
            try:
                _download(client, bucket, key, uri, dest)
                break
            except (ux.ProtocolError, ux.ReadTimeoutError):  # the body broke off: start again, a bounded number
                if attempt >= cfg.retries:
                    raise
                time.sleep(cfg.backoff * 2**attempt)
    return dest


def _download(client: Any, bucket: str, key: str, uri: str, dest: Path) -> None:
    resp = client.get_object(bucket, key)
    try:
        size = int(resp.headers.get("Content-Length", "-1"))
        digest, n = hashlib.sha256(), 0
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                for chunk in resp.stream(_CHUNK, decode_content=False):
                    fh.write(chunk)
                    digest.update(chunk)
                    n += len(chunk)
            _check(uri, n, size if size >= 0 else n, resp.headers.get(f"x-amz-meta-{_SHA_META}"), digest.hexdigest())
    finally:
        resp.close()
        resp.release_conn()


def put(local_path: str | Path, uri: str | Path) -> str:
    """Upload (or copy) one file to ``uri``, atomically; a ``uri`` ending in ``/`` gets the file's name.

    Returns the final URI or path.
    """
    src = Path(local_path)
    if not src.is_file():
        raise StorageError(local_path, "no such file")
    target = join(uri, src.name) if str(uri).endswith("/") else str(uri)
    if not is_remote(target):
        dest = _local(target)
        if dest.is_dir():
            dest = dest / src.name
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        return str(dest)
    _put_s3(src, target)
    return target


def _put_s3(src: Path, uri: str) -> None:
    from minio.commonconfig import ComposeSource, CopySource

    client, cfg, bucket, key = _s3(uri)
    if not key:
        raise StorageError(uri, "no object key in the URI")
    size = src.stat().st_size
    part_size = max(cfg.part_size, -(-size // (_MAX_PARTS * MIB)) * MIB)
    sha, etag = _digests(src, part_size)
    parent, sep, name = key.rpartition("/")
    tmp_key = f"{parent}{sep}.{name}{_TMP_MARK}{uuid.uuid4().hex[:12]}"  # hidden, beside the target
    with _errors(uri, cfg):  # the SDK aborts a failed multipart upload itself: cleanup only once staged
        result = client.fput_object(bucket, tmp_key, str(src), metadata={_SHA_META: sha}, part_size=part_size)
        try:
            staged = client.stat_object(bucket, tmp_key)
            _check(uri, staged.size, size, staged.metadata.get(f"x-amz-meta-{_SHA_META}"), sha)
            got = (result.etag or "").strip('"')
            if cfg.verify_etag and got != etag:
                raise StorageError(uri, f"ETag mismatch after upload ({got} instead of {etag}); "
                                        "set NETDIFF_S3_VERIFY_ETAG=0 if the bucket encrypts objects")
            if size <= _MAX_COPY_SIZE:
                client.copy_object(bucket, key, CopySource(bucket, tmp_key))
            else:
                client.compose_object(bucket, key, [ComposeSource(bucket, tmp_key)], metadata={_SHA_META: sha})
            final = client.stat_object(bucket, key)
            _check(uri, final.size, size, final.metadata.get(f"x-amz-meta-{_SHA_META}"), sha)
        finally:
            with contextlib.suppress(Exception):
                client.remove_object(bucket, tmp_key)


def _digests(path: Path, part_size: int) -> tuple[str, str]:
    """sha256 of the file and the ETag S3 gives it when uploaded in parts of ``part_size`` (MD5 when one part)."""
    sha, part, parts, filled = hashlib.sha256(), hashlib.md5(usedforsecurity=False), [], 0
    with open(path, "rb") as fh:
        while chunk := fh.read(min(_CHUNK, part_size - filled)):
            sha.update(chunk)
            part.update(chunk)
            filled += len(chunk)
            if filled == part_size:
                parts.append(part.digest())
                part, filled = hashlib.md5(usedforsecurity=False), 0
    if filled or not parts:
        parts.append(part.digest())
    if len(parts) == 1:
        return sha.hexdigest(), parts[0].hex()
    return sha.hexdigest(), f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


def put_dir(local_dir: str | Path, uri: str | Path) -> list[str]:
    """Upload (or copy) every non-hidden file under ``local_dir`` to ``uri``, keeping relative paths."""
    if not Path(local_dir).is_dir():
        raise StorageError(local_dir, "not a directory")
    return [put(path, join(uri, rel)) for rel, path in _walk(local_dir)]


def get_dir(uri: str | Path, local_dir: str | Path) -> list[Path]:
    """Download (or copy) every non-hidden file under ``uri`` into ``local_dir``, keeping relative paths."""
    return [get(src, Path(local_dir, rel)) for rel, src in _walk(uri)]


@contextlib.contextmanager
def open_local(uri: str | Path) -> Iterator[Path]:
    """A local path for ``uri``: the path itself, or a temporary download removed when the block ends."""
    if not is_remote(uri):
        path = _local(uri)
        if not path.exists():
            raise StorageError(uri, "no such file or directory")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="netdiff-") as tmp:
        yield get(uri, Path(tmp, _basename(uri)))


open_uri = open_local  # the name used in docs/CONTRACTS.md
