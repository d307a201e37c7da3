"""hegui's CRDs on the real apiserver: they install, accept the samples, refuse the invalid
objects naming the field, explain themselves, and round-trip every valid object losslessly.

Namespaced objects are created for real in a namespace of this module's own. CompliancePolicies
are cluster-wide and would steer any hegui webhook that shares the cluster, so they are sent with
server-side dry run, which runs the same validation, defaulting and pruning and answers with the
object as it would be stored.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from kubernetes import client as k8s
from pydantic import ValidationError

from hegui.api import KINDS, ApiObject, crdgen, field_errors
from hegui.api.testing import InvalidCase, documents, invalid_cases, load_samples
from hegui.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster

CRD_DIR = crdgen.DEFAULT_OUTPUT
PLURALS = {kind.kind: kind.plural for kind in crdgen.KINDS}
CLUSTER_SCOPED = {kind.kind for kind in crdgen.KINDS if kind.scope == "Cluster"}
CASES = invalid_cases()


@functools.cache
def _cel_messages() -> frozenset[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []):
                found.add(rule["message"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in CRD_DIR.glob("hegui.io_*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(found)


@pytest.fixture(scope="module")
def crds(local_cluster: LocalCluster) -> LocalCluster:
    local_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    for kind in crdgen.KINDS:
        local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              f"crd/{kind.name}")
    return local_cluster


@pytest.fixture(scope="module")
def namespace(crds: LocalCluster) -> Iterator[str]:
    name = f"crds-{uuid.uuid4().hex[:8]}"
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false")


def _placed(document: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The document in the test's namespace, or renamed if cluster-scoped."""
    document = copy.deepcopy(document)
    if document["kind"] in CLUSTER_SCOPED:
        document["metadata"]["name"] += f"-{uuid.uuid4().hex[:6]}"
    else:
        document["metadata"]["namespace"] = namespace
    return document


def _kubectl_with(cluster: LocalCluster, document: dict[str, Any],
                  *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        yaml.safe_dump(document, handle, allow_unicode=True)
        handle.flush()
        return cluster.kubectl(*args, "-f", handle.name, check=False)


def test_crds_install_and_are_listed_by_category(crds: LocalCluster, namespace: str) -> None:
    resources = crds.kubectl("api-resources", "--categories=hegui", "-o", "name").stdout.split()
    assert sorted(resources) == sorted(f"{kind.plural}.hegui.io" for kind in crdgen.KINDS)
    listed = crds.kubectl("get", "hegui", "-n", namespace, check=False)
    assert listed.returncode == 0, listed.stderr
    short = crds.kubectl("get", "gsvc", "-n", namespace, check=False)
    assert short.returncode == 0, short.stderr


def test_explain_prints_the_descriptions(crds: LocalCluster) -> None:
    filing = crds.kubectl("explain", "gsvc.spec.filing").stdout
    assert "publicOpinion" in filing and "-required-" in filing
    assert "具有舆论属性或者社会动员能力" in filing and "Art.17" in filing
    assert "算法备案" in filing
    number = crds.kubectl("explain", "gsvc.spec.filing.algorithm.number").stdout
    assert "网信算备" in number and "7-digit provider code" in number


@pytest.mark.parametrize("name", sorted(load_samples()))
def test_every_sample_is_accepted(crds: LocalCluster, namespace: str, name: str) -> None:
    sample = load_samples()[name]
    document = _placed(sample, namespace)
    args = ["create", "-o", "json"]
    if document["kind"] in CLUSTER_SCOPED:
        args.append("--dry-run=server")
    result = _kubectl_with(crds, document, *args)
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    if document["kind"] not in CLUSTER_SCOPED:
        crds.kubectl("delete", PLURALS[document["kind"]], document["metadata"]["name"],
                     "-n", namespace)
    model = KINDS[sample["kind"]]
    # What the apiserver stored (after its defaulting) is what the model reads from the sample.
    assert model.from_dict(stored).to_dict()["spec"] == model.from_dict(sample).to_dict()["spec"]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_invalid_object_is_refused_naming_the_field(crds: LocalCluster, namespace: str,
                                                    case: InvalidCase) -> None:
    result = _kubectl_with(crds, _placed(case.document, namespace), "create",
                           "--dry-run=server")
    assert result.returncode != 0, f"the apiserver accepted {case.name}"
    assert case.field in result.stderr, result.stderr
    # Where the model refuses with a CEL rule's message, the apiserver says the same words.
    with pytest.raises(ValidationError) as raised:
        KINDS[case.document["kind"]].from_dict(case.document)
    shared = {e.message for e in field_errors(raised.value)} & _cel_messages()
    for message in shared:
        assert message in result.stderr, f"{message!r} not in {result.stderr!r}"


def test_unknown_fields_are_pruned_for_clients_that_do_not_ask_for_strict(
        crds: LocalCluster, namespace: str, api_client: k8s.ApiClient) -> None:
    # kubectl asks for Strict (see the misspelt-field case); a client that does not, gets the
    # apiserver's pruning: the field is dropped, never stored.
    document = _placed(load_samples()["exception.yaml"], namespace)
    document["metadata"]["name"] = "pruned"
    document["spec"]["expiresAt"] = "2099-01-01T00:00:00Z"
    api = k8s.CustomObjectsApi(api_client)
    created = api.create_namespaced_custom_object(
        "hegui.io", "v1alpha1", namespace, "complianceexceptions", document,
        field_validation="Ignore")
    assert "expiresAt" not in created["spec"]
    api.delete_namespaced_custom_object("hegui.io", "v1alpha1", namespace,
                                        "complianceexceptions", "pruned")


def test_exception_spec_is_immutable(crds: LocalCluster, namespace: str) -> None:
    document = _placed(load_samples()["exception.yaml"], namespace)
    document["metadata"]["name"] = "immutable"
    assert _kubectl_with(crds, document, "create").returncode == 0
    try:
        patched = crds.kubectl("patch", "cexc", "immutable", "-n", namespace, "--type=merge",
                               "-p", '{"spec":{"duration":"2000h"}}', check=False)
        assert patched.returncode != 0
        assert "spec: Invalid value" in patched.stderr and "immutable" in patched.stderr
        assert "Art.21" in patched.stderr
    finally:
        crds.kubectl("delete", "cexc", "immutable", "-n", namespace)


def test_status_is_a_subresource_shown_in_printer_columns(crds: LocalCluster,
                                                          namespace: str) -> None:
    document = _placed(load_samples()["chat-service.yaml"], namespace)
    document["status"] = {"observedGeneration": 1}
    result = _kubectl_with(crds, document, "create", "-o", "json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert "status" not in created  # status is the operator's, through the subresource only
    status = {"status": {
        "observedGeneration": 1, "assessmentExpiresOn": "2026-04-19",
        "conditions": [
            {"type": "Compliant", "status": "True", "reason": "AllRulesHold",
             "lastTransitionTime": "2026-01-01T00:00:00Z", "article": "Art.17"},
            {"type": "Suspended", "status": "False", "reason": "ObjectivesMet",
             "lastTransitionTime": "2026-01-01T00:00:00Z", "article": "Art.21"}]}}
    try:
        crds.kubectl("patch", "gsvc", "chat", "-n", namespace, "--subresource=status",
                     "--type=merge", "-p", json.dumps(status))
        table = crds.kubectl("get", "gsvc", "chat", "-n", namespace).stdout.splitlines()
        assert table[0].split()[:6] == ["NAME", "COMPLIANT", "SUSPENDED", "FILING",
                                        "ASSESSMENT-EXPIRY", "AGE"]
        assert table[1].split()[:5] == ["chat", "True", "False",
                                        "网信算备110108123456701250012号", "2026-04-19"]
    finally:
        crds.kubectl("delete", "gsvc", "chat", "-n", namespace)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip_through_the_apiserver_is_lossless(
        crds: LocalCluster, namespace: str, api_client: k8s.ApiClient, kind: str) -> None:
    model: type[ApiObject] = KINDS[kind]
    api = k8s.CustomObjectsApi(api_client)
    plural = PLURALS[kind]

    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(documents(model, namespace=None if kind in CLUSTER_SCOPED else namespace))
    def round_trip(document: dict[str, Any]) -> None:
        obj = model.from_dict(document)
        body = obj.to_dict()
        body["metadata"]["name"] += f"-{uuid.uuid4().hex[:6]}"
        name = body["metadata"]["name"]
        if kind in CLUSTER_SCOPED:
            stored = api.create_cluster_custom_object("hegui.io", "v1alpha1", plural, body,
                                                      dry_run="All", field_validation="Strict")
        else:
            api.create_namespaced_custom_object("hegui.io", "v1alpha1", namespace, plural,
                                                body, field_validation="Strict")
            stored = api.get_namespaced_custom_object("hegui.io", "v1alpha1", namespace,
                                                      plural, name)
            api.delete_namespaced_custom_object("hegui.io", "v1alpha1", namespace, plural,
                                                name)
        again = model.from_dict(stored)
        assert again.model_dump()["spec"] == obj.model_dump()["spec"]
        assert again.to_dict()["spec"] == body["spec"]

    round_trip()

