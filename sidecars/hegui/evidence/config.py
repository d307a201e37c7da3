"""Where a sidecar's evidence goes: the contract between the operator and the injected sidecar
(Art.11, Art.19).

- A CompliancePolicy declares the store (`spec.evidence.store`). The operator renders
  `evidence.yaml` (`render`) into the sidecar's ConfigMap, mounted at /etc/hegui beside
  service.yaml: the store's URL, region and the least retention. Nothing secret.
- It gives the service's sidecars a store session of their own in the service's namespace, the
  hegui-owned Secret `hegui-evidence-<service>` (`secret_name`, `secret_data`), which the
  injector projects read-only into CREDENTIALS_DIR: `access-key`, `secret-key` (for a session:
  the secret key, then its session token on a second line; S3 keys hold no newline, and so the
  injector's projection stays as it was), `evidence.key`. The session
  (hegui.evidence.store.service_session) may write, read and list the service's own
  `records/<namespace>/<service>/` only and expires; the operator replaces it at half-life
  and the sidecar reads the files again (`file_source`). A team that reads its Secret
  (Kubernetes `edit`) can therefore neither read another tenant's records nor write anchors
  or into another service's streams; the store's long-lived users (the policy Secret's
  accessKey/secretKey, anchorAccessKey/anchorSecretKey) stay in hegui's namespace.
- `evidence.key` is the service's own sealing key, derived from the cluster's evidence key
  (`service_key`): a team that reads its Secret cannot seal segments in another service's name.
  An inspector holding the cluster's key verifies every service (`verify --master-key-file`).
- The sidecar reads all of it at start (`resolve`): no credential on its command line or in
  its log.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hegui.evidence.store import StoreCredentials

CONFIG_FILE = "evidence.yaml"
CREDENTIALS_DIR = Path("/etc/hegui-evidence")
ACCESS_KEY_FILE, SECRET_KEY_FILE, KEY_FILE = "access-key", "secret-key", "evidence.key"
#: The keys of the Secret a CompliancePolicy's evidence.store.credentialsSecretName names: the
#: sidecars' store user (never copied out: each service gets a session cut from it), the
#: cluster's evidence key, and the operator's anchor key and anchor store user. Optional:
#: `roleArn` and `stsEndpoint`, for a cloud whose STS needs them (hegui.evidence.store).
SIDECAR_KEYS = ("accessKey", "secretKey", "evidenceKey")
ANCHOR_KEYS = ("anchorKey", "anchorAccessKey", "anchorSecretKey")
SOURCE_KEYS = (*SIDECAR_KEYS, *ANCHOR_KEYS)
_LABEL = b"hegui-evidence-service:"


class EvidenceConfigError(ValueError):
    """The evidence settings cannot be used; the message names the file and field (Art.11)."""


def secret_name(service: str) -> str:
    """The hegui-owned Secret in a service's namespace that its sidecars' credentials come
    from (a Secret's name is a DNS subdomain of at most 253 characters, as a service's is)."""
    return f"hegui-evidence-{service}"[:253].rstrip("-.")


def service_key(master: bytes, namespace: str, name: str) -> bytes:
    """The key that seals service NAMESPACE/NAME's segments: HMAC-SHA256(the cluster's evidence
    key, its name), hex, so it can be written into a Secret and a file as text."""
    return hmac.new(master, _LABEL + f"{namespace}/{name}".encode(),
                    hashlib.sha256).hexdigest().encode()


def stream_key(master: bytes, stream: str) -> bytes:
    """The sealing key of a stream (`<namespace>/<service>/<pod>.<chain>`)."""
    namespace, _, rest = stream.partition("/")
    return service_key(master, namespace, rest.partition("/")[0])


@dataclass(frozen=True)
class Settings:
    """What `evidence.yaml` says."""

    store: str  # http[s]://HOST:PORT/BUCKET
    retention_days: int
    region: str | None = None
    #: The policy's floor (spec.evidence.failureMode): "Closed" overrides the service's Open.
    failure_mode: str | None = None


def choose(policies: Iterable[Any]) -> Any | None:
    """The evidence declaration that applies where several policies select one namespace: the
    one that keeps records longest (then by policy name, so every reconcile agrees)."""
    found = [p for p in policies if getattr(p.spec, "evidence", None) is not None]
    if not found:
        return None
    best = max(found, key=lambda p: (p.spec.evidence.store.retention_days,
                                     [-ord(c) for c in (p.metadata.name or "")]))
    return best.spec.evidence


def store_url(evidence: Any) -> str:
    return f"{evidence.store.endpoint.rstrip('/')}/{evidence.store.bucket}"


def render(evidence: Any | None) -> dict[str, str]:
    """The ConfigMap entries for the sidecar (`{}` when no policy declares a store)."""
    if evidence is None:
        return {}
    doc: dict[str, Any] = {"store": store_url(evidence),
                           "retentionDays": evidence.store.retention_days}
    if evidence.store.region:
        doc["region"] = evidence.store.region
    if evidence.failure_mode is not None:
        doc["failureMode"] = str(evidence.failure_mode.value)
    return {CONFIG_FILE: yaml.safe_dump(doc, sort_keys=True)}


def check_source(source: Mapping[str, bytes], keys: Iterable[str], where: str,
                 why: str) -> None:
    """EvidenceConfigError naming the Secret (`where`) and the keys it lacks (Art.11)."""
    missing = [k for k in keys if not source.get(k)]
    if missing:
        raise EvidenceConfigError(f"Secret {where} lacks {', '.join(missing)} ({why}; "
                                  "CompliancePolicy spec.evidence.store.credentialsSecretName, "
                                  "Art.11)")


def secret_data(source: Mapping[str, bytes], namespace: str, name: str,
                session: StoreCredentials, where: str = "the evidence store's Secret",
                ) -> dict[str, bytes]:
    """The service's Secret from the policy's (decoded values): the service's own store
    `session` and its derived sealing key; never the store's long-lived users, the cluster's
    evidence key nor the anchor key."""
    check_source(source, SIDECAR_KEYS, where, "the sidecars' store user and evidence key")
    secret = session.secret_key + (f"\n{session.session_token}" if session.session_token else "")
    return {ACCESS_KEY_FILE: session.access_key.encode(), SECRET_KEY_FILE: secret.encode(),
            KEY_FILE: service_key(source["evidenceKey"].strip(), namespace, name)}


def load(path: Path) -> Settings | None:
    """`evidence.yaml`, or None when there is none (no policy declares a store)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise EvidenceConfigError(f"{path}: {error.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise EvidenceConfigError(f"{path}: not YAML ({error})") from None
    if not isinstance(doc, dict):
        raise EvidenceConfigError(f"{path}: a mapping with store and retentionDays is expected")
    store, days, region = doc.get("store"), doc.get("retentionDays", 180), doc.get("region")
    if not isinstance(store, str) or not store.startswith(("http://", "https://")):
        raise EvidenceConfigError(f"{path}: store must be http[s]://HOST:PORT/BUCKET "
                                  "(CompliancePolicy spec.evidence.store, Art.11)")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
        raise EvidenceConfigError(f"{path}: retentionDays must be 1..3650 (Art.11)")
    if region is not None and not isinstance(region, str):
        raise EvidenceConfigError(f"{path}: region must be a string")
    mode = doc.get("failureMode")
    if mode not in (None, "Closed", "Open"):
        raise EvidenceConfigError(f"{path}: failureMode must be Closed or Open "
                                  "(CompliancePolicy spec.evidence.failureMode, Art.11)")
    return Settings(store, days, region, mode)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    key: bytes  # the sealing key
    session_token: str | None = None
    #: Where the store's keys come from again (the projected Secret, rotated by the operator);
    #: None when they came from the environment.
    source: Callable[[], StoreCredentials] | None = None


def _read(directory: Path, name: str) -> str:
    try:
        return (directory / name).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _secret_and_token(text: str) -> tuple[str, str | None]:
    """`secret-key`: the secret key, and a session's token on the next line, if any."""
    secret, _, token = text.strip().partition("\n")
    return secret.strip(), token.strip() or None


@dataclass(frozen=True)
class FileSource:
    """The store session in the projected Secret, read anew at each call: the kubelet swaps in
    the operator's next session before the current one expires. A value, not a closure: the
    store's worker process (hegui.evidence.worker) gets it through a pipe."""

    directory: Path

    def __call__(self) -> StoreCredentials:
        secret, token = _secret_and_token(_read(self.directory, SECRET_KEY_FILE))
        return StoreCredentials(_read(self.directory, ACCESS_KEY_FILE), secret, token)


def file_source(directory: Path) -> Callable[[], StoreCredentials]:
    return FileSource(directory)


def read_credentials(directory: Path, env: Mapping[str, str] | None = None,
                     key_file: Path | None = None) -> Credentials:
    """The store user and sealing key: the environment's (HEGUI_EVIDENCE_ACCESS_KEY, ...), else
    the projected Secret's files in `directory`; the key from `key_file` when given."""
    env = os.environ if env is None else env
    from_env = bool(env.get("HEGUI_EVIDENCE_ACCESS_KEY"))
    if from_env:
        access = env.get("HEGUI_EVIDENCE_ACCESS_KEY", "")
        secret = env.get("HEGUI_EVIDENCE_SECRET_KEY", "")
        token = env.get("HEGUI_EVIDENCE_SESSION_TOKEN") or None
    else:
        access = _read(directory, ACCESS_KEY_FILE)
        secret, token = _secret_and_token(_read(directory, SECRET_KEY_FILE))
    try:
        key = (key_file or directory / KEY_FILE).read_bytes().strip()
    except OSError:
        key = b""
    missing = [what for what, value in (("access key", access), ("secret key", secret),
                                        ("evidence key", key)) if not value]
    if missing:
        raise EvidenceConfigError(
            f"no {', '.join(missing)} for the evidence store in {directory} (the Secret "
            f"hegui-evidence-<service>, projected by the injector) or the environment (Art.11)")
    return Credentials(access, secret, key, token, None if from_env else file_source(directory))
