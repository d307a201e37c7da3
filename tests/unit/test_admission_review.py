"""Hostile input never crashes the webhook (issue: validating admission, "Bad input")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hegui.admission import review


def _review(**request: Any) -> dict[str, Any]:
    base = {"uid": "u-1", "operation": "CREATE", "kind": {"group": "apps", "kind": "Deployment"},
            "namespace": "ns", "object": {"kind": "Deployment", "metadata": {"name": "d"}}}
    base.update(request)
    return {"apiVersion": review.API_VERSION, "kind": review.KIND, "request": base}


def _body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_a_well_formed_review_is_read() -> None:
    request = review.parse(_body(_review(dryRun=True, userInfo={"username": "alice"})))
    assert (request.uid, request.kind, request.group, request.name) == (
        "u-1", "Deployment", "apps", "d")
    assert request.dry_run and request.user == "alice"


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"{not json", 400, "not JSON"),
    (b"[]", 400, "not a JSON object"),
    (_body({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
            "request": {"uid": "x"}}), 400, "expected apiVersion"),
    (_body({"apiVersion": review.API_VERSION, "kind": "Pod"}), 400, "expected apiVersion"),
    (_body({"apiVersion": review.API_VERSION, "kind": review.KIND}), 400, "no request"),
    (_body(_review(uid=None)), 400, "request.uid"),
    (_body(_review(uid="x" * 500)), 400, "request.uid"),
    (_body(_review(operation="EXPLODE")), 400, "operation"),
    (_body(_review(object="a string")), 400, "request.object"),
    (b"[" * 200_000 + b"]" * 200_000, 400, "nested deeper"),
    (b" " * (review.MAX_BODY_BYTES + 1), 413, "exceeds"),
], ids=["not-json", "array", "v1beta1", "wrong-kind", "no-request", "no-uid", "long-uid",
        "bad-operation", "object-not-mapping", "deep-nesting", "over-3MiB"])
def test_malformed_bodies_get_a_clear_error(body: bytes, status: int, says: str) -> None:
    with pytest.raises(review.ReviewError) as error:
        review.parse(body)
    assert error.value.http_status == status
    assert says in str(error.value)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    deep_string = "[" * 10_000
    request = review.parse(_body(_review(object={"kind": "Pod", "note": deep_string})))
    assert request.obj["note"] == deep_string


def test_denial_names_the_reason_and_warnings_are_bounded() -> None:
    answer = review.respond("u-1", review.Decision(False, "no filing (Art.17)", code=403,
                                                   warnings=["w" * 1000] * 50))
    response = answer["response"]
    assert response["uid"] == "u-1" and response["allowed"] is False
    assert response["status"] == {"code": 403, "message": "no filing (Art.17)",
                                  "reason": "Forbidden"}
    assert len(response["warnings"]) == review.MAX_WARNINGS
    assert all(len(w) <= review.MAX_WARNING_CHARS for w in response["warnings"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None)
@given(request=st.dictionaries(
    st.sampled_from(["uid", "operation", "kind", "namespace", "name", "object", "oldObject",
                     "dryRun", "userInfo"]), json_values, max_size=9))
def test_fuzzed_requests_are_parsed_or_refused_cleanly(request: dict[str, Any]) -> None:
    body = _body({"apiVersion": review.API_VERSION, "kind": review.KIND, "request": request})
    try:
        parsed = review.parse(body)
    except review.ReviewError as error:
        assert error.http_status in (400, 413)
        return
    assert parsed.uid == request["uid"]
    assert isinstance(parsed.obj, dict)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=2000))
def test_fuzzed_bytes_are_refused_cleanly(body: bytes) -> None:
    try:
        parsed = review.parse(body)
    except review.ReviewError as error:
        assert error.http_status == 400
        return
    assert isinstance(parsed, review.AdmissionRequest)
