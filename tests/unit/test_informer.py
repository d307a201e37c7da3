"""The webhook's informer: every list replaces its view; failures back off (Art.21: a revoked
exception stops working)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any

from hegui.admission.informer import Informer, Resource

EXCEPTIONS = Resource("hegui.io", "v1alpha1", "complianceexceptions", "ComplianceException")


class Listed(Informer):
    """An informer whose list answers are given by the test: the list-and-compare logic alone
    (the watch itself runs against the real apiserver in tests/integration)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.items: list[dict[str, Any]] = []

        def handle(event: str, obj: Mapping[str, Any]) -> None:
            if event != "SYNCED":
                self.events.append((event, obj["metadata"]["name"]))

        super().__init__(None, EXCEPTIONS, handle, stop=threading.Event())

    def _request(self, **query: Any) -> Any:
        return {"metadata": {"resourceVersion": "7"}, "items": self.items}


def _item(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ai"}}


def test_a_re_list_forgets_what_was_deleted_while_the_watch_was_down() -> None:
    informer = Listed()
    informer.items = [_item("keep"), _item("revoked")]
    assert informer._list() == "7"
    informer.events.clear()
    informer.items = [_item("keep")]
    informer._list()
    assert ("DELETED", "revoked") in informer.events
    assert ("ADDED", "keep") in informer.events
    assert set(informer.known) == {("ai", "keep")}
    assert informer.listed.is_set()


def test_failures_back_off_up_to_thirty_seconds() -> None:
    informer = Listed()
    delays = [informer.backoff(n) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 0.55 and 1.0 <= delays[1] <= 1.1
    assert all(later >= earlier * 0.9 for earlier, later in itertools.pairwise(delays))
    assert 30.0 <= delays[-1] <= 33.0


class Waits(threading.Event):
    """Records what the informer waits for, and stops it after a few waits."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.waited: list[float] = []
        self.limit = limit

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.append(timeout or 0.0)
        if len(self.waited) >= self.limit:
            self.set()
        return self.is_set()


def test_repeated_410s_are_not_listed_in_a_tight_loop() -> None:
    from kubernetes.client.exceptions import ApiException

    informer = Listed()
    informer.stop = Waits(limit=5)
    lists = 0

    def listing() -> str:
        nonlocal lists
        lists += 1
        return "7"

    def expired(version: str) -> int:
        raise ApiException(status=410, reason="Gone")

    informer._list = listing  # type: ignore[method-assign]
    informer._watch = expired  # type: ignore[method-assign]
    informer._run()
    # The first 410 re-lists at once; the next ones wait longer and longer.
    assert lists == 6
    assert informer.stop.waited == sorted(informer.stop.waited)
    assert informer.stop.waited[0] >= 0.5 and informer.stop.waited[-1] >= 4.0
