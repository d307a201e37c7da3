"""Whose doing a request's end was, as the SLO engine counts it (Art.13, Art.14, Art.21): the
client's refusals count for neither side of availability, and only the model's blocked outputs
are the service's incidents. The same path against a real Prometheus:
tests/sidecar/test_prometheus_blame.py."""

from __future__ import annotations

from datetime import timedelta

from hegui.operator import slo
from hegui.operator.slo import Counts, Sample
from hegui.sidecar.metrics import outcome


def test_refusals_are_neither_requests_nor_failures_of_the_provider() -> None:
    samples = [Sample({"outcome": "served"}, 40), Sample({"outcome": "failed"}, 10),
               Sample({"outcome": "refused"}, 100_000)]
    assert slo.availability_counts(samples) == Counts(50, 10)  # 20% failed, whatever the flood
    only_refused = [Sample({"outcome": "refused"}, 500), Sample({"outcome": "failed"}, 0)]
    assert slo.availability_counts(only_refused) == Counts(0, 0)  # series exist: not NoData


def test_the_incident_query_counts_the_models_outputs_only() -> None:
    query = slo.incidents_query("ns/chat", timedelta(minutes=10))
    assert 'direction="output"' in query and 'hegui_service="ns/chat"' in query
    assert "[600s]" in query and "input" not in query


def test_whose_doing_a_status_is() -> None:
    assert outcome(200, cut=False) == "served"
    assert outcome(400, cut=False) == "refused"  # blocked prompt, bad input
    assert outcome(429, cut=False) == "refused"  # a limited user
    assert outcome(502, cut=False) == "failed"  # the model's failure
    assert outcome(200, cut=True) == "failed"  # a model failure cut a stream
    # A 5xx the client provoked (the handler says so) is the client's, not the provider's.
    assert outcome(502, cut=False, client_caused=True) == "refused"
    assert outcome(200, cut=True, client_caused=True) == "refused"
    assert outcome(200, cut=False, client_caused=True) == "served"
