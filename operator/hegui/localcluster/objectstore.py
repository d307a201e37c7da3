"""The evidence store beside the local cluster: a real MinIO on loopback, with Object Lock
(Art.11, Art.19).

MinIO's server is built from its Go module by `dev/controlplane/build` into the control plane's
binaries (`minio`); it is AGPL-3.0, so hegui runs it as its own process (or, in a cluster, its
own pod: the chart's `evidence.objectStore`) and never imports it. `hegui cluster up` starts it
after the control plane and `hegui cluster down` stops it; what it stores stays in
`<cache>/objectstore/data`, across `down` and `up` (it is evidence: a locked object cannot be
deleted through MinIO before its date, so a test cluster keeps it until the directory is
removed by hand).

`up` creates the evidence bucket with Object Lock enabled, a `hegui-sidecar` user whose policy
lets it write, read and list `records/`, never delete, bypass a retention or write `anchors/`
(what the policy Secret's accessKey/secretKey hold: the operator cuts each service's session,
limited to its own records, from it; `session`), and a `hegui-anchor` user that alone writes
`anchors/` (anchorAccessKey/anchorSecretKey). The credentials are generated once, kept in
`<cache>/objectstore/credentials.json` (mode 0600), never printed.

    store = LocalObjectStore.from_environment()     # port: HEGUI_CLUSTER_PORT_BASE + 90
    store.up(); store.url  ->  http://127.0.0.1:16490/hegui-evidence
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hegui.evidence.store import (
    StoreCredentials,
    anchor_policy,
    provision_minio,
    service_session,
    sidecar_policy,
)
from hegui.localcluster.cluster import (
    ClusterError,
    _alive,
    _tail,
    _terminate,
    default_home,
)

BUCKET = "hegui-evidence"
SIDECAR_USER = "hegui-sidecar"
ANCHOR_USER = "hegui-anchor"
PORT_OFFSET = 90  # from HEGUI_CLUSTER_PORT_BASE, like the control plane's ports
SIDECAR_POLICY = sidecar_policy(BUCKET)
ANCHOR_POLICY = anchor_policy(BUCKET)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    def env(self) -> dict[str, str]:
        """As hegui's evidence code reads them (HEGUI_EVIDENCE_*)."""
        found = {"HEGUI_EVIDENCE_ACCESS_KEY": self.access_key,
                 "HEGUI_EVIDENCE_SECRET_KEY": self.secret_key}
        if self.session_token:
            found["HEGUI_EVIDENCE_SESSION_TOKEN"] = self.session_token
        return found


@dataclass(frozen=True)
class LocalObjectStore:
    home: Path  # the cache: binaries in home/controlplane/bin, the store in home/objectstore
    port: int  # the S3 API; the (disabled) console takes the next one
    bin_dir: Path | None = None  # where `minio` is, if not in home/controlplane/bin

    @classmethod
    def from_environment(cls) -> LocalObjectStore:
        base = os.environ.get("HEGUI_CLUSTER_PORT_BASE", "16400")
        if not base.isdigit():
            raise ClusterError(f"HEGUI_CLUSTER_PORT_BASE={base!r} is not a port number")
        return cls(home=default_home(), port=int(base) + PORT_OFFSET)

    # --- paths and addresses -------------------------------------------------------------------
    @property
    def binary(self) -> Path:
        return (self.bin_dir or self.home / "controlplane" / "bin") / "minio"

    @property
    def directory(self) -> Path:
        return self.home / "objectstore"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The evidence bucket, as `--store` and the sidecar take it."""
        return f"{self.endpoint}/{BUCKET}"

    @property
    def log_file(self) -> Path:
        return self.directory / "minio.log"

    @property
    def _pid_file(self) -> Path:
        return self.directory / "minio.pid"

    # --- credentials ---------------------------------------------------------------------------
    def _secrets(self) -> dict[str, str]:
        """The generated credentials; a file from before the anchor user gets it added (the
        others are kept: the data directory was initialised with that root password)."""
        path = self.directory / "credentials.json"
        generated = {"root_user": "hegui-root", "root_password": secrets.token_urlsafe(24),
                     "sidecar_secret": secrets.token_urlsafe(24),
                     "anchor_secret": secrets.token_urlsafe(24)}
        data: dict[str, str] = {}
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(found, dict):
                data = {str(k): v for k, v in found.items() if isinstance(v, str)}
        except (OSError, ValueError):
            pass
        if all(k in data for k in generated):
            return data
        data = {**generated, **data}
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file that existed keeps its mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file)
        return data

    @property
    def root(self) -> Credentials:
        """The root user: an inspector's (it cannot delete locked objects either)."""
        found = self._secrets()
        return Credentials(found["root_user"], found["root_password"])

    @property
    def sidecar(self) -> Credentials:
        """The sidecars' user, kept by the platform (hegui-system): write and read `records/`,
        never delete, never write `anchors/`. Pods get `session`s cut from it."""
        return Credentials(SIDECAR_USER, self._secrets()["sidecar_secret"])

    @property
    def anchor(self) -> Credentials:
        """The operator's anchor user: the only one that writes `anchors/`."""
        return Credentials(ANCHOR_USER, self._secrets()["anchor_secret"])

    def session(self, namespace: str, name: str, seconds: int = 3600) -> Credentials:
        """What service NAMESPACE/NAME's sidecars get from the operator: a session limited to
        its own records (hegui.evidence.store.service_session)."""
        sidecar = self.sidecar
        found: StoreCredentials = service_session(
            self.url, (sidecar.access_key, sidecar.secret_key), namespace, name,
            seconds=seconds)
        return Credentials(found.access_key, found.secret_key, found.session_token)

    # --- running -------------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            record = json.loads(self._pid_file.read_text())
            pid = int(record["pid"])
            exe = os.readlink(f"/proc/{pid}/exe")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pid if exe.startswith(str(record["binary"])) and _alive(pid) else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - fixed http URL on loopback
                    f"{self.endpoint}/minio/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def up(self, timeout: float = 60.0) -> bool:
        """Start it unless it runs; the bucket and the sidecar user exist afterwards. True when
        this call started it."""
        if self.pid() is not None and self.ready():
            self._provision()
            return False
        self.down()
        if not os.access(self.binary, os.X_OK):
            raise ClusterError(f"missing {self.binary}: build it with dev/controlplane/build "
                               "minio (or run dev/bootstrap)")
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        root = self.root
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "AWS_"))}
        env.update(MINIO_ROOT_USER=root.access_key, MINIO_ROOT_PASSWORD=root.secret_key,
                   MINIO_BROWSER="off", MINIO_UPDATE="off", MINIO_CALLHOME_ENABLE="off")
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [str(self.binary), "server", str(data), "--address", f"127.0.0.1:{self.port}",
                 "--console-address", f"127.0.0.1:{self.port + 1}", "--quiet"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)
        self._pid_file.write_text(json.dumps({"pid": process.pid,
                                              "binary": os.path.realpath(self.binary)}))
        deadline = time.monotonic() + timeout
        while not self.ready():
            if (code := process.poll()) is not None or time.monotonic() > deadline:
                self.down()
                what = f"exited with code {code}" if code is not None else "did not serve in time"
                raise ClusterError(f"MinIO {what} on 127.0.0.1:{self.port}. The end of "
                                   f"{self.log_file}:\n{_tail(self.log_file)}")
            time.sleep(0.2)
        self._provision()
        return True

    def down(self) -> bool:
        pid = self.pid()
        if pid is not None:
            _terminate(pid, 10.0)
        self._pid_file.unlink(missing_ok=True)
        return pid is not None

    def _provision(self) -> None:
        """The bucket with Object Lock, the sidecars' and the anchor user and their policies."""
        sidecar, anchor, root = self.sidecar, self.anchor, self.root
        provision_minio(self.url, root=(root.access_key, root.secret_key),
                        sidecar=(sidecar.access_key, sidecar.secret_key),
                        anchor=(anchor.access_key, anchor.secret_key))
