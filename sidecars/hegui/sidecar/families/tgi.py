"""Text Generation Inference's native API: `/generate` and `/generate_stream` (Art.4, Art.14).

In: `inputs`. Out: `generated_text`, each best-of sequence's `generated_text`; the `details`
(tokens, prefill, top tokens) spell the answer token by token and are kept only when their text
passes moderation untouched. SGLang serves `/generate` with another shape (`text` in, `text`
out): both fields are moderated whenever present, since either server may sit behind the path;
token-id inputs (`input_ids`) cannot be moderated and are refused. `/generate_stream` is SSE:
each event carries one `token.text`; the last also repeats the whole `generated_text` (an
aggregate).
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
    probe,
    stream_flag,
    string_leaves,
)


def _token_texts(value: Any) -> str:
    return "".join(s.text for s in string_leaves(value, kind="logprobs"))


def _sglang(body: dict[str, Any]) -> bool:
    return "text" in body and "inputs" not in body


@dataclass
class Tgi(Family):
    """`/generate` and `/generate_stream` (TGI); `/generate` (SGLang's native shape)."""

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        """`inputs` (TGI) and `text` (SGLang), both when both are there: the server behind the
        path reads one of them, and the sidecar cannot know which."""
        if "input_ids" in body or "input_embeds" in body:
            raise invalid("input_ids and input_embeds cannot be moderated (Art.14): send text")
        slots: list[Slot] = []
        if "text" in body:
            text = body["text"]
            if isinstance(text, str):
                slots.append(Slot(body, "text"))
            elif isinstance(text, list) and text and all(isinstance(t, str) for t in text):
                slots += [Slot(text, i, choice=i) for i in range(len(text))]
            else:
                raise invalid("text must be a string or a list of strings")
        if "inputs" in body or not slots:
            if not isinstance(body.get("inputs"), str):
                raise invalid("inputs must be a string")
            slots.append(Slot(body, "inputs"))
        return slots

    def wants_stream(self, body: dict[str, Any], action: str = "") -> bool:
        if action == "generate_stream":
            return True
        if stream_flag(body, "stream", False) and _sglang(body):
            # SGLang streams the whole text so far in every event: not relayed (Art.14).
            raise invalid("streamed SGLang /generate cannot be moderated; use "
                          "/v1/chat/completions with stream: true")
        return False

    def output_slots(self, body: Any) -> list[Slot]:
        answers = body if isinstance(body, list) else [body]
        slots: list[Slot] = []
        for position, answer in enumerate(answers):
            if not isinstance(answer, dict):
                raise malformed("the model's answer is not an object")
            if "generated_text" not in answer and "text" not in answer:
                raise malformed("the model's answer has no generated_text")
            slots += field_slot(answer, "generated_text", "content", position)
            slots += field_slot(answer, "text", "content", position)
            details = answer.get("details")
            if isinstance(details, dict):
                for offset, best in enumerate(details.get("best_of_sequences") or [], 1):
                    slots += field_slot(best, "generated_text", "content", position + offset)
                slots.append(probe(_token_texts({k: v for k, v in details.items()
                                                 if k != "best_of_sequences"})
                                   + _token_texts(details.get("best_of_sequences")),
                                   answer, "details", position))
            if isinstance(answer.get("meta_info"), dict):  # SGLang's token log probabilities
                slots.append(probe(_token_texts(answer["meta_info"]), answer, "meta_info",
                                   position))
        return slots

    def chunk_slots(self, chunk: Any) -> list[Slot]:
        if not isinstance(chunk, dict):
            raise ValueError("an event that is not an object")
        slots: list[Slot] = []
        if isinstance(chunk.get("token"), dict):
            slots += field_slot(chunk["token"], "text", "content")
        for slot in field_slot(chunk, "generated_text", "content"):
            slot.aggregate = True
            slots.append(slot)
        return slots

    def scrub(self, chunk: Any) -> list[str]:
        dropped = []
        if isinstance(chunk, dict):
            for key in ("top_tokens", "details"):
                if chunk.get(key):
                    del chunk[key]
                    dropped.append(key)
        return dropped

    def is_final(self, chunk: Any) -> bool:
        return isinstance(chunk, dict) and chunk.get("generated_text") is not None

    def finish_reason(self, chunk: Any) -> dict[int, Any]:
        details = chunk.get("details") if isinstance(chunk, dict) else None
        if isinstance(details, dict) and details.get("finish_reason"):
            return {0: details["finish_reason"]}
        return {}

    def final_event(self, template: dict[str, Any], error: dict[str, Any]) -> Any:
        return {"error": error.get("message"), "error_type": error.get("type"), "hegui": error}


TGI = Tgi("tgi", stream_field=None)

__all__ = ["TGI", "Tgi"]
