"""OpenAI-compatible image generation (`/v1/images/generations`) (Art.4, Art.12, Art.14): the
prompt (and a negative prompt) in; images out are labeled, not yet moderated (that needs the
neural image classifier, which the sidecar says in `x-hegui-output: unmoderated`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hegui.sidecar.families.base import Family, Slot, field_slot, invalid


@dataclass
class Images(Family):
    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        if not isinstance(body.get("prompt"), str):
            raise invalid("prompt must be a string")
        return field_slot(body, "prompt", "content") + field_slot(body, "negative_prompt",
                                                                  "content")

    def wants_stream(self, body: dict[str, Any], action: str = "") -> bool:
        return False

    def output_slots(self, body: Any) -> list[Slot]:
        return []


IMAGES = Images("images", stream_field=None)

__all__ = ["IMAGES", "Images"]
