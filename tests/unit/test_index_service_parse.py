"""The ComplianceIndex parses a GenerativeService again only in the parts that changed (issue 20,
scale): the model it keeps is always the one a whole parse gives, and a reconcile with its watch
events parses the service's spec once."""

from __future__ import annotations

import copy
from typing import Any, cast

import kopf
import pytest
from test_operator_reconcile import InMemoryCluster  # type: ignore[import-not-found]

from hegui.api.generativeservice import GenerativeService, GenerativeServiceStatus
from hegui.operator import handlers
from hegui.operator.reconciler import Operator, reconcile, service_memory
from hegui.operator.settings import OperatorSettings
from hegui.rules.index import ComplianceIndex, ObjectKey

NS = "ai"
KEY = ObjectKey(NS, "chat")


def _service() -> dict[str, Any]:
    return {"apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
            "metadata": {"name": "chat", "namespace": NS, "uid": "svc-uid", "generation": 1,
                         "resourceVersion": "1", "creationTimestamp": "2026-11-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "chat"}},
                     "filing": {"publicOpinion": False,
                                "algorithm": {"number": "网信算备110108823483901230011号"}},
                     "labeling": {"modalities": ["text"],
                                  "implicit": {"contentProducer": "Example AI Co."}}}}


def _status(compliant: str) -> dict[str, Any]:
    return {"observedGeneration": 1, "findings": [],
            "conditions": [{"type": "Compliant", "status": compliant,
                            "lastTransitionTime": "2026-11-02T00:00:00Z", "reason": "R",
                            "message": "m", "article": "Art.17"}]}


def _changes() -> list[dict[str, Any]]:
    """A service's copies as they arrive, each changing one part."""
    first = _service()
    labelled = copy.deepcopy(first)
    labelled["metadata"].update(resourceVersion="2", labels={"team": "a"})
    judged = copy.deepcopy(labelled)
    judged["metadata"]["resourceVersion"] = "3"
    judged["status"] = _status("True")
    flipped = copy.deepcopy(judged)
    flipped["status"] = _status("False")
    broken_status = copy.deepcopy(flipped)
    broken_status["status"]["observedGeneration"] = "one"  # the models refuse it
    mended = copy.deepcopy(flipped)
    respecified = copy.deepcopy(mended)
    respecified["spec"]["labeling"]["implicit"]["contentProducer"] = "Other Co."
    respecified["metadata"].update(generation=2, resourceVersion="4")
    broken_spec = copy.deepcopy(respecified)
    broken_spec["spec"]["labeling"]["modalities"] = ["smell"]
    unstatused = copy.deepcopy(respecified)
    del unstatused["status"]
    return [first, labelled, judged, judged, flipped, broken_status, mended, respecified,
            broken_spec, respecified, unstatused]


def test_the_kept_model_is_always_the_one_a_whole_parse_gives() -> None:
    index = ComplianceIndex()
    for obj in _changes():
        index.upsert(obj)
        fresh = ComplianceIndex.from_objects([obj])
        assert index.invalid == fresh.invalid
        assert index.services.get(KEY) == fresh.services.get(KEY)
        if KEY in fresh.services:
            kept = index.services[KEY]
            assert kept.to_dict() == GenerativeService.from_dict(obj).to_dict()
            assert kept.metadata.resource_version == obj["metadata"]["resourceVersion"]
    # A status refused is named from the object's root, as a whole parse names it.
    index.upsert(_changes()[5])
    assert any("status.observedGeneration" in e
               for e in index.invalid[("GenerativeService", KEY)])


def test_a_reconcile_and_its_watch_events_parse_the_spec_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf mirrors each watch event of a service (its spec change, then its own status write)
    and the reconcile updates the index with the status it last wrote: before, each of these
    parsed the whole service again (most of the operator's CPU at 1,000 services)."""
    parsed: list[str] = []
    for model in (GenerativeService, GenerativeServiceStatus):
        whole = getattr(model.from_dict, "__func__")  # noqa: B009 (the classmethod's function)

        def counting(cls: type, data: Any, whole: Any = whole) -> Any:
            parsed.append(cls.__name__)
            return whole(cls, data)

        monkeypatch.setattr(model, "from_dict", classmethod(counting))
    op = Operator(OperatorSettings(reconcile_seconds=7.0), InMemoryCluster())
    op.index.upsert({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    op.index.upsert({"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
                     "metadata": {"name": "default", "generation": 1},
                     "spec": {"namespaces": [NS], "defaultMode": "Enforce"}})
    memo = kopf.Memo(operator=op)
    service = _service()
    service["status"] = _status("False")

    def mirrored(obj: dict[str, Any]) -> None:
        event = {"type": "MODIFIED", "object": copy.deepcopy(obj)}
        coroutine = handlers.mirror(event=cast(kopf.RawEvent, event), memo=memo)
        with pytest.raises(StopIteration):
            coroutine.send(None)

    mirrored(service)  # as found on start: parsed whole
    parsed.clear()
    kept: list[tuple[GenerativeService, dict[str, Any]]] = []
    for generation in (2, 3):
        service["spec"]["labeling"]["implicit"]["contentProducer"] = f"Co. {generation}"
        service["metadata"].update(generation=generation, resourceVersion=f"{generation}0")
        mirrored(service)
        patch = kopf.Patch()
        reconcile(op, service_memory(memo), kopf.Body(cast(kopf.RawBody, service)), patch,
                  "chat", NS)
        service["status"] = {**service["status"], **dict(patch)["status"]}
        service["metadata"]["resourceVersion"] = f"{generation}1"
        mirrored(service)  # its own write coming back
        kept.append((op.index.services[KEY], copy.deepcopy(service)))
    # The spec once a change, and the status once, to write it (parsed as 4 whole services).
    assert parsed == ["GenerativeService", "GenerativeServiceStatus"] * 2
    monkeypatch.undo()
    assert all(model == GenerativeService.from_dict(obj) for model, obj in kept)
