"""OpenAI-compatible completions (`/v1/completions`): `prompt` (a string or a list of strings)
and `suffix` in, each choice's `text` out (Art.4, Art.14). Token-id prompts and prompt
embeddings cannot be moderated and are refused; log probabilities are kept only when their tokens
pass moderation untouched (see `openai_chat`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hegui.sidecar.families.base import Family, Slot, choice_index, field_slot, invalid, probe
from hegui.sidecar.families.openai_chat import (
    DONE,
    choices,
    cut_chunk,
    drop_logprobs,
    finish_reasons,
    logprob_tokens,
    response_format_slots,
    stream_choices,
    withhold,
)


@dataclass
class Completions(Family):
    """`/v1/completions`: `prompt` is a string or a list of strings."""

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        if "prompt_embeds" in body:
            raise invalid("prompt_embeds cannot be moderated (Art.14): send the prompt as text")
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            slots = [Slot(body, "prompt")]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            slots = [Slot(prompt, i) for i in range(len(prompt))]
        else:
            raise invalid("prompt must be a string or a list of strings (token ids cannot be "
                          "moderated, Art.14)")
        return slots + field_slot(body, "suffix", "suffix") + response_format_slots(body)

    def output_slots(self, body: Any) -> list[Slot]:
        slots: list[Slot] = []
        for position, choice in enumerate(choices(body)):
            index = choice_index(choice, position)
            slots += field_slot(choice, "text", "content", index)
            if isinstance(choice.get("logprobs"), dict):
                slots.append(probe(logprob_tokens(choice["logprobs"]), choice, "logprobs", index))
        return slots

    def withhold_choice(self, body: Any, choice: int, error: dict[str, Any]) -> bool:
        return withhold(body, choice, error, chat=False)

    def chunk_slots(self, chunk: Any) -> list[Slot]:
        return [s for position, choice in enumerate(stream_choices(chunk))
                for s in field_slot(choice, "text", "content", choice_index(choice, position))]

    def scrub(self, chunk: Any) -> list[str]:
        return drop_logprobs(chunk)

    def final_event(self, template: dict[str, Any], error: dict[str, Any]) -> Any:
        return cut_chunk(template, error, {"text": ""})

    def finish_reason(self, chunk: Any) -> dict[int, Any]:
        return finish_reasons(chunk)


COMPLETIONS = Completions("completions", done_marker=DONE)

__all__ = ["COMPLETIONS", "Completions"]
