"""`SuspensionOrder` and `ResumeRequest` (namespaced): suspension and resume as objects (Art.21).

A service is suspended (暂停, Art.21) or resumed by creating one of these next to it, never by
editing the GenerativeService the team writes. Being objects of their own, RBAC decides who may
create them: the chart's `hegui-compliance` ClusterRole grants both to a compliance group, and
neither is aggregated into the namespace `edit` or `admin` roles a team holds. Two kinds rather
than one with an action field, so RBAC can grant suspending without resuming (an incident
responder may stop a service but never lift an authority's order).

- **Times are the server's**: a request counts from its `metadata.creationTimestamp`, which the
  apiserver stamps; nothing in the spec is a time a client chose.
- **Identity is the server's**: `spec.requestedBy` (and a resume's `groups`, an order's
  `issuerGroup`) must be what the apiserver authenticated for the creating request; hegui's
  admission webhook refuses anything else, so the history says who truly asked.
- **Consumed once**: the spec is immutable; the operator acts on a request at most once (its uid
  is kept in the service's `status.suspension.consumedRequests`, written with the new state) and
  only on the state in force when it was made, then writes the outcome into the request's
  status (which the team cannot write).
- **An authority's order** (责令暂停, `spec.authority`) is recorded as trigger `Order` and only a
  member of its `issuerGroup` can lift it; the operator never lifts it on a cool-down.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from hegui.api.common import (
    API_VERSION,
    ApiModel,
    ApiObject,
    CelRule,
    LocalObjectReference,
    ShortText,
    Timestamp,
    cel_rule,
)

Reason = Annotated[str, Field(min_length=10, max_length=500)]
_IMMUTABLE = CelRule("self == oldSelf",
                     "a suspension or resume request is immutable: create a new one (Art.21)")


class Authority(ApiModel):
    """The authority whose order (责令暂停) suspends the service."""

    name: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="The authority, e.g. 北京市互联网信息办公室.")
    reference: Annotated[str, Field(min_length=1, max_length=60)] = Field(
        description="The order's reference, e.g. its case number.")


class SuspensionOrderSpec(ApiModel):
    """Which service to suspend, why, on whose order; immutable."""

    __transition_rules__ = (_IMMUTABLE,)

    service_ref: LocalObjectReference = Field(
        description="The GenerativeService to suspend, in this namespace.")
    reason: Reason = Field(description="Why: the order, the incident (10 to 500 characters).")
    requested_by: ShortText = Field(
        description="Who asks, exactly as the apiserver authenticated them (the webhook refuses "
                    "another name).")
    authority: Authority | None = Field(
        default=None, description="Set for an authority's order (责令暂停): it is recorded as "
                                  "trigger Order and only issuerGroup can lift it.")
    issuer_group: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="The group, one of the requester's, whose members alone may "
                                  "lift this order; required with authority.")

    @cel_rule("!has(self.authority) || has(self.issuerGroup)",
              "an authority's order names the issuerGroup that alone may lift it (Art.21)",
              field_path=".issuerGroup")
    def _issuer_named(self) -> bool:
        return self.authority is None or self.issuer_group is not None


class ResumeRequestSpec(ApiModel):
    """Which service to resume and why; immutable."""

    __transition_rules__ = (_IMMUTABLE,)

    service_ref: LocalObjectReference = Field(
        description="The GenerativeService to resume, in this namespace.")
    reason: Reason = Field(description="Why it is safe to resume (10 to 500 characters).")
    requested_by: ShortText = Field(
        description="Who asks, exactly as the apiserver authenticated them (the webhook refuses "
                    "another name).")
    groups: list[ShortText] = Field(
        default_factory=list, max_length=32,
        description="The requester's groups, as authenticated (the webhook refuses a group the "
                    "requester is not in); an authority's order is lifted only if its "
                    "issuerGroup is among them.",
        json_schema_extra={"x-kubernetes-list-type": "set"})


class RequestPhase(StrEnum):
    """What the operator did with a request."""

    APPLIED = "Applied"  # it suspended or resumed the service (or recorded an order on it)
    IGNORED = "Ignored"  # nothing to do, stale, superseded, or refused: the message says why


class RequestStatus(ApiModel):
    """The operator's answer to a request; written once, by the operator only."""

    phase: RequestPhase = Field(description="Applied or Ignored.")
    message: Annotated[str, Field(max_length=1024)] = Field(
        default="", description="What happened, or why nothing did.")
    processed_at: Timestamp | None = Field(default=None,
                                           description="When the operator acted on it.")


class SuspensionOrder(ApiObject):
    """An order to suspend a GenerativeService (Art.21), by a person or on an authority's
    order; created by the compliance group, never by the team that runs the service."""

    api_version: Literal["hegui.io/v1alpha1"] = Field(default=API_VERSION,
                                                      description="hegui.io/v1alpha1")
    kind: Literal["SuspensionOrder"] = Field(default="SuspensionOrder",
                                             description="SuspensionOrder")
    spec: SuspensionOrderSpec = Field(description="What to suspend, why, by whose order.")
    status: RequestStatus | None = Field(default=None,
                                         description="What the operator did with it.")


class ResumeRequest(ApiObject):
    """A request to lift a GenerativeService's suspension (Art.21); created by the compliance
    group (for an authority's order: a member of its issuer group)."""

    api_version: Literal["hegui.io/v1alpha1"] = Field(default=API_VERSION,
                                                      description="hegui.io/v1alpha1")
    kind: Literal["ResumeRequest"] = Field(default="ResumeRequest",
                                           description="ResumeRequest")
    spec: ResumeRequestSpec = Field(description="What to resume and why.")
    status: RequestStatus | None = Field(default=None,
                                         description="What the operator did with it.")


__all__ = ["Authority", "RequestPhase", "RequestStatus", "ResumeRequest", "ResumeRequestSpec",
           "SuspensionOrder", "SuspensionOrderSpec"]
