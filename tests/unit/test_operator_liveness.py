"""The operator's liveness probe fails while a reconcile hangs (issue 8.6), and only then."""

from __future__ import annotations

import time

from hegui.operator import handlers


def test_a_reconcile_that_hangs_is_reported_and_one_that_runs_briefly_is_not() -> None:
    assert handlers.stuck_reconciles() == []
    handlers._IN_FLIGHT[("ai", "chat")] = time.monotonic() - handlers.STUCK_SECONDS - 1
    handlers._IN_FLIGHT[("ai", "busy")] = time.monotonic()
    try:
        assert handlers.stuck_reconciles() == ["ai/chat"]
    finally:
        handlers._IN_FLIGHT.clear()
    assert handlers.stuck_reconciles() == []
