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
(``pip install netdiff[s3]``).
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from netdiff_lib.atomic import atomic_path
from netdiff_lib.errors import NetdiffError

SCHEMES = ("s3", "minio")
MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
DEFAULT_PART_SIZE = 64 * MIB
ENDPOINT_VARS = ("NETDIFF_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT")
_CREDENTIAL_VARS = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"))
_MAX_COPY_SIZE = 5 * 1024**3  # larger objects are copied part by part (compose)
_MAX_PARTS = 10_000
_CHUNK = MIB
_SHA_META = "sha256"
_TMP_MARK = ".netdiff-tmp-"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class StorageError(NetdiffError):
    """A storage operation failed: carries the local path or URI and a one-line cause."""

    def __init__(self, uri: str | Path, cause: str) -> None:
        self.uri = str(uri)
        self.cause = cause
        super().__init__(f"{self.uri}: {cause}")


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


def _parse(uri: str) -> tuple[str, str, str]:
    scheme, _, rest = str(uri).partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(uri, "no bucket name in the URI (expected s3://bucket/key)")
    return scheme.lower(), bucket, key


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


@dataclass(frozen=True)
class S3Config:
    """Object-store client settings, normally read from the environment with :meth:`from_env`."""

    endpoint: str
    secure: bool
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    retries: int = 3
    backoff: float = 0.25
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    part_size: int = DEFAULT_PART_SIZE
    verify_etag: bool = True

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    @classmethod
    def from_env(cls, uri: str = "s3://", env: Mapping[str, str] | None = None) -> S3Config:
        """Read the settings from ``env`` (default ``os.environ``); ``uri`` only names the target in errors."""
        env = os.environ if env is None else env
        raw = next((env[v] for v in ENDPOINT_VARS if env.get(v, "").strip()), "")
        if not raw:
            raise StorageError(uri, "no object-store endpoint configured: set NETDIFF_S3_ENDPOINT (or "
                                    "AWS_ENDPOINT_URL / MINIO_ENDPOINT), e.g. http://127.0.0.1:9000")
        endpoint, secure = _parse_endpoint(raw.strip(), env.get("NETDIFF_S3_SECURE", ""), uri)
        pair = next(((env[a], env[s]) for a, s in _CREDENTIAL_VARS if env.get(a) and env.get(s)), None)
        if pair is None:
            raise StorageError(uri, "no object-store credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                    "(or MINIO_ACCESS_KEY and MINIO_SECRET_KEY)")
        part_size = int(_number(env, "NETDIFF_S3_PART_SIZE", DEFAULT_PART_SIZE, uri))
        if part_size < MIN_PART_SIZE:
            raise StorageError(uri, f"NETDIFF_S3_PART_SIZE={part_size} is below the S3 minimum of {MIN_PART_SIZE}")
        return cls(
            endpoint, secure, pair[0], pair[1], env.get("AWS_SESSION_TOKEN") or None,
            env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            retries=max(0, int(_number(env, "NETDIFF_S3_RETRIES", 3, uri))),
            backoff=_number(env, "NETDIFF_S3_BACKOFF", 0.25, uri),
            connect_timeout=_number(env, "NETDIFF_S3_CONNECT_TIMEOUT", 5.0, uri),
            read_timeout=_number(env, "NETDIFF_S3_READ_TIMEOUT", 120.0, uri),
            part_size=part_size,
            verify_etag=_flag(env.get("NETDIFF_S3_VERIFY_ETAG", "1"), "NETDIFF_S3_VERIFY_ETAG", uri),
        )


def _parse_endpoint(raw: str, secure_var: str, uri: str) -> tuple[str, bool]:
    secure: bool | None = None
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        if scheme.lower() not in ("http", "https"):
            raise StorageError(uri, f"object-store endpoint scheme {scheme!r} is not http or https")
        secure = scheme.lower() == "https"
    host, _, path = raw.partition("/")
    if path.strip("/") or not host:
        raise StorageError(uri, f"object-store endpoint {raw!r} must be host[:port] without a path")
    if secure_var.strip():
        wanted = _flag(secure_var, "NETDIFF_S3_SECURE", uri)
        if secure is not None and wanted != secure:
            raise StorageError(uri, f"NETDIFF_S3_SECURE={secure_var} contradicts the endpoint's scheme")
        secure = wanted
    return host, True if secure is None else secure


def _flag(value: str, name: str, uri: str) -> bool:
    text = value.strip().lower()
    if text not in _TRUE + _FALSE:
        raise StorageError(uri, f"{name}={value!r} is not a boolean (use 1/0, true/false)")
    return text in _TRUE


def _number(env: Mapping[str, str], name: str, default: float, uri: str) -> float:
    try:
        return float(env.get(name) or default)
    except ValueError:
        raise StorageError(uri, f"{name}={env.get(name)!r} is not a number") from None


def _import_minio(uri: str) -> Any:
    try:
        import minio
    except ImportError as exc:
        raise StorageError(uri, "object-store URIs need the minio SDK: pip install netdiff[s3]") from exc
    return minio


@lru_cache(maxsize=8)
def _client(cfg: S3Config) -> Any:
    """A ``minio.Minio`` with short connect timeouts and bounded retries (urllib3 ``Retry``)."""
    import certifi
    import minio
    import urllib3

    retry = urllib3.Retry(
        total=cfg.retries, connect=cfg.retries, read=cfg.retries, status=cfg.retries, other=0,
        backoff_factor=cfg.backoff, backoff_max=10.0, status_forcelist=(500, 502, 503, 504),
        allowed_methods=None, raise_on_status=False, respect_retry_after_header=False,
    )
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=cfg.connect_timeout, read=cfg.read_timeout), retries=retry, maxsize=10,
        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    return minio.Minio(cfg.endpoint, access_key=cfg.access_key, secret_key=cfg.secret_key,
                       session_token=cfg.session_token, secure=cfg.secure, region=cfg.region, http_client=http)


def _s3(uri: str) -> tuple[Any, S3Config, str, str]:
    _, bucket, key = _parse(uri)
    _import_minio(uri)
    cfg = S3Config.from_env(uri)
    return _client(cfg), cfg, bucket, key


@contextlib.contextmanager
def _errors(uri: str, cfg: S3Config) -> Iterator[None]:
    """Turn SDK and transport exceptions into a :class:`StorageError` that names ``uri``."""
    import urllib3.exceptions as ux
    from minio.error import InvalidResponseError, S3Error, ServerError

    try:
        yield
    except S3Error as exc:
        raise StorageError(uri, _s3_cause(exc, uri, cfg)) from exc
    except ServerError as exc:
        raise StorageError(uri, f"{cfg.url} failed with HTTP status {exc.status_code}") from exc
    except InvalidResponseError as exc:
        raise StorageError(uri, f"{cfg.url} did not answer like an S3 server: {str(exc)[:200]}") from exc
    except ux.HTTPError as exc:
        raise StorageError(uri, _transport_cause(exc, cfg)) from exc
    except ValueError as exc:  # the SDK's argument checks, e.g. an invalid bucket name
        raise StorageError(uri, str(exc)) from exc


def _s3_cause(exc: Any, uri: str, cfg: S3Config) -> str:
    code, bucket = exc.code, _parse(uri)[1]
    if code == "NoSuchBucket":
        return f"bucket {bucket!r} does not exist on {cfg.url}"
    if code in ("NoSuchKey", "NotFound"):
        return f"no such object on {cfg.url}"
    if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId"):
        return (f"{cfg.url} rejected the credentials ({code}) for access key {cfg.access_key!r}: check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY/MINIO_SECRET_KEY)")
    if code == "AccessDenied":
        return f"access denied by {cfg.url} for access key {cfg.access_key!r}"
    return f"{cfg.url} answered {code}: {exc.message}"


def _transport_cause(exc: Exception, cfg: S3Config) -> str:
    import urllib3.exceptions as ux

    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, ux.SSLError):
        return (f"TLS with {cfg.url} failed ({reason}); if the endpoint speaks plain HTTP, "
                "use an http:// endpoint or NETDIFF_S3_SECURE=0")
    if isinstance(reason, ux.NameResolutionError):
        return f"cannot resolve the object-store host {cfg.endpoint!r}"
    if isinstance(reason, ux.NewConnectionError):
        detail = str(reason).rsplit("new connection: ", 1)[-1]
        return f"cannot reach the object store at {cfg.url} ({detail}; {cfg.retries} retries)"
    if isinstance(reason, ux.ProtocolError):
        detail = reason.args[0] if reason.args else reason
        return f"the connection to {cfg.url} broke off ({detail}; {cfg.retries} retries)"
    if isinstance(reason, ux.TimeoutError):
        return f"the object store at {cfg.url} timed out ({reason})"
    return f"cannot talk to the object store at {cfg.url}: {reason}"


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
