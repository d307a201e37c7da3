"""An error that comes with every request (a record that cannot be written, while the evidence
store is down and the posture fails Closed) is logged once, then with a count at most every few
seconds: at 1,000 requests a second it was 1,000 lines a second (bench/evidence_load.py)."""

from __future__ import annotations

import logging

import pytest

from hegui.sidecar.app import _ThrottledError


def test_a_repeating_error_is_logged_once_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    throttled = _ThrottledError("cannot write a record", every=60.0)
    with caplog.at_level(logging.ERROR, logger="hegui.sidecar"):
        for _ in range(1000):
            throttled.report(OSError(28, "No space left on device"))
    assert [r.getMessage() for r in caplog.records] == [
        "cannot write a record: [Errno 28] No space left on device"]
    caplog.clear()
    throttled.last -= 60.0  # the interval has passed
    with caplog.at_level(logging.ERROR, logger="hegui.sidecar"):
        throttled.report(OSError(28, "No space left on device"))
    assert [r.getMessage() for r in caplog.records] == [
        "cannot write a record: [Errno 28] No space left on device (999 more since the last "
        "report)"]
