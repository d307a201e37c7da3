"""The sidecar's settings: the posture (`hegui.api` types) plus where it listens and forwards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hegui.api.common import parse_duration
from hegui.api.generativeservice import (
    Complaints,
    FailureMode,
    GenerativeService,
    Labeling,
    Moderation,
)


@dataclass(frozen=True)
class SidecarConfig:
    moderation: Moderation
    labeling: Labeling | None = None  # labels on generated content (Art.12); None: none added
    complaints: Complaints | None = None  # the complaint channel and deadline (Art.15)
    upstream: str = "http://127.0.0.1:8080"  # the model server, on localhost in the pod
    service: str = ""  # namespace/name of the GenerativeService, for metrics and errors
    user_header: str = "x-hegui-user"  # the user id, set by the gateway in front of the pod
    user_jwt_claim: str = ""  # or this claim of the bearer JWT (verified by the gateway, not here)
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
    # The image watermark key (the Secret labeling.watermark.keySecretRef names, mounted as a
    # file); None: no watermark, flagged when the posture enables one (Art.12).
    watermark_key: bytes | None = None

    @property
    def moderation_timeout(self) -> float:
        return parse_duration(self.moderation.timeout).total_seconds()

    @property
    def fail_open(self) -> bool:
        return self.moderation.failure_mode == FailureMode.OPEN

    @classmethod
    def from_service(cls, service: GenerativeService, **settings: object) -> SidecarConfig:
        moderation = service.spec.moderation
        if moderation is None:
            raise ValueError(f"GenerativeService {service.metadata.name} declares no moderation "
                             "(Art.14)")
        name = f"{service.metadata.namespace or 'default'}/{service.metadata.name}"
        slo = service.spec.slo
        if slo is not None and slo.latency is not None and "latency_threshold" not in settings:
            # A bucket of the SLI histogram, so the slow share is exact (Art.13).
            settings["latency_threshold"] = parse_duration(slo.latency.threshold).total_seconds()
        return cls(moderation=moderation, labeling=service.spec.labeling, service=name,
                   complaints=service.spec.complaints, **settings)  # type: ignore[arg-type]
