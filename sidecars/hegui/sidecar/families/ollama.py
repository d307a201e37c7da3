"""Ollama's native API: `/api/chat` and `/api/generate` (Art.4, Art.14).

In: messages (content, thinking, tool-call arguments), tools, `prompt`, `suffix`, `system` and
a client-sent `template`. `context` (token ids of an earlier answer) cannot be moderated and is
refused. Out: `message.content`, `message.thinking`, tool-call arguments, `response`,
`thinking`; `context` is dropped from answers (it spells the answer in token ids) and log
probabilities are kept only when their tokens pass moderation untouched.
Ollama streams unless `stream: false`: newline-delimited JSON, the last line has `done: true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hegui.sidecar.families.base import (
    BodyError,
    Family,
    Slot,
    field_slot,
    invalid,
    malformed,
    probe,
    stream_flag,
    string_leaves,
)
from hegui.sidecar.families.openai_chat import tool_slots


def message_slots(message: Any, choice: int = 0) -> list[Slot]:
    slots = field_slot(message, "content", "content", choice)
    slots += field_slot(message, "thinking", "reasoning", choice)
    for position, call in enumerate(message.get("tool_calls") or []
                                    if isinstance(message, dict) else []):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            slots += string_leaves(function.get("arguments"),
                                   kind=f"tool_arguments.{position}", choice=choice)
            slots += field_slot(function, "name", f"tool_name.{position}", choice)
    return slots


def _logprobs(answer: dict[str, Any]) -> list[Slot]:
    if isinstance(answer.get("logprobs"), list):
        text = "".join(s.text for s in string_leaves(answer["logprobs"], kind="logprobs"))
        return [probe(text, answer, "logprobs")]
    return []


def _refuse_images(where: str) -> None:
    raise BodyError("hegui.input_not_moderated",
                    f"{where} carries images: this sidecar moderates text only (no image "
                    "classifier in the service's posture), and nothing unmoderated reaches the "
                    "model (Art.14); send text only")


@dataclass
class Ollama(Family):
    """`/api/chat` (chat=True) or `/api/generate`."""

    chat: bool = True

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        if "context" in body:
            raise invalid("context (token ids) cannot be moderated (Art.14): send the "
                          "conversation as messages to /api/chat")
        if self.chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                raise invalid("messages must be a list")
            for position, message in enumerate(messages):
                if isinstance(message, dict) and message.get("images"):
                    _refuse_images(f"messages[{position}].images")
            slots = [s for m in messages if isinstance(m, dict) for s in message_slots(m)]
            return slots + tool_slots(body.get("tools"))
        if body.get("images"):
            _refuse_images("images")
        if not isinstance(body.get("prompt", ""), str):
            raise invalid("prompt must be a string")
        slots = field_slot(body, "prompt", "content")
        for key, kind in (("suffix", "suffix"), ("system", "system"), ("template", "template")):
            slots += field_slot(body, key, kind)
        return slots

    def wants_stream(self, body: dict[str, Any], action: str = "") -> bool:
        return stream_flag(body, "stream", True)  # Ollama streams by default

    def choices_requested(self, body: dict[str, Any]) -> int:
        return 1

    def output_slots(self, body: Any) -> list[Slot]:
        if not isinstance(body, dict):
            raise malformed("the model's answer is not an object")
        if self.chat:
            if not isinstance(body.get("message"), dict):
                raise malformed("the model's answer has no message")
            slots = message_slots(body["message"])
        else:
            if not isinstance(body.get("response"), str):
                raise malformed("the model's answer has no response")
            slots = field_slot(body, "response", "content")
            slots += field_slot(body, "thinking", "reasoning")
        return slots + _logprobs(body)

    def answer_scrub(self, body: Any) -> list[str]:
        if isinstance(body, dict) and body.pop("context", None) is not None:
            return ["context"]
        return []

    def chunk_slots(self, chunk: Any) -> list[Slot]:
        if not isinstance(chunk, dict):
            raise ValueError("a line that is not an object")
        if self.chat:
            return message_slots(chunk.get("message")) if isinstance(chunk.get("message"),
                                                                     dict) else []
        return field_slot(chunk, "response", "content") + field_slot(chunk, "thinking",
                                                                     "reasoning")

    def scrub(self, chunk: Any) -> list[str]:
        dropped = []
        if isinstance(chunk, dict):
            for key in ("context", "logprobs"):
                if chunk.pop(key, None) is not None:
                    dropped.append(key)
        return dropped

    def is_final(self, chunk: Any) -> bool:
        return isinstance(chunk, dict) and chunk.get("done") is True

    def finish_reason(self, chunk: Any) -> dict[int, Any]:
        if self.is_final(chunk):
            return {0: chunk.get("done_reason") or "stop"}
        return {}

    def final_event(self, template: dict[str, Any], error: dict[str, Any]) -> Any:
        final = {k: template[k] for k in ("model", "created_at") if k in template}
        return {**final, "error": error.get("message"), "hegui": error, "done": True,
                "done_reason": "content_filter"}


OLLAMA_CHAT = Ollama("ollama_chat", framing="ndjson", chat=True)
OLLAMA_GENERATE = Ollama("ollama_generate", framing="ndjson", chat=False)

__all__ = ["OLLAMA_CHAT", "OLLAMA_GENERATE", "Ollama"]
