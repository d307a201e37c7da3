"""hegui's objects in memory: what the rules read instead of the API.

The webhook fills it from watches, the operator from kopf indexes, `hegui check` from files.
Objects are parsed once, when they arrive, so evaluating a review only reads dictionaries. An
object that fails to parse is kept as "broken" with its error, so a finding can say why a service
that seems to exist does not count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from pydantic import ValidationError

from hegui.api.articles import Rule
from hegui.api.assessment import SafetyAssessment
from hegui.api.common import ObjectMeta, SelectorOperator, field_errors
from hegui.api.exception import ComplianceException
from hegui.api.generativeservice import GenerativeService, GenerativeServiceStatus
from hegui.api.policy import (
    CompliancePolicy,
    EnforcementMode,
    PodShape,
    WorkloadKindPaths,
    strictest,
)
from hegui.rules.workloads import (
    BUILTIN,
    Detection,
    ServingKind,
    device_class_drivers,
    device_classes_of,
)


class ObjectKey(NamedTuple):
    namespace: str
    name: str


@dataclass(frozen=True)
class EffectivePolicy:
    """The policies that select a namespace, merged: the strictest mode per rule wins.

    The index keeps one per namespace until a policy or the namespace's labels change
    (`ComplianceIndex.policy_for`), so what is merged from the policies (each rule's mode, the
    detection signals, which policies name an opt-in rule) is merged once, not on every review:
    a workload review asks for them a dozen times."""

    policies: tuple[CompliancePolicy, ...]
    #: rule -> its mode and the names of the policies that name it in spec.rules, filled on
    #: first use (the policies are immutable models; a change makes a new EffectivePolicy).
    _rules: dict[Rule, tuple[EnforcementMode, tuple[str, ...]]] = field(
        default_factory=dict, compare=False, repr=False)

    def _rule(self, rule: Rule) -> tuple[EnforcementMode, tuple[str, ...]]:
        found = self._rules.get(rule)
        if found is None:
            found = (strictest([p.spec.mode_for(rule) for p in self.policies]),
                     tuple(sorted(p.name for p in self.policies if p.spec.names(rule))))
            self._rules[rule] = found
        return found

    def mode_for(self, rule: Rule) -> EnforcementMode:
        return self._rule(rule)[0]

    @cached_property
    def named(self) -> frozenset[Rule]:
        """The rules some policy's spec.rules names: an opt-in rule no policy names finds
        nothing missing, which every posture review asks of every opt-in rule."""
        return frozenset(entry.rule for p in self.policies for entry in p.spec.rules)

    def naming(self, rule: Rule) -> tuple[str, ...]:
        """The policies whose spec.rules names `rule` (an opt-in rule is on where one does),
        sorted by name."""
        return self._rule(rule)[1]

    @cached_property
    def detection(self) -> Detection:
        return detection_of(self.policies)

    @cached_property
    def takes_every_workload(self) -> bool:
        """No policy's spec.workloads has a filter on anything (the common case): every
        workload is in scope, whatever its kind and labels."""
        return not any(f.kinds or f.selector is not None
                       for p in self.policies
                       for f in (*p.spec.workloads.include, *p.spec.workloads.exclude))

    def scoped(self, kinds: frozenset[str], label_sets: list[Mapping[str, str]]
               ) -> tuple[EffectivePolicy | None, str]:
        """The policies whose workload scope (spec.workloads) takes this workload in; when none
        does, None and which filter left it out."""
        if self.takes_every_workload:
            return self, ""  # filters on nothing match nothing (WorkloadFilter.matches)
        taking: list[CompliancePolicy] = []
        why: list[str] = []
        for policy in self.policies:
            left_out = policy.spec.workloads.left_out_by(kinds, label_sets)
            if left_out is None:
                taking.append(policy)
            else:
                why.append(f"CompliancePolicy {policy.metadata.name} {left_out}")
        if len(taking) == len(self.policies):
            return self, "; ".join(why)
        return (EffectivePolicy(tuple(taking)) if taking else None), "; ".join(why)


def _paths(kind: WorkloadKindPaths, shape: PodShape) -> tuple[str, ...]:
    return tuple(p.path for p in kind.pods if p.shape is shape)


def detection_of(policies: Iterable[CompliancePolicy]) -> Detection:
    """The built-in signals plus those every given policy adds."""
    detection = BUILTIN
    for policy in policies:
        extra = policy.spec.detection
        if not (extra.gpu_resources or extra.runtime_class_names or extra.device_classes
                or extra.labels or extra.workload_kinds):
            continue  # most policies add no signal: every review would rebuild BUILTIN
        detection = detection.extended(
            resources=extra.gpu_resources, runtime_classes=extra.runtime_class_names,
            device_classes=extra.device_classes, labels=extra.labels,
            kinds=[ServingKind(k.api_version.split("/")[0], (k.api_version.split("/")[1],),
                               k.kind, k.plural, _paths(k, PodShape.TEMPLATE),
                               _paths(k, PodShape.POD_SPEC), _paths(k, PodShape.CONTAINER),
                               source=f"CompliancePolicy {policy.metadata.name}")
                   for k in extra.workload_kinds],
            source=f"CompliancePolicy {policy.metadata.name} spec.detection")
    return detection


def _anchors(service: GenerativeService) -> list[tuple[str, str]]:
    """Label pairs one of which a pod must carry to be selected by `service`: one matchLabels
    entry, else the values of one `In` requirement; empty when the selector has neither (it
    uses only NotIn, Exists or DoesNotExist and must be tried on every pod)."""
    selector = service.spec.selector
    if selector.match_labels:
        key = min(selector.match_labels)
        return [(key, selector.match_labels[key])]
    for requirement in selector.match_expressions:
        if requirement.operator is SelectorOperator.IN:
            return [(requirement.key, value) for value in requirement.values]
    return []


def _sole_label(service: GenerativeService) -> tuple[str, str] | None:
    """The one label the service's selector asks for, where it asks for nothing else (the
    common selector): a pod carrying it is selected, which the lookup that finds the service
    already shows."""
    selector = service.spec.selector
    if len(selector.match_labels) == 1 and not selector.match_expressions:
        [(key, value)] = selector.match_labels.items()
        return key, value
    return None


@dataclass
class _Selectors:
    """The GenerativeServices of one namespace, found by a label their selector requires, so a
    review tries only the services that can select its pods, not every one in the namespace."""

    by_label: dict[tuple[str, str], dict[str, GenerativeService]] = field(default_factory=dict)
    #: Services whose selector requires no label value (tried on every pod).
    unanchored: dict[str, GenerativeService] = field(default_factory=dict)
    #: Services whose selector is one label (`_sole_label`), by that label: selected by any pod
    #: that carries it, without trying the selector.
    by_sole_label: dict[tuple[str, str], dict[str, GenerativeService]] = field(
        default_factory=dict)

    def add(self, name: str, service: GenerativeService) -> None:
        if (sole := _sole_label(service)) is not None:
            self.by_sole_label.setdefault(sole, {})[name] = service
            return
        anchors = _anchors(service)
        for anchor in anchors:
            self.by_label.setdefault(anchor, {})[name] = service
        if not anchors:
            self.unanchored[name] = service

    def remove(self, name: str, service: GenerativeService) -> None:
        if (sole := _sole_label(service)) is not None:
            named = self.by_sole_label.get(sole, {})
            named.pop(name, None)
            if not named:
                self.by_sole_label.pop(sole, None)
            return
        for anchor in _anchors(service):
            named = self.by_label.get(anchor, {})
            named.pop(name, None)
            if not named:
                self.by_label.pop(anchor, None)
        self.unanchored.pop(name, None)

    def selecting(self, labels: Mapping[str, str]) -> set[str]:
        # Copies of single dicts, taken whole under the GIL, as the index's other readers do.
        candidates = [*self.unanchored.items()]
        found: set[str] = set()
        by_label, by_sole_label = self.by_label, self.by_sole_label
        for pair in labels.items():
            if sole := by_sole_label.get(pair):
                found.update(sole)  # the pod carries the one label they ask for
            if named := by_label.get(pair):
                candidates += named.items()
        found.update(name for name, service in candidates
                     if service.spec.selector.matches(labels))
        return found


class _Parsed(NamedTuple):
    """What a GenerativeService in the index was parsed from, in three parts: its metadata, its
    status, and the rest (apiVersion, kind, spec), each as a digest of its JSON (the JSON
    itself, managedFields and all, is kilobytes a service)."""

    rest: bytes
    metadata: bytes
    status: bytes


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=16).digest()


def _parsed_from(obj: Mapping[str, Any]) -> _Parsed | None:
    rest = {key: value for key, value in obj.items() if key not in ("metadata", "status")}
    try:
        return _Parsed(_digest(rest), _digest(obj.get("metadata")), _digest(obj.get("status")))
    except (TypeError, ValueError):  # not plain JSON (a date from a file): parsed whole
        return None


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return ObjectKey(str(meta.get("namespace") or ""), str(meta.get("name") or ""))


@dataclass
class ComplianceIndex:
    services: dict[ObjectKey, GenerativeService] = field(default_factory=dict)
    #: The same services by namespace: a review only looks at its own namespace's.
    services_by_namespace: dict[str, dict[str, GenerativeService]] = field(default_factory=dict)
    #: The same services by namespace and by a label they select (`services_selecting`).
    selectors: dict[str, _Selectors] = field(default_factory=dict)
    #: (kind, key) -> field errors of hegui objects that failed validation.
    invalid: dict[tuple[str, ObjectKey], list[str]] = field(default_factory=dict)
    policies: dict[str, CompliancePolicy] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    assessments: dict[ObjectKey, SafetyAssessment] = field(default_factory=dict)
    #: The same SafetyAssessments by the service they assess: (namespace, service) -> by name.
    assessments_by_service: dict[ObjectKey, dict[str, SafetyAssessment]] = field(
        default_factory=dict)
    exceptions: dict[ObjectKey, ComplianceException] = field(default_factory=dict)
    claims: dict[tuple[str, str, str], frozenset[str]] = field(default_factory=dict)
    #: DeviceClass name -> the DRA drivers it selects (DRA matches a GPU by driver).
    device_class_drivers: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Writers (watch threads) hold it; readers take consistent snapshots of single dicts.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: What each service in `services` was parsed from (see `_parse_service`).
    _parsed: dict[ObjectKey, _Parsed] = field(default_factory=dict, repr=False)
    #: The status each service was last written with (its digest) and its model.
    _written: dict[ObjectKey, tuple[bytes, GenerativeServiceStatus]] = field(
        default_factory=dict, repr=False)
    #: namespace -> the policies enforcing it, merged (`policy_for`); replaced, never emptied
    #: in place, after any change of a policy or of a namespace's labels.
    _merged: dict[str, EffectivePolicy | None] = field(default_factory=dict, repr=False,
                                                       compare=False)

    # --- filling ---------------------------------------------------------------------------------
    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> ComplianceIndex:
        index = cls()
        for obj in objects:
            index.upsert(obj)
        return index

    def upsert(self, obj: Mapping[str, Any]) -> None:
        kind, key = obj.get("kind"), _key(obj)
        with self.lock:
            try:
                self.invalid.pop((str(kind), key), None)
                if kind == "GenerativeService":
                    service, parsed = self._parse_service(key, obj)
                    self._forget_service(key)
                    self.services[key] = service
                    if parsed is not None:
                        self._parsed[key] = parsed
                    self.services_by_namespace.setdefault(key.namespace, {})[key.name] = service
                    self.selectors.setdefault(key.namespace, _Selectors()).add(key.name,
                                                                               service)
                elif kind == "CompliancePolicy":
                    self.policies[key.name] = CompliancePolicy.from_dict(obj)
                elif kind == "SafetyAssessment":
                    assessment = SafetyAssessment.from_dict(obj)
                    self._forget_assessment(key)
                    self.assessments[key] = assessment
                    self.assessments_by_service.setdefault(
                        ObjectKey(key.namespace, assessment.spec.service_ref.name), {}
                    )[key.name] = assessment
                elif kind == "ComplianceException":
                    self.exceptions[key] = ComplianceException.from_dict(obj)
            except ValidationError as error:
                # The apiserver's schema keeps these rare (objects from files, older versions).
                self._forget(str(kind), key)
                self.invalid[(str(kind), key)] = [str(e) for e in field_errors(error)]
            if kind == "Namespace":
                labels = obj.get("metadata", {}).get("labels") or {}
                self.namespace_labels[key.name] = {str(k): str(v) for k, v in labels.items()}
            elif kind in ("ResourceClaim", "ResourceClaimTemplate"):
                self.claims[(key.namespace, str(kind), key.name)] = device_classes_of(obj)
            elif kind == "DeviceClass":
                self.device_class_drivers[key.name] = device_class_drivers(obj)
            if kind in ("CompliancePolicy", "Namespace"):
                self._merged = {}  # after the change: a reader that sees the new dict merges anew

    def written_status(self, key: ObjectKey, status: Mapping[str, Any],
                       model: GenerativeServiceStatus) -> None:
        """`model` is what `status` parses to (the operator's own status write, parsed to
        write it): taken for the service's next copy whose status is `status`, not parsed again
        (its watch event, issue 20, scale)."""
        with self.lock:
            self._written[key] = (_digest(status), model)

    def _parse_service(self, key: ObjectKey, obj: Mapping[str, Any]
                       ) -> tuple[GenerativeService, _Parsed | None]:
        """The service's model, parsed again only in the parts that changed (issue 20, scale).
        A service arrives several times a reconcile with the same spec (its watch events, the
        reconcile's own copy with the status it last wrote), and parsing it whole each time was
        the operator's largest CPU cost: a part (the spec with apiVersion and kind, the
        metadata, the status) equal to the one the model in the index was parsed from is taken
        from that model, a status the operator wrote from `written_status`. What changed is
        validated as in a whole parse; a failure is parsed whole again, so its errors name
        their fields from the object's root."""
        parsed, before = _parsed_from(obj), self.services.get(key)
        source, meta, status = self._parsed.get(key), obj.get("metadata"), obj.get("status")
        if (parsed is None or before is None or source is None or source.rest != parsed.rest
                or not isinstance(meta, Mapping)):
            return GenerativeService.from_dict(obj), parsed
        written, model = self._written.get(key, (b"", None))
        try:
            metadata = (before.metadata if source.metadata == parsed.metadata
                        else ObjectMeta.from_dict(meta))
            if source.status == parsed.status:
                model = before.status
            elif written != parsed.status:
                model = None if status is None else GenerativeServiceStatus.from_dict(status)
        except ValidationError:
            return GenerativeService.from_dict(obj), parsed
        return before.model_copy(update={"metadata": metadata, "status": model}), parsed

    def delete(self, obj: Mapping[str, Any]) -> None:
        kind = str(obj.get("kind"))
        with self.lock:
            self._forget(kind, _key(obj))
            if kind in ("CompliancePolicy", "Namespace"):
                self._merged = {}

    def _forget(self, kind: str, key: ObjectKey) -> None:
        self.invalid.pop((kind, key), None)
        if kind == "GenerativeService":
            self._forget_service(key)
            self._written.pop(key, None)
        elif kind == "CompliancePolicy":
            self.policies.pop(key.name, None)
        elif kind == "Namespace":
            self.namespace_labels.pop(key.name, None)
        elif kind == "SafetyAssessment":
            self._forget_assessment(key)
        elif kind == "ComplianceException":
            self.exceptions.pop(key, None)
        elif kind in ("ResourceClaim", "ResourceClaimTemplate"):
            self.claims.pop((key.namespace, str(kind), key.name), None)
        elif kind == "DeviceClass":
            self.device_class_drivers.pop(key.name, None)

    def _forget_service(self, key: ObjectKey) -> None:
        service = self.services.pop(key, None)
        self._parsed.pop(key, None)
        self.services_by_namespace.get(key.namespace, {}).pop(key.name, None)
        if service is not None and (selectors := self.selectors.get(key.namespace)):
            selectors.remove(key.name, service)

    def _forget_assessment(self, key: ObjectKey) -> None:
        assessment = self.assessments.pop(key, None)
        if assessment is not None:
            of = ObjectKey(key.namespace, assessment.spec.service_ref.name)
            self.assessments_by_service.get(of, {}).pop(key.name, None)

    # --- reading ---------------------------------------------------------------------------------
    def policy_for(self, namespace: str) -> EffectivePolicy | None:
        """The policies enforcing in `namespace`; None where none does (hegui stays out).
        Merged once per namespace until a policy or the namespace's labels change: the dict
        is taken before the policies are read and a writer replaces it after changing them,
        so a merge from policies a watch has since changed lands in a dict no one reads.
        Sorted by name: where several declare a sidecar the first is injected and renders the
        NetworkPolicy, and the webhook and the operator must pick the same one whatever order
        their watches saw the policies in (a listing's order after a restart, arrival order
        before it)."""
        merged = self._merged
        if namespace not in merged:
            labels = self.namespace_labels.get(namespace, {})
            selecting = tuple(sorted((p for p in list(self.policies.values())
                                      if p.spec.selects_namespace(namespace, labels)),
                                     key=lambda p: p.name))
            merged[namespace] = EffectivePolicy(selecting) if selecting else None
        return merged[namespace]

    def services_selecting(self, namespace: str,
                           label_sets: Iterable[Mapping[str, str]]) -> list[ObjectKey]:
        """The services in `namespace` whose selector matches one of the label sets (a
        workload's pod templates), sorted by name."""
        selectors = self.selectors.get(namespace)
        if selectors is None:
            return []
        names: set[str] = set()
        for labels in label_sets:
            names |= selectors.selecting(labels)
        return [ObjectKey(namespace, name) for name in sorted(names)]

    def broken_services_in(self, namespace: str) -> list[str]:
        """GenerativeServices in `namespace` that failed validation, with their error count."""
        return sorted(f"{key.name} ({len(errors)} errors)"
                      for (kind, key), errors in list(self.invalid.items())
                      if kind == "GenerativeService" and key.namespace == namespace)

    def claim_classes(self, namespace: str, kind: str, name: str) -> frozenset[str] | None:
        """The device classes a claim requests, with the drivers those classes select."""
        classes = self.claims.get((namespace, kind, name))
        if classes is None:
            return None
        drivers = [self.device_class_drivers.get(c, frozenset()) for c in classes]
        return classes.union(*drivers)

    def assessment_verdict(self, namespace: str, name: str, now: dt.datetime,
                           service: str | None = None) -> str | None:
        """Why the SafetyAssessment does not count for GenerativeService `service`, or None when
        it assesses that service, passed, is current and was written for its spec as it is."""
        found = self.assessments.get(ObjectKey(namespace, name))
        if found is None:
            return "does not exist"
        if service is not None and found.spec.service_ref.name != service:
            return (f"assesses GenerativeService {found.spec.service_ref.name}, not {service}: a "
                    "service may only rely on its own assessment")
        if found.passed_at(now):
            return None
        status = found.status
        if status is None or status.verdict.value != "Pass":
            return f"has verdict {status.verdict.value if status else 'Pending'}"
        if not found.status_is_current():
            return (f"passed for generation {status.observed_generation}, but its spec has "
                    f"changed since (generation {found.metadata.generation})")
        expired = status.expires_at.isoformat() if status.expires_at else "(no expiry)"
        return f"passed but expired at {expired}"

    def attestation_of(self, namespace: str, service: str, report_id: str,
                       now: dt.datetime) -> str | None:
        """The SafetyAssessment that records the external report `report_id` for `service`: one
        without spec.target (hegui did not run it) whose status, which only the assessor role
        can write, names the report, passed, is current and unexpired."""
        # A plain tuple finds an ObjectKey (a NamedTuple) without building one.
        assessing: dict[str, SafetyAssessment] | None = self.assessments_by_service.get(
            (namespace, service))  # type: ignore[call-overload]
        for name, found in list(assessing.items()) if assessing else ():
            status = found.status
            if (found.spec.target is None and status is not None
                    and status.report_id == report_id and found.passed_at(now)):
                return name
        return None

    def exemption_for(self, namespace: str, scope: Iterable[tuple[str, str]], rule: Rule,
                      now: dt.datetime) -> str | None:
        """The name of a current ComplianceException waiving `rule` for a workload whose
        `exemption_scope` is `scope`, within the maxDuration of every policy enforcing the
        namespace (one that outlasts a policy's bound does not count, whenever it was made)."""
        scope = list(scope)
        effective = self.policy_for(namespace)
        policies = effective.policies if effective else ()
        return next((key.name for key, exception in list(self.exceptions.items())
                     if key.namespace == namespace
                     and exception.exempts(rule, scope, now, policies)), None)


def _cron_job_of(job: str) -> str | None:
    """The CronJob behind a Job it created: the CronJob controller names Jobs
    `<cronjob>-<scheduled time in minutes since the epoch>`."""
    base, _, stamp = job.rpartition("-")
    return base if base and stamp.isdigit() else None


def exemption_scope(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What a ComplianceException may name to cover `obj`, as (kind, name): the object itself, its
    owners, the Deployment behind a ReplicaSet (named the Deployment's name plus the
    pod-template-hash) and the CronJob behind a Job. So an exception for a Deployment covers its
    ReplicaSets and Pods, one for a CronJob its Jobs and their Pods. (ownerReferences are written
    by whoever creates the object; claiming an owner gains a team nothing it could not get by
    editing the owner's own template, which it may.)"""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
    assert isinstance(labels, Mapping)
    scope: list[tuple[str, str]] = []
    if name := meta.get("name") or meta.get("generateName"):
        scope.append((str(obj.get("kind", "")), str(name)))
    template_hash = labels.get("pod-template-hash")
    for owner in meta.get("ownerReferences") or []:
        if not isinstance(owner, Mapping):
            continue
        kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
        scope.append((kind, name))
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            scope.append(("Deployment", name.removesuffix(f"-{template_hash}")))
        elif kind == "Job" and (cron := _cron_job_of(name)):
            scope.append(("CronJob", cron))
    return scope
