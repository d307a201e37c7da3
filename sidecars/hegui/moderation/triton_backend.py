"""The glue between Triton's Python backend and hegui.moderation, typed and unit-testable.

The model files in `sidecars/triton/models/*/1/` stay a few lines long: they hand each request's
`TEXT` tensor to `findings_batch` with the rule to apply, and return its `FINDINGS` array.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from hegui.moderation.findings import Findings


def decode(value: object) -> str:
    # Invalid UTF-8 is replaced rather than refused: a moderator must never fail on its input.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def findings_batch(texts: npt.NDArray[Any],
                   rule: Callable[[str], Findings]) -> npt.NDArray[np.object_]:
    """`FINDINGS` ([batch, 1] JSON bytes) for a `TEXT` tensor ([batch, 1] bytes)."""
    rows = texts.reshape(len(texts), -1)
    return np.array([[rule(decode(row[0])).to_json()] for row in rows], dtype=np.object_)
