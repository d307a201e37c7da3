"""Anthropic-style messages (`/v1/messages`, served by vLLM and SGLang) (Art.4, Art.14).

In: `system` (a string or text blocks), each message's content (a string or blocks: text,
thinking, tool_use inputs, tool_result contents, text documents), tools' descriptions and input
schemas. Out: text, thinking and tool_use input blocks. Streams are SSE with `event:` names:
`content_block_delta` carries text (`text_delta`), reasoning (`thinking_delta`) and tool input
JSON (`input_json_delta`); `message_stop` ends the stream.
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
    refuse_media,
    schema_descriptions,
    string_leaves,
    text_slots,
)


def block_slots(blocks: Any, container: Any, key: Any, *, choice: int = 0,
                first: int = 0) -> list[Slot]:
    """The texts of a content (a string or a list of blocks, the first at index `first`)."""
    if isinstance(blocks, str):
        return [Slot(container, key, "content", choice)]
    slots: list[Slot] = []
    if not isinstance(blocks, list):
        return slots
    for position, block in enumerate(blocks, first):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            slots += field_slot(block, "text", f"content.{position}", choice)
        elif kind == "thinking":
            slots += field_slot(block, "thinking", f"reasoning.{position}", choice)
        elif kind in ("tool_use", "server_tool_use"):
            slots += string_leaves(block.get("input"), kind=f"tool_arguments.{position}",
                                   choice=choice)
            slots += field_slot(block, "name", "name", choice)
        elif kind == "tool_result":
            slots += text_slots(block.get("content"), block, "content", kind="tool_output")
        elif kind == "document" and isinstance(block.get("source"), dict):
            slots += field_slot(block["source"], "data", "document") if \
                block["source"].get("type") == "text" else []
            slots += text_slots(block["source"].get("content"), block["source"], "content",
                                kind="document")
        for extra in ("title", "context"):
            slots += field_slot(block, extra, "document", choice)
    return slots


@dataclass
class Messages(Family):
    """`/v1/messages`."""

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise invalid("messages must be a list")
        refuse_media(body.get("system"), "system")
        for position, message in enumerate(messages):
            if isinstance(message, dict):
                refuse_media(message.get("content"), f"messages[{position}].content")
        slots = block_slots(body.get("system"), body, "system")
        for message in messages:
            if isinstance(message, dict):
                slots += block_slots(message.get("content"), message, "content")
        for tool in body.get("tools") or []:
            if isinstance(tool, dict):
                slots += field_slot(tool, "description", "description")
                slots += schema_descriptions(tool.get("input_schema"))
        return slots

    def output_slots(self, body: Any) -> list[Slot]:
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            raise malformed("the model's answer has no content")
        return block_slots(body["content"], body, "content")

    def chunk_slots(self, chunk: Any) -> list[Slot]:
        if not isinstance(chunk, dict):
            raise ValueError("an event that is not an object")
        index = chunk.get("index", 0)
        if chunk.get("type") == "content_block_delta" and isinstance(chunk.get("delta"), dict):
            delta = chunk["delta"]
            for key, kind in (("text", "content"), ("thinking", "reasoning"),
                              ("partial_json", "tool_arguments")):
                if isinstance(delta.get(key), str):
                    return [Slot(delta, key, f"{kind}.{index}")]
            return []
        if chunk.get("type") == "content_block_start":
            index = index if isinstance(index, int) else 0
            return block_slots([chunk.get("content_block")], chunk, "content_block", first=index)
        return []

    def is_final(self, chunk: Any) -> bool:
        return isinstance(chunk, dict) and chunk.get("type") == "message_stop"

    def closes_text(self, chunk: Any) -> bool:
        return isinstance(chunk, dict) and chunk.get("type") in ("content_block_stop",
                                                                 "message_delta")

    def final_event(self, template: dict[str, Any], error: dict[str, Any]) -> Any:
        return {"type": "error", "error": {**error, "type": error.get("type", "hegui_error")}}

    def finish_reason(self, chunk: Any) -> dict[int, Any]:
        delta = chunk.get("delta") if isinstance(chunk, dict) else None
        if isinstance(delta, dict) and delta.get("stop_reason"):
            return {0: delta["stop_reason"]}
        return {}


MESSAGES = Messages("messages", final_event_name="error")

__all__ = ["MESSAGES", "Messages", "block_slots"]
