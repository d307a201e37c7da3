"""The operator's liveness probe fails while a reconcile hangs (issue 8.6), and only then."""

from __future__ import annotations

import time
from typing import Any

import kopf
import pytest

from hegui.operator import handlers
from hegui.operator.reconciler import Operator
from hegui.operator.settings import OperatorSettings


def test_a_reconcile_that_hangs_is_reported_and_one_that_runs_briefly_is_not() -> None:
    cluster: Any = None  # the probe makes no API call
    op = Operator(OperatorSettings(stuck_seconds=300.0), cluster)
    memo = kopf.Memo(operator=op)
    assert handlers.reconcile_not_stuck(memo) == "ok"
    op.in_flight[("ai", "chat")] = time.monotonic() - 301
    op.in_flight[("ai", "busy")] = time.monotonic()
    assert op.stuck_reconciles() == ["ai/chat"]
    with pytest.raises(RuntimeError, match="ai/chat running for over 300s"):
        handlers.reconcile_not_stuck(memo)
    op.in_flight.clear()
    assert handlers.reconcile_not_stuck(memo) == "ok"
