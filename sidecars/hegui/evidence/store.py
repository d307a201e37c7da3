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
HEGUI_EVIDENCE_ACCESS_KEY and HEGUI_EVIDENCE_SECRET_KEY, or AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, never from the command line or a log), or a directory path or
`file://PATH`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
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


class S3Store:
    """A bucket of an S3-compatible store, with Object Lock."""

    def __init__(self, url: str, *, access_key: str, secret_key: str, region: str | None = None,
                 timeout: float = 10.0, retries: int = 1) -> None:
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
        if not access_key or not secret_key:
            raise StoreError("no credentials for the object store: set HEGUI_EVIDENCE_ACCESS_KEY "
                             "and HEGUI_EVIDENCE_SECRET_KEY (from a Secret)")
        self.url, self.bucket = url, bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 3.0), read=timeout),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]),
            maxsize=4)
        self.client: Minio = Minio(parts.netloc, access_key=access_key, secret_key=secret_key,
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
        return S3Store(url, access_key=access, secret_key=secret)
    path = url.removeprefix("file://")
    return DirectoryStore(Path(path))


def sidecar_policy_name(bucket: str) -> str:
    """One policy per bucket: preparing a second bucket leaves the first one's users alone."""
    return f"hegui-sidecar-write-once-{bucket}"


def sidecar_policy(bucket: str) -> dict[str, object]:
    """What a sidecar's store user may do: write new objects with a retention, read and list
    them. Not delete, not shorten a retention, not bypass one (COMPLIANCE admits no bypass)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:PutObjectRetention",
                                           "s3:GetObject", "s3:GetObjectVersion",
                                           "s3:GetObjectRetention"],
             "Resource": [f"arn:aws:s3:::{bucket}/*"]},
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions",
                                           "s3:GetBucketLocation",
                                           "s3:GetBucketObjectLockConfiguration"],
             "Resource": [f"arn:aws:s3:::{bucket}"]},
        ]}


def provision_minio(url: str, *, root: tuple[str, str], sidecar: tuple[str, str]) -> None:
    """On a MinIO at `url` (http[s]://HOST:PORT/BUCKET), as its root user: the bucket with
    Object Lock, and the sidecars' user (access key, secret key) with `sidecar_policy`.
    Idempotent. Other stores (OSS, COS, OBS) are prepared in their own consoles."""
    from minio import MinioAdmin
    from minio.credentials.providers import StaticProvider

    store = S3Store(url, access_key=root[0], secret_key=root[1])
    store.ensure_bucket()
    parts = urlsplit(url)
    admin = MinioAdmin(endpoint=parts.netloc, secure=parts.scheme == "https",
                       credentials=StaticProvider(root[0], root[1]))
    try:
        admin.policy_add(sidecar_policy_name(store.bucket), policy=sidecar_policy(store.bucket))
        admin.user_add(sidecar[0], sidecar[1])
    except Exception as error:
        raise store._fail("cannot add the sidecars' user and policy", error) from None
    try:
        admin.attach_policy([sidecar_policy_name(store.bucket)], user=sidecar[0])
    except Exception as error:  # attached already: MinIO refuses a second attach
        if "already" not in str(error).lower():
            raise store._fail("cannot attach the sidecars' policy", error) from None

