"""OpenAI-compatible image generation (`/v1/images/generations`) (Art.4, Art.12, Art.14): the
prompt (and a negative prompt) in; out, every text of the answer is moderated (a
`revised_prompt` is text the model wrote, and a service can declare any route of this family),
the pictures are scored by the image classifier the posture declares (`spec.moderation.images`,
hegui.sidecar.images_moderation), and what is served is labeled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hegui.sidecar.families.base import (
    Family,
    Slot,
    field_slot,
    invalid,
    malformed,
    stream_flag,
    string_leaves,
)

#: Fields that carry an image, not text: labeled, never scanned as text (base64 would be read
#: as digits and letters, and a masked byte would break the picture).
_IMAGE_FIELDS = frozenset({"b64_json"})


@dataclass
class Images(Family):
    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        if not isinstance(body.get("prompt"), str):
            raise invalid("prompt must be a string")
        return field_slot(body, "prompt", "content") + field_slot(body, "negative_prompt",
                                                                  "content")

    def wants_stream(self, body: dict[str, Any], action: str = "") -> bool:
        if stream_flag(body, "stream", False):
            raise invalid("streamed images (partial images) are not served: they would not be "
                          "labeled (Art.12); ask without stream")
        return False

    def output_slots(self, body: Any) -> list[Slot]:
        """Every text of the answer but the images themselves (`b64_json`, `data:` URLs)."""
        if not isinstance(body, dict):
            raise malformed("the model's answer is not an object")
        return [s for s in string_leaves(body, kind="content")
                if not (s.key in _IMAGE_FIELDS or s.text.startswith("data:"))]


IMAGES = Images("images", stream_field=None)

__all__ = ["IMAGES", "Images"]
