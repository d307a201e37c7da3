"""SageMaker-style `/invocations` (Art.4, Art.14): one path, the body says the API. Requests and
answers are moderated as the family whose shape they have: `messages` (OpenAI chat),
`prompt` (completions), `inputs` (TGI), `text_input` (Triton generate), every one present in a
request; any other shape is refused, since what is not understood cannot be moderated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hegui.sidecar.families.base import Family, Slot, invalid, malformed
from hegui.sidecar.families.openai_chat import CHAT
from hegui.sidecar.families.openai_completions import COMPLETIONS
from hegui.sidecar.families.tgi import TGI
from hegui.sidecar.families.triton import TRITON_GENERATE

_REQUEST_SHAPES: tuple[tuple[str, Family], ...] = (
    ("messages", CHAT), ("prompt", COMPLETIONS), ("inputs", TGI), ("text_input", TRITON_GENERATE))


def request_family(body: dict[str, Any]) -> Family:
    for key, family in _REQUEST_SHAPES:
        if key in body:
            return family
    raise invalid("an /invocations body must carry messages, prompt, inputs or text_input; "
                  "other shapes cannot be moderated (Art.14)")


def answer_family(body: Any) -> Family:
    if isinstance(body, list) or (isinstance(body, dict) and "generated_text" in body):
        return TGI
    if isinstance(body, dict) and isinstance(body.get("choices"), list):
        chat = any(isinstance(c, dict) and "message" in c for c in body["choices"])
        return CHAT if chat else COMPLETIONS
    if isinstance(body, dict) and "text_output" in body:
        return TRITON_GENERATE
    raise malformed("the model's answer has no shape the sidecar can moderate")


@dataclass
class Invocations(Family):
    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        """Every shape present is moderated: the container may read `inputs` from a body that
        also carries `messages`."""
        request_family(body)  # refuses a body with no shape at all
        return [s for key, family in _REQUEST_SHAPES if key in body
                for s in family.input_slots(body)]

    def wants_stream(self, body: dict[str, Any], action: str = "") -> bool:
        if request_family(body).wants_stream(body):
            raise invalid("streams on /invocations are not served; use the model's own "
                          "streaming route")
        return False

    def choices_requested(self, body: dict[str, Any]) -> int:
        return request_family(body).choices_requested(body)

    def output_slots(self, body: Any) -> list[Slot]:
        return answer_family(body).output_slots(body)

    def answer_scrub(self, body: Any) -> list[str]:
        return answer_family(body).answer_scrub(body)

    def withhold_choice(self, body: Any, choice: int, error: dict[str, Any]) -> bool:
        return answer_family(body).withhold_choice(body, choice, error)


INVOCATIONS = Invocations("invocations")

__all__ = ["INVOCATIONS", "Invocations", "answer_family", "request_family"]
