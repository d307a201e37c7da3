"""`ComplianceException` (namespaced): a named, expiring exemption of one workload from rules.

An exemption is an object of its own, so RBAC decides who may grant one (a team cannot exempt
itself with a label), and it always expires. The bound is enforced by the apiserver itself:

* `spec.duration` counts from `metadata.creationTimestamp`, which the apiserver stamps and nobody
  can backdate, and CEL refuses durations over 2160h (90 days). An absolute `expiresAt` chosen by
  the author could not be checked this way: CEL sees neither the clock nor the creation time.
* The spec is immutable (a transition rule), so an exemption cannot be stretched by editing it;
  extending it means creating a new one, which RBAC and the audit log see.
* A `CompliancePolicy` may set a shorter maximum (`spec.exceptions.maxDuration`); CEL on one
  object cannot read another, so that tighter bound is checked by hegui's admission webhook and
  rule engine with `within_policy`.

The operator writes the resulting `status.expiresAt` for people and printer columns; the rule
engine computes it from the creation time and never trusts status for the decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field

from hegui.api.articles import Rule
from hegui.api.common import (
    API_VERSION,
    ApiModel,
    ApiObject,
    CelRule,
    DnsSubdomain,
    Duration,
    ShortText,
    Timestamp,
    cel_bad_duration,
    cel_rule,
    parse_duration,
)
from hegui.api.policy import MAX_EXCEPTION_DURATION, CompliancePolicy


class ExemptedWorkload(ApiModel):
    """The workload exempted, in the exception's namespace, by kind and name. The exemption
    covers what the workload owns, as its controllers create it: a Deployment's ReplicaSets and
    Pods, a StatefulSet's, DaemonSet's or Job's Pods, a CronJob's Jobs and their Pods."""

    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$")] = (
        Field(description="The workload's kind: Deployment, StatefulSet, DaemonSet, ReplicaSet, "
                          "Job, CronJob, Pod, InferenceService, or a kind a CompliancePolicy "
                          "declares under spec.detection."))
    name: DnsSubdomain = Field(description="The workload's name.")

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


class ComplianceExceptionSpec(ApiModel):
    """What is exempted, why, approved by whom, and for how long."""

    __transition_rules__ = (CelRule(
        "self == oldSelf",
        "a ComplianceException's spec is immutable; create a new exception to change or extend "
        "it (Art.21)"),)

    workload: ExemptedWorkload = Field(
        description="The workload exempted, in this namespace, with what it owns.")
    rules: list[Rule] = Field(
        min_length=1, max_length=len(Rule),
        description="The rules the workload is exempted from, e.g. labeling (Art.12).",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    justification: Annotated[str, Field(min_length=20, max_length=2048)] = Field(
        description="Why the exemption is needed and what corrects the gap before it expires.")
    approved_by: ShortText = Field(description="Who approved the exemption.")
    ticket: ShortText | None = Field(default=None,
                                     description="The change or risk ticket that records it.")
    duration: Duration = Field(
        description="How long the exemption lasts from the object's creation, at most 2160h "
                    "(90 days), and at most the CompliancePolicy's exceptions.maxDuration.")

    @cel_rule(f"{cel_bad_duration('duration')} || (duration(self.duration) > duration('0s') && "
              f"duration(self.duration) <= duration('{MAX_EXCEPTION_DURATION}'))",
              f"duration must be more than 0s and at most {MAX_EXCEPTION_DURATION} (90 days): an "
              "exemption is a window to correct, not a standing waiver (Art.21)",
              field_path=".duration")
    def _bounded(self) -> bool:
        return timedelta(0) < self.timedelta <= parse_duration(MAX_EXCEPTION_DURATION)

    @property
    def timedelta(self) -> timedelta:
        return parse_duration(self.duration)


class ComplianceExceptionStatus(ApiModel):
    """The exemption's effective window, written by the operator."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The .metadata.generation this status describes.")
    expires_at: Timestamp | None = Field(
        default=None, description="creationTimestamp + duration.")
    expired: bool | None = Field(default=None, description="Whether the exemption has expired.")


class ComplianceException(ApiObject):
    """An expiring exemption of one workload from named hegui rules, with a justification and an
    approver. Guarded by RBAC; never a label a team can set on its own workload."""

    api_version: Literal["hegui.io/v1alpha1"] = Field(default=API_VERSION,
                                                      description="hegui.io/v1alpha1")
    kind: Literal["ComplianceException"] = Field(default="ComplianceException",
                                                 description="ComplianceException")
    spec: ComplianceExceptionSpec = Field(
        description="What is exempted, why, approved by whom and for how long; immutable.")
    status: ComplianceExceptionStatus | None = Field(default=None,
                                                     description="Its effective window.")

    def expires_at(self) -> datetime | None:
        """When the exemption ends; None until the apiserver has stamped the creation time."""
        created = self.metadata.creation_timestamp
        return None if created is None else created + self.spec.timedelta

    def is_active(self, now: datetime) -> bool:
        end = self.expires_at()
        return end is not None and now < end

    def exempts(self, rule: Rule, scope: Iterable[tuple[str, str]], now: datetime,
                policies: Iterable[CompliancePolicy] = ()) -> bool:
        """Whether it waives `rule` at `now` for a workload whose scope (itself and its owners,
        as (kind, name)) includes the exempted workload, within every policy's maxDuration
        (one created before a policy was tightened no longer counts beyond the new bound)."""
        wanted = (self.spec.workload.kind, self.spec.workload.name)
        return (self.is_active(now) and rule in self.spec.rules and wanted in set(scope)
                and all(self.within_policy(policy) is None for policy in policies))

    def within_policy(self, policy: CompliancePolicy) -> str | None:
        """None if the duration is within the policy's maximum, else the message to refuse it."""
        limit = policy.spec.exceptions
        if self.spec.timedelta <= limit.max_timedelta:
            return None
        return (f"spec.duration {self.spec.duration} exceeds {limit.max_duration}, the "
                f"exceptions.maxDuration of CompliancePolicy {policy.name} (Art.21)")
