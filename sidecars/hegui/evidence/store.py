"""Where evidence is kept: an S3-compatible object store with Object Lock (Art.11).

`S3Store` speaks S3 through the `minio` client (the `sidecar` extra) to any S3-compatible store:
MinIO (the local cluster and the chart run one), Alibaba OSS, Tencent COS, Huawei OBS (their
WORM / 合规保留 is S3 Object Lock). Each object is written once, with a COMPLIANCE retention
until a date: the store refuses to delete it, overwrite that version or shorten its retention
before then, whoever asks, its root user included. The bucket must have been created with
Object Lock (versioning) enabled; `ensure_bucket` does that for the local store.

`DirectoryStore` keeps the same objects as files: what `hegui records export --raw` writes and
what an inspector can verify offline. It enforces nothing by itself (a file can be edited);
`verify` is what catches that.

Store URLs: `http[s]://HOST:PORT/BUCKET` (path-style S3; credentials from
HEGUI_EVIDENCE_ACCESS_KEY, HEGUI_EVIDENCE_SECRET_KEY and, for a temporary session,
HEGUI_EVIDENCE_SESSION_TOKEN, or AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN,
never from the command line or a log), or a directory path or `file://PATH`.

Who may do what in the bucket (separation of duties, Art.11: user input in records is protected
from other tenants, and the anchors that vouch for every stream from the regulated teams):

- The sidecars' store user (`sidecar_policy`; the policy Secret's accessKey/secretKey, kept in
  hegui's namespace only): write-once and read under `records/`, never delete, never write
  `anchors/`. No pod holds it: the operator uses it only to mint each service's session.
- Each service's session (`service_session`, `service_policy`): STS AssumeRole with an inline
  session policy, so the store itself grants the intersection of the two: write, read and list
  `records/<namespace>/<service>/` only, expiring (`SESSION_SECONDS`). This is what a team can
  read from its namespace's Secret, and all it can do with it.
- The operator's anchor user (`anchor_policy`; anchorAccessKey/anchorSecretKey): write-once
  `anchors/`, read `records/` for the heads; no pod holds it.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from minio import Minio


class StoreError(Exception):
    """The store could not be reached or refused a request; says which and why (no secrets)."""


class AlreadyWritten(StoreError):
    """The key is already written: evidence is never overwritten."""


@dataclass(frozen=True)
class Version:
    key: str
    version_id: str
    modified: datetime | None
    size: int


class Store(Protocol):
    url: str

    def put(self, key: str, data: bytes, retain_until: datetime) -> None:
        """Write a new object, locked until `retain_until`; AlreadyWritten if it exists."""

    def get(self, key: str, version_id: str | None = None, length: int | None = None) -> bytes:
        """An object's bytes (the first `length` only, when given)."""

    def exists(self, key: str) -> bool: ...

    def versions(self, prefix: str) -> Iterator[Version]:
        """Every version of every object under `prefix`, oldest first for each key."""


class DirectoryStore:
    """Objects as files under a directory (an export, or a store for offline checks)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StoreError(f"{key!r} is outside the store")
        return path

    def put(self, key: str, data: bytes, retain_until: datetime) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("xb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except FileExistsError:
            raise AlreadyWritten(f"{key} is already written") from None

    def get(self, key: str, version_id: str | None = None, length: int | None = None) -> bytes:
        try:
            with self._path(key).open("rb") as file:
                return file.read() if length is None else file.read(length)
        except OSError as error:
            raise StoreError(f"{key}: {error.strerror}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def versions(self, prefix: str) -> Iterator[Version]:
        base = self._path(prefix) if prefix.endswith("/") else self._path(prefix).parent
        if not base.is_dir():
            return
        root = self.root.resolve()
        for path in sorted(base.rglob("*")):
            key = path.relative_to(root).as_posix()
            if path.is_file() and key.startswith(prefix):
                stat = path.stat()
                yield Version(key, "", datetime.fromtimestamp(stat.st_mtime).astimezone(),
                              stat.st_size)


def credentials(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    env = os.environ if env is None else env
    access = env.get("HEGUI_EVIDENCE_ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID", "")
    secret = env.get("HEGUI_EVIDENCE_SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY", "")
    return access, secret


def session_token(env: Mapping[str, str] | None = None) -> str | None:
    """The session token of temporary credentials (a service's session), if any."""
    env = os.environ if env is None else env
    return env.get("HEGUI_EVIDENCE_SESSION_TOKEN") or env.get("AWS_SESSION_TOKEN") or None


@dataclass(frozen=True)
class StoreCredentials:
    """A store user's keys; with a session token and an expiry for a temporary session."""

    access_key: str
    secret_key: str
    session_token: str | None = None
    expiration: datetime | None = None  # aware, UTC


#: How often an S3Store with a `source` looks at it again: a rotated session reaches a running
#: sidecar without a restart (the kubelet updates a projected Secret within about a minute).
REFRESH_SECONDS = 15.0


def _provider(source: Callable[[], StoreCredentials], every: float) -> object:
    """A minio credentials provider over `source`, read again every `every` seconds."""
    from minio.credentials.credentials import Credentials
    from minio.credentials.providers import Provider

    class Refreshing(Provider):
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._at = -every
            self._found: Credentials | None = None

        def retrieve(self) -> Credentials:
            with self._lock:
                if self._found is None or time.monotonic() - self._at >= every:
                    got = source()
                    self._found = Credentials(got.access_key, got.secret_key,
                                              got.session_token or None)
                    self._at = time.monotonic()
                return self._found

    return Refreshing()


class S3Store:
    """A bucket of an S3-compatible store, with Object Lock."""

    def __init__(self, url: str, *, access_key: str = "", secret_key: str = "",
                 session_token: str | None = None,
                 source: Callable[[], StoreCredentials] | None = None,
                 refresh_seconds: float = REFRESH_SECONDS, region: str | None = None,
                 timeout: float = 10.0, retries: int = 1) -> None:
        """`source`, instead of fixed keys: credentials read again every `refresh_seconds`
        (a service's session, rotated by the operator in its projected Secret)."""
        try:
            from minio import Minio
        except ImportError as missing:
            raise StoreError("the object store needs the minio client (a core dependency): "
                             "pip install 'minio>=7.2,<8'") from missing
        import urllib3

        parts = urlsplit(url)
        bucket = parts.path.strip("/")
        if parts.scheme not in ("http", "https") or not parts.netloc or not bucket \
                or "/" in bucket:
            raise StoreError(f"{url!r}: an S3 store is http[s]://HOST[:PORT]/BUCKET")
        if source is None and (not access_key or not secret_key):
            raise StoreError("no credentials for the object store: set HEGUI_EVIDENCE_ACCESS_KEY "
                             "and HEGUI_EVIDENCE_SECRET_KEY (from a Secret)")
        self.url, self.bucket = url, bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 3.0), read=timeout),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]),
            maxsize=4)
        keys: dict[str, object] = (
            {"credentials": _provider(source, refresh_seconds)} if source is not None else
            {"access_key": access_key, "secret_key": secret_key,
             "session_token": session_token or None})
        self.client: Minio = Minio(parts.netloc, **keys,  # type: ignore[arg-type]
                                   secure=parts.scheme == "https",
                                   region=region or os.environ.get("HEGUI_EVIDENCE_REGION")
                                   or "us-east-1", http_client=http)

    def _fail(self, what: str, error: Exception) -> StoreError:
        from minio.error import S3Error

        if isinstance(error, S3Error):
            return StoreError(f"{self.url}: {what}: {error.code}: {error.message}")
        return StoreError(f"{self.url}: {what}: {type(error).__name__}: {error}")

    def ensure_bucket(self) -> None:
        """Create the bucket with Object Lock enabled, if it does not exist (admin only)."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket, object_lock=True)
        except Exception as error:
            raise self._fail(f"cannot create bucket {self.bucket}", error) from None

    def put(self, key: str, data: bytes, retain_until: datetime) -> None:
        from minio.commonconfig import COMPLIANCE
        from minio.retention import Retention

        if self.exists(key):
            raise AlreadyWritten(f"{key} is already written")
        try:
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data),
                                   content_type="application/x-ndjson",
                                   retention=Retention(COMPLIANCE, retain_until))
        except Exception as error:
            raise self._fail(f"cannot write {key}", error) from None

    def get(self, key: str, version_id: str | None = None, length: int | None = None) -> bytes:
        try:
            response = self.client.get_object(self.bucket, key, version_id=version_id,
                                              length=length or 0)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        except Exception as error:
            raise self._fail(f"cannot read {key}", error) from None

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise self._fail(f"cannot look up {key}", error) from None
        except Exception as error:
            raise self._fail(f"cannot look up {key}", error) from None
        return True

    def versions(self, prefix: str) -> Iterator[Version]:
        found: list[Version] = []
        try:
            for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True,
                                                 include_version=True):
                if item.is_delete_marker or item.object_name is None:
                    continue
                found.append(Version(item.object_name, item.version_id or "",
                                     item.last_modified, item.size or 0))
        except Exception as error:
            raise self._fail(f"cannot list {prefix}", error) from None
        epoch = datetime.min.replace(tzinfo=None)
        found.sort(key=lambda v: (v.key, (v.modified.replace(tzinfo=None) if v.modified
                                          else epoch)))
        yield from found


def open_store(url: str, env: Mapping[str, str] | None = None) -> Store:
    """The store a URL names (see the module's doc)."""
    if url.startswith(("http://", "https://")):
        access, secret = credentials(env)
        return S3Store(url, access_key=access, secret_key=secret,
                       session_token=session_token(env))
    path = url.removeprefix("file://")
    return DirectoryStore(Path(path))


RECORDS, ANCHORS = "records/", "anchors/"  # as hegui.evidence.segments names them
_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")  # no wildcard can widen a policy
#: A service's session lasts this long; the operator mints the next one at half-life.
SESSION_SECONDS = 12 * 3600
_WRITE_ONCE = ["s3:PutObject", "s3:PutObjectRetention"]
_READ = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention"]
_BUCKET_INFO = ["s3:GetBucketLocation", "s3:GetBucketObjectLockConfiguration"]


def sidecar_policy_name(bucket: str) -> str:
    """One policy per bucket: preparing a second bucket leaves the first one's users alone."""
    return f"hegui-sidecar-write-once-{bucket}"


def anchor_policy_name(bucket: str) -> str:
    return f"hegui-anchor-write-once-{bucket}"


def _arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"


def sidecar_policy(bucket: str) -> dict[str, object]:
    """The sidecars' store user (kept in hegui's namespace; what each service's session is cut
    from): write new objects under `records/` with a retention, read them, list; read anchors
    (verifying). Never delete, never shorten a retention (COMPLIANCE admits no bypass), and an
    explicit deny on writing `anchors/` that no session policy can lift."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": [*_WRITE_ONCE, *_READ],
             "Resource": [_arn(bucket, f"{RECORDS}*")]},
            {"Effect": "Allow", "Action": _READ, "Resource": [_arn(bucket, f"{ANCHORS}*")]},
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions",
                                           *_BUCKET_INFO],
             "Resource": [_arn(bucket)]},
            {"Effect": "Deny", "Action": _WRITE_ONCE, "Resource": [_arn(bucket, f"{ANCHORS}*")]},
        ]}


def service_prefix(namespace: str, name: str) -> str:
    """Where service NAMESPACE/NAME's streams are (hegui.evidence.segments.stream_name)."""
    for part in (namespace, name):
        if not _NAME.fullmatch(part):
            raise ValueError(f"{part!r} is not a Kubernetes name: no store session for it")
    return f"{RECORDS}{namespace}/{name}/"


def service_policy(bucket: str, namespace: str, name: str) -> dict[str, object]:
    """The session policy of one service's sidecars: write-once, read and list its own
    `records/<namespace>/<name>/` and nothing else: not another service's records (user input,
    Art.11), not `anchors/`, never delete. The trailing `/` keeps `chat` out of `chat2`."""
    prefix = service_prefix(namespace, name)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": [*_WRITE_ONCE, *_READ],
             "Resource": [_arn(bucket, f"{prefix}*")]},
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
             "Resource": [_arn(bucket)],
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
            {"Effect": "Allow", "Action": _BUCKET_INFO, "Resource": [_arn(bucket)]},
        ]}


def anchor_policy(bucket: str) -> dict[str, object]:
    """The operator's anchor user: write-once `anchors/`, read `records/` (the heads it
    checkpoints) and anchors, list. Never delete, never write records."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": [*_WRITE_ONCE, *_READ],
             "Resource": [_arn(bucket, f"{ANCHORS}*")]},
            {"Effect": "Allow", "Action": _READ, "Resource": [_arn(bucket, f"{RECORDS}*")]},
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions",
                                           *_BUCKET_INFO],
             "Resource": [_arn(bucket)]},
        ]}


def service_session(url: str, parent: tuple[str, str], namespace: str, name: str, *,
                    seconds: int = SESSION_SECONDS, region: str | None = None,
                    sts_endpoint: str | None = None, role_arn: str | None = None,
                    ) -> StoreCredentials:
    """Temporary credentials for service NAMESPACE/NAME's sidecars: STS AssumeRole as the
    sidecars' user (`parent`) with `service_policy` as the inline session policy.

    Why a session and not a store user per service: the store enforces the scope itself
    (the session can never do more than both policies allow), the long-lived keys never leave
    hegui's namespace, a leaked session expires on its own, nothing has to be deleted when a
    service goes, and it needs no admin rights on the store (a MinIO user per service would
    need the store's admin keys in the operator and exists on MinIO only). This speaks the AWS
    STS protocol (MinIO; stores with an AWS-compatible STS: `sts_endpoint`, `role_arn`, which
    MinIO ignores). Alibaba RAM, Tencent CAM and Huawei IAM offer the same operation (assume
    a role with an inline policy) through their own APIs: this is the place to add them."""
    from minio.credentials.providers import AssumeRoleProvider

    parts = urlsplit(url)
    bucket = parts.path.strip("/")
    policy = json.dumps(service_policy(bucket, namespace, name), separators=(",", ":"))
    provider = AssumeRoleProvider(
        sts_endpoint=sts_endpoint or f"{parts.scheme}://{parts.netloc}",
        access_key=parent[0], secret_key=parent[1], duration_seconds=seconds, policy=policy,
        region=region or "", role_arn=role_arn or None,
        role_session_name=f"hegui-{namespace}-{name}"[:64].rstrip("-."))
    try:
        found = provider.retrieve()
    except Exception as error:  # an HTTP or STS error: says which, never the keys
        raise StoreError(f"{url}: cannot get a store session for {namespace}/{name}: "
                         f"{type(error).__name__}: {error}") from None
    expiration = found.expiration
    if expiration is not None and expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=UTC)
    return StoreCredentials(found.access_key, found.secret_key, found.session_token, expiration)


def provision_minio(url: str, *, root: tuple[str, str], sidecar: tuple[str, str],
                    anchor: tuple[str, str] | None = None) -> None:
    """On a MinIO at `url` (http[s]://HOST:PORT/BUCKET), as its root user: the bucket with
    Object Lock, the sidecars' user (access key, secret key) with `sidecar_policy` and, when
    given, the operator's anchor user with `anchor_policy`. Idempotent (the policies are
    written again, so an older store gets the narrower ones). Other stores (OSS, COS, OBS) are
    prepared in their own consoles."""
    from minio import MinioAdmin
    from minio.credentials.providers import StaticProvider

    store = S3Store(url, access_key=root[0], secret_key=root[1])
    store.ensure_bucket()
    parts = urlsplit(url)
    admin = MinioAdmin(endpoint=parts.netloc, secure=parts.scheme == "https",
                       credentials=StaticProvider(root[0], root[1]))
    users = [(sidecar, sidecar_policy_name(store.bucket), sidecar_policy(store.bucket))]
    if anchor is not None:
        if anchor[0] == sidecar[0]:
            raise StoreError("the anchor user must not be the sidecars' user: sidecars may not "
                             "write anchors (Art.11)")
        users.append((anchor, anchor_policy_name(store.bucket), anchor_policy(store.bucket)))
    for (access, secret), policy_name, policy in users:
        try:
            admin.policy_add(policy_name, policy=policy)
            admin.user_add(access, secret)
        except Exception as error:
            raise store._fail(f"cannot add the user {access} and its policy", error) from None
        try:
            admin.attach_policy([policy_name], user=access)
        except Exception as error:  # attached already: MinIO refuses a second attach
            if "already" not in str(error).lower():
                raise store._fail(f"cannot attach the policy of {access}", error) from None
