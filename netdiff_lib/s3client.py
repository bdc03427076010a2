"""The S3 client behind :mod:`netdiff_lib.storage`: configuration from the environment, a ``minio`` client
with bounded retries and short timeouts, and translation of SDK and transport failures into
:class:`StorageError` messages that name the URI, the endpoint and the cause.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from netdiff_lib.errors import NetdiffError

SCHEMES = ("s3", "minio")
MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
DEFAULT_PART_SIZE = 64 * MIB
ENDPOINT_VARS = ("NETDIFF_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT")
_CREDENTIAL_VARS = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"))
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class StorageError(NetdiffError):
    """A storage operation failed: carries the local path or URI and a one-line cause."""

    def __init__(self, uri: str | Path, cause: str) -> None:
        self.uri = str(uri)
        self.cause = cause
        super().__init__(f"{self.uri}: {cause}")


def _parse(uri: str) -> tuple[str, str, str]:
    scheme, _, rest = str(uri).partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(uri, "no bucket name in the URI (expected s3://bucket/key)")
    return scheme.lower(), bucket, key


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
    def from_env(cls, uri: str = "s3://", env: Mapping[str, str] | None = None, endpoint: str = "") -> S3Config:
        """Read the settings from ``env`` (default ``os.environ``); ``endpoint``, when given, wins over the
        environment's; ``uri`` only names the target in errors."""
        env = os.environ if env is None else env
        raw = endpoint.strip() or next((env[v] for v in ENDPOINT_VARS if env.get(v, "").strip()), "")
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


#: The endpoint that :func:`netdiff_lib.storage.endpoint` sets for a block of calls ("" : the environment's).
_ENDPOINT = [""]


def _s3(uri: str) -> tuple[Any, S3Config, str, str]:
    _, bucket, key = _parse(uri)
    _import_minio(uri)
    cfg = S3Config.from_env(uri, endpoint=_ENDPOINT[-1])
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
