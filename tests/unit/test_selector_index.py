"""Which GenerativeServices select a workload's pods (rule coverage, Art.17): the index finds
them by a label their selector requires instead of trying every service of the namespace, and
must answer exactly as trying every one would, through every change of a service."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.rules.index import ComplianceIndex, ObjectKey

KEYS = ["app", "tier", "team"]
VALUES = ["a", "b", "c"]

labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)
requirement = st.one_of(
    st.builds(lambda k, o, v: {"key": k, "operator": o, "values": v}, st.sampled_from(KEYS),
              st.sampled_from(["In", "NotIn"]),
              st.lists(st.sampled_from(VALUES), min_size=1, max_size=2, unique=True)),
    st.builds(lambda k, o: {"key": k, "operator": o}, st.sampled_from(KEYS),
              st.sampled_from(["Exists", "DoesNotExist"])))
selector = st.builds(
    lambda match, expressions: {k: v for k, v in (("matchLabels", match),
                                                   ("matchExpressions", expressions)) if v},
    labels, st.lists(requirement, max_size=2)).filter(bool)


def _service(name: str, selector: dict[str, Any], namespace: str = "ai") -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector, "filing": {"publicOpinion": False}}}


def _scan(index: ComplianceIndex, namespace: str, label_sets: list[dict[str, str]]
          ) -> list[ObjectKey]:
    """The answer by trying every service of the namespace, as the engine used to."""
    return sorted(key for key, service in index.services.items() if key.namespace == namespace
                  and any(service.spec.selector.matches(labels) for labels in label_sets))


@settings(max_examples=100, deadline=None)
@given(selectors=st.lists(selector, min_size=1, max_size=6),
       relabelled=st.lists(selector, max_size=3), deleted=st.sets(st.integers(0, 5)),
       pods=st.lists(labels, min_size=1, max_size=3))
def test_the_index_selects_what_trying_every_service_selects(
        selectors: list[dict[str, Any]], relabelled: list[dict[str, Any]], deleted: set[int],
        pods: list[dict[str, str]]) -> None:
    index = ComplianceIndex.from_objects(
        [_service(f"s{i}", s) for i, s in enumerate(selectors)]
        + [_service(f"s{i}", s, namespace="other") for i, s in enumerate(selectors)])
    for i, changed in enumerate(relabelled):  # a team edits its selector
        index.upsert(_service(f"s{i}", changed))
    for i in deleted:
        index.delete(_service(f"s{i}", {}))
    assert index.services_selecting("ai", pods) == _scan(index, "ai", pods)
    assert index.services_selecting("nowhere", pods) == []


def test_a_service_whose_selector_changes_stops_selecting_its_old_pods() -> None:
    index = ComplianceIndex.from_objects([_service("chat", {"matchLabels": {"app": "chat"}})])
    assert index.services_selecting("ai", [{"app": "chat"}]) == [ObjectKey("ai", "chat")]
    index.upsert(_service("chat", {"matchLabels": {"app": "image"}}))
    assert index.services_selecting("ai", [{"app": "chat"}]) == []
    assert index.services_selecting("ai", [{"app": "image"}]) == [ObjectKey("ai", "chat")]
    index.delete(_service("chat", {}))
    assert index.services_selecting("ai", [{"app": "image"}]) == []


def test_a_service_that_becomes_invalid_selects_nothing() -> None:
    index = ComplianceIndex.from_objects([_service("chat", {"matchLabels": {"app": "chat"}})])
    broken = _service("chat", {"matchLabels": {"app": "chat"}})
    broken["spec"]["filing"] = "not an object"
    index.upsert(broken)
    assert index.services_selecting("ai", [{"app": "chat"}]) == []
    assert ObjectKey("ai", "chat") not in index.services


def _attestation(service: str, report_id: str = "R-1") -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "SafetyAssessment",
            "metadata": {"name": "external-r-1", "namespace": "ai", "generation": 1},
            "spec": {"serviceRef": {"name": service}, "questionBanks": [
                {"name": "refuse", "kind": "ShouldRefuse",
                 "configMapRef": {"name": "banks", "key": "refuse.txt"}},
                {"name": "answer", "kind": "ShouldAnswer",
                 "configMapRef": {"name": "banks", "key": "answer.txt"}}]},
            "status": {"verdict": "Pass", "reportId": report_id, "observedGeneration": 1,
                       "completedAt": "2026-06-01T00:00:00Z",
                       "expiresAt": "2027-06-01T00:00:00Z"}}


def test_an_assessor_s_record_counts_for_the_service_it_names_until_it_is_gone() -> None:
    """The external report's attestation (rule assessment, Art.17) is found by service, not by
    trying every SafetyAssessment; re-pointing or deleting it is seen at once."""
    now = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    index = ComplianceIndex.from_objects([_attestation("chat")])
    assert index.attestation_of("ai", "chat", "R-1", now) == "external-r-1"
    assert index.attestation_of("ai", "chat", "R-2", now) is None
    assert index.attestation_of("ai", "draw", "R-1", now) is None
    index.upsert(_attestation("draw"))
    assert index.attestation_of("ai", "chat", "R-1", now) is None
    assert index.attestation_of("ai", "draw", "R-1", now) == "external-r-1"
    index.delete(_attestation("draw"))
    assert index.attestation_of("ai", "draw", "R-1", now) is None
