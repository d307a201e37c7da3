"""AdmissionReview v1 in and out, hardened against hostile input.

The apiserver sends well-formed reviews; anything else reaching the webhook port is a bug or an
attack. Whatever arrives, the answer is a well-formed AdmissionReview (when the request can be
identified by its uid) or a JSON error with an HTTP status (when it cannot), never a crash:
bodies are bounded before they are parsed, nesting depth is bounded while parsing, and every
field is checked for type before use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
#: The apiserver's own request limit is 3 MiB; an object and its old version fit well inside.
MAX_BODY_BYTES = 3 * 1024 * 1024
#: Real Kubernetes objects nest a few dozen levels at most.
MAX_DEPTH = 100
#: The apiserver may shorten warnings over 256 characters; more than a few help nobody.
MAX_WARNINGS = 20
MAX_WARNING_CHARS = 256


class ReviewError(ValueError):
    """The body is not an AdmissionReview we can answer in kind; answered with `http_status`."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass(frozen=True)
class AdmissionRequest:
    uid: str
    kind: str
    group: str
    namespace: str
    name: str
    operation: str
    dry_run: bool
    obj: Mapping[str, Any]
    old_obj: Mapping[str, Any] | None
    user: str


@dataclass
class Decision:
    allowed: bool
    message: str = ""
    code: int = 200
    warnings: list[str] = field(default_factory=list)
    #: An RFC 6902 patch (mutating webhooks only).
    patch: list[dict[str, Any]] | None = None


#: Decides one request (the validating and the mutating webhook each have one). Pure and fast:
#: it reads in-memory indexes, never the API. Here, not in the server, so the operator can share
#: a decision (`hegui.admission.mutate.sidecar_duty`) without importing the HTTP server.
Validator = Callable[[AdmissionRequest], Decision]


def parse(body: bytes) -> AdmissionRequest:
    if len(body) > MAX_BODY_BYTES:
        raise ReviewError(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}", 413)
    # Refuse absurd nesting before json builds it: '[' and '{' bound the depth from above.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _bracket_depth(body) > MAX_DEPTH:
        raise ReviewError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        review = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise ReviewError(f"body is not JSON: {str(error)[:200]}") from None
    if not isinstance(review, dict):
        raise ReviewError("body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise ReviewError(
            f"expected apiVersion {API_VERSION} and kind {KIND}, got "
            f"{str(review.get('apiVersion'))[:64]!r} and {str(review.get('kind'))[:64]!r}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        raise ReviewError("request.uid is missing or not a string of at most 128 characters")
    kind = _mapping(request.get("kind"))
    obj = request.get("object")
    old = request.get("oldObject")
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise ReviewError(f"request.operation {str(operation)[:32]!r} is not an operation")
    if operation != "DELETE" and not isinstance(obj, dict):
        raise ReviewError("request.object is missing or not an object")
    user = _mapping(request.get("userInfo")).get("username")
    return AdmissionRequest(
        uid=uid,
        kind=_text(kind.get("kind")),
        group=_text(kind.get("group")),
        namespace=_text(request.get("namespace")),
        name=_text(request.get("name")) or _text(_mapping(_mapping(obj).get("metadata"))
                                                  .get("name")),
        operation=operation,
        dry_run=request.get("dryRun") is True,
        obj=obj if isinstance(obj, dict) else {},
        old_obj=old if isinstance(old, dict) else None,
        user=_text(user),
    )


def _bracket_depth(body: bytes) -> int:
    """Upper bound of JSON nesting, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value[:253] if isinstance(value, str) else ""


def respond(uid: str, decision: Decision) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {"code": decision.code or 403, "message": decision.message,
                              "reason": "Forbidden" if decision.code == 403 else "BadRequest"}
    if decision.warnings:
        response["warnings"] = [w[:MAX_WARNING_CHARS] for w in decision.warnings[:MAX_WARNINGS]]
    if decision.patch is not None:
        import base64

        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}
