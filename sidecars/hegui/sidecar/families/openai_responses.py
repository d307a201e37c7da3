"""The OpenAI Responses API (`/v1/responses`, served by vLLM and SGLang) (Art.4, Art.14).

In: `instructions`, `input` (a string or items: messages with text parts, function calls and
their outputs, reasoning), tools' descriptions and schemas, a stored prompt's variables.
Out: each output item's text parts, refusals, reasoning (summary and text), function-call
arguments; `logprobs` of a text part kept only when its tokens pass moderation untouched.
Streams are SSE with `event:` names; `*.delta` events carry new text, `*.done` events and
`response.completed` repeat it whole (aggregates: the relay sends what it moderated).
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
    refuse_media,
    string_leaves,
    text_slots,
)
from hegui.sidecar.families.openai_chat import logprob_tokens, tool_slots

_DELTAS = {"response.output_text.delta": "content", "response.refusal.delta": "refusal",
           "response.reasoning_summary_text.delta": "reasoning",
           "response.reasoning_text.delta": "reasoning",
           "response.function_call_arguments.delta": "tool_arguments"}
_DONE_FIELDS = {"response.output_text.done": ("text", "content"),
                "response.refusal.done": ("refusal", "refusal"),
                "response.reasoning_summary_text.done": ("text", "reasoning"),
                "response.reasoning_text.done": ("text", "reasoning"),
                "response.function_call_arguments.done": ("arguments", "tool_arguments")}
FINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})


def _kind(kind: str, output_index: Any, content_index: Any = 0) -> str:
    return f"{kind}.{output_index}.{content_index}"


def item_slots(item: Any, output_index: int, *, aggregate: bool = False) -> list[Slot]:
    """The texts of one input or output item."""
    slots: list[Slot] = []
    if not isinstance(item, dict):
        return slots
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        content = item.get("content")
        if isinstance(content, str):
            slots.append(Slot(item, "content", _kind("content", output_index)))
        elif isinstance(content, list):
            for position, part in enumerate(content):
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("text"), str):
                    slots.append(Slot(part, "text", _kind("content", output_index, position)))
                if isinstance(part.get("refusal"), str):
                    slots.append(Slot(part, "refusal", _kind("refusal", output_index, position)))
                if isinstance(part.get("logprobs"), list):
                    slots.append(probe(logprob_tokens({"content": part["logprobs"]}), part,
                                       "logprobs"))
    elif kind == "reasoning":
        for key in ("summary", "content"):
            for part in item.get(key) or []:
                slots += field_slot(part, "text", _kind("reasoning", output_index))
    elif kind in ("function_call", "custom_tool_call"):
        slots += field_slot(item, "arguments", _kind("tool_arguments", output_index))
        slots += field_slot(item, "input", _kind("tool_arguments", output_index))
        slots += field_slot(item, "name", "name")
    elif kind in ("function_call_output", "custom_tool_call_output"):
        slots += text_slots(item.get("output"), item, "output", kind="tool_output")
    for slot in slots:
        slot.aggregate = aggregate
    return slots


@dataclass
class Responses(Family):
    """`/v1/responses`."""

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        # Earlier turns stored on the server (previous_response_id) were moderated when they
        # were made; the new turn is in `input` like any other.
        slots = field_slot(body, "instructions", "instructions")
        data = body.get("input")
        if isinstance(data, str):
            slots.append(Slot(body, "input"))
        elif isinstance(data, list):
            refuse_media(data, "input")  # media items, and media parts of messages
            slots += [s for i, item in enumerate(data) for s in item_slots(item, i)]
        elif data is not None:
            raise invalid("input must be a string or a list of items")
        slots += tool_slots(body.get("tools"))
        if isinstance(body.get("prompt"), dict):
            slots += string_leaves(body["prompt"].get("variables"), kind="prompt_variable")
        return slots

    def output_slots(self, body: Any) -> list[Slot]:
        if not isinstance(body, dict) or not isinstance(body.get("output"), list):
            raise malformed("the model's answer has no output")
        slots = [s for i, item in enumerate(body["output"]) for s in item_slots(item, i)]
        return slots + field_slot(body, "output_text", "output_text")

    def chunk_slots(self, chunk: Any) -> list[Slot]:
        if not isinstance(chunk, dict):
            raise ValueError("an event that is not an object")
        kind = chunk.get("type")
        output_index = chunk.get("output_index", 0)
        content_index = chunk.get("content_index", chunk.get("summary_index", 0))
        if kind in _DELTAS:
            return field_slot(chunk, "delta", _kind(_DELTAS[kind], output_index, content_index))
        if kind in _DONE_FIELDS:
            key, what = _DONE_FIELDS[kind]
            slots = field_slot(chunk, key, _kind(what, output_index, content_index))
        elif kind in ("response.output_item.added", "response.output_item.done"):
            slots = item_slots(chunk.get("item"), output_index)
        elif kind in ("response.content_part.added", "response.content_part.done"):
            part = chunk.get("part")
            slots = field_slot(part, "text", _kind("content", output_index, content_index))
            slots += field_slot(part, "refusal", _kind("refusal", output_index, content_index))
        elif kind in FINAL or kind in ("response.created", "response.in_progress"):
            response = chunk.get("response")
            output = response.get("output") if isinstance(response, dict) else None
            slots = [s for i, item in enumerate(output or []) for s in item_slots(item, i)]
            slots += field_slot(response, "output_text", "output_text")
        else:
            return []
        for slot in slots:
            slot.aggregate = True
        return slots

    def scrub(self, chunk: Any) -> list[str]:
        if isinstance(chunk, dict) and chunk.pop("logprobs", None) is not None:
            return ["logprobs"]
        return []

    def is_final(self, chunk: Any) -> bool:
        return isinstance(chunk, dict) and chunk.get("type") in FINAL

    def closes_text(self, chunk: Any) -> bool:
        return isinstance(chunk, dict) and chunk.get("type") in (
            "response.output_text.done", "response.content_part.done",
            "response.output_item.done")

    def final_event(self, template: dict[str, Any], error: dict[str, Any]) -> Any:
        return {"type": "error", "code": error.get("code"), "message": error.get("message"),
                "param": None, "error": error}


RESPONSES = Responses("responses", final_event_name="error")

__all__ = ["RESPONSES", "Responses", "item_slots"]
