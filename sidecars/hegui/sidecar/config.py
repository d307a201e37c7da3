"""The sidecar's settings: the posture (`hegui.api` types) plus where it listens and forwards.

The posture comes from `service.yaml`, which hegui's operator renders into the ConfigMap the
sidecar mounts (only the operator may write it: a ValidatingAdmissionPolicy refuses the team).
`PostureWatch` follows that file while the sidecar runs, so a posture change (moderation,
labels, complaints, the latency objective) reaches running pods within a poll, not only pods
started after it; an unreadable or invalid version is logged, counted and ignored (the last
valid posture keeps moderating). What is built once at start (the Triton endpoint, the strike
thresholds, the record log's retention) still needs a restart of the pod.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from hegui.api.common import parse_duration
from hegui.api.generativeservice import (
    Complaints,
    FailureMode,
    GenerativeService,
    Labeling,
    Moderation,
    PortPurpose,
)


@dataclass(frozen=True)
class SidecarConfig:
    moderation: Moderation
    labeling: Labeling | None = None  # labels on generated content (Art.12); None: none added
    complaints: Complaints | None = None  # the complaint channel and deadline (Art.15)
    upstream: str = "http://127.0.0.1:8080"  # the model server, on localhost in the pod
    service: str = ""  # namespace/name of the GenerativeService, for metrics and errors
    user_header: str = "x-hegui-user"  # the user id, set by the gateway in front of the pod
    # Or this claim of the bearer JWT, verified with user_jwt_key; the posture's
    # moderation.users.identity wins over these three (hegui.sidecar.identity, Art.14).
    user_jwt_claim: str = ""
    user_jwt_key: bytes | None = None  # a PEM public key or a shared secret
    pseudonymisation_key: bytes = b""  # HMAC key for user ids in strikes (Art.11)
    max_body_bytes: int = 1 << 20  # requests larger than this are refused (413)
    max_response_bytes: int = 8 << 20  # a non-streamed model answer larger than this is refused
    max_header_bytes: int = 8190  # one header line (aiohttp's max_field_size)
    max_headers: int = 64
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 60.0  # silence from the model server longer than this fails
    stream_max_hold_seconds: float = 0.5  # a window not full by then is moderated and sent
    stream_overlap_chars: int = 32  # emitted text re-scored with each window: keywords that span
    max_sse_line_bytes: int = 1 << 20
    # The service's latency objective (Art.13), in seconds: a bucket of the SLI histogram.
    latency_threshold: float | None = None
    # The operator's suspension notice (Art.21), polled every suspension_poll_seconds; None: the
    # sidecar cannot be suspended (tests and local runs without the operator).
    suspension_file: Path | None = None
    suspension_poll_seconds: float = 2.0
    # In a pod the notice is part of hegui's ConfigMap: a missing or invalid one suspends.
    suspension_required: bool = False
    # The posture file (service.yaml), re-read on change while running; None: read once.
    service_file: Path | None = None
    # The image watermark key (the Secret labeling.watermark.keySecretRef names, mounted as a
    # file); None: no watermark, flagged when the posture enables one (Art.12).
    watermark_key: bytes | None = None
    # The ports (first, last) the posture declares for the model's metrics: captured like the
    # rest, and served with nothing but the model's GET /metrics (hegui.sidecar.original_dst).
    metrics_ports: tuple[tuple[int, int], ...] = ()

    @property
    def moderation_timeout(self) -> float:
        return parse_duration(self.moderation.timeout).total_seconds()

    @property
    def fail_open(self) -> bool:
        return self.moderation.failure_mode == FailureMode.OPEN

    @classmethod
    def from_service(cls, service: GenerativeService, **settings: object) -> SidecarConfig:
        posture = _posture(service)
        if "latency_threshold" in settings:
            posture.pop("latency_threshold", None)
        return cls(**posture, **settings)  # type: ignore[arg-type]

    def with_posture(self, service: GenerativeService) -> SidecarConfig:
        """This configuration with `service`'s posture (its name must stay the same)."""
        posture = _posture(service)
        if posture["service"] != self.service:
            raise ValueError(f"the posture is GenerativeService {posture['service']}, not "
                             f"{self.service}")
        return replace(self, **posture)  # type: ignore[arg-type]


def _posture(service: GenerativeService) -> dict[str, object]:
    """The SidecarConfig fields a GenerativeService's posture decides."""
    moderation = service.spec.moderation
    if moderation is None:
        raise ValueError(f"GenerativeService {service.metadata.name} declares no moderation "
                         "(Art.14)")
    fields: dict[str, object] = {
        "moderation": moderation, "labeling": service.spec.labeling,
        "complaints": service.spec.complaints,
        "service": f"{service.metadata.namespace or 'default'}/{service.metadata.name}"}
    traffic = service.spec.traffic
    fields["metrics_ports"] = tuple(
        (p.port, p.last) for p in (traffic.open_ports if traffic is not None else [])
        if p.purpose is PortPurpose.METRICS)
    slo = service.spec.slo
    if slo is not None and slo.latency is not None:
        # A bucket of the SLI histogram, so the slow share is exact (Art.13).
        fields["latency_threshold"] = parse_duration(slo.latency.threshold).total_seconds()
    return fields


MAX_POSTURE_BYTES = 1 << 20
log = logging.getLogger("hegui.sidecar.config")


class PostureWatch:
    """Follows the posture file; `check(config)` returns the new configuration when the file
    changed to a valid posture, else None."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors = 0
        self._seen: tuple[int, int, int] | None = self._identity()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_ino, stat.st_size)

    def check(self, config: SidecarConfig) -> SidecarConfig | None:
        identity = self._identity()
        if identity is None or identity == self._seen:
            return None
        self._seen = identity
        try:
            import yaml

            with self.path.open("rb") as file:
                raw = file.read(MAX_POSTURE_BYTES + 1)
            if len(raw) > MAX_POSTURE_BYTES:
                raise ValueError(f"larger than {MAX_POSTURE_BYTES} bytes")
            updated = config.with_posture(GenerativeService.from_dict(
                yaml.safe_load(raw.decode("utf-8"))))
        except Exception as error:  # a bad version is reported, never fatal
            self.errors += 1
            log.error("posture %s ignored, keeping the last valid one: %s", self.path,
                      str(error)[:300])
            return None
        if updated != config:
            log.warning("posture of %s changed: moderation and labels follow it now",
                        config.service)
        return updated
