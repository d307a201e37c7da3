"""OpenAI-compatible chat completions (`/v1/chat/completions`), as vLLM, SGLang, TGI,
TensorRT-LLM and NIM serve them (Art.4, Art.14).

Both ways, every text a person or the model reads: message content (strings and parts), names,
reasoning (`reasoning_content`, `reasoning`), refusals, tool calls and their arguments, tool and
function descriptions and their parameter schemas, a client-sent `chat_template` and documents.
Log probabilities spell out the answer token by token: they are kept only when their tokens pass
moderation untouched, else dropped (and the sidecar says so). Token-id prompts and prompt
embeddings cannot be moderated and are refused.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from hegui.sidecar.families.base import (
    Family,
    Slot,
    choice_index,
    field_slot,
    invalid,
    loads_bounded,
    malformed,
    probe,
    refuse_media,
    schema_descriptions,
    string_leaves,
    text_slots,
)

DONE = b"data: [DONE]\n\n"
_PLAIN_DELTA = frozenset({"content", "role"})


def tool_slots(tools: Any) -> list[Slot]:
    """Descriptions, names and parameter schemas of `tools` (and legacy `functions`)."""
    slots: list[Slot] = []
    if not isinstance(tools, list):
        return slots
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        function: dict[str, Any] = (tool["function"] if isinstance(tool.get("function"), dict)
                                    else tool)
        slots += field_slot(function, "description", "description")
        slots += field_slot(function, "name", "name")
        slots += schema_descriptions(function.get("parameters"))
    return slots


def unescaped_json(container: Any, key: str) -> None:
    """Rewrite a JSON text held in `container[key]` (tool-call arguments) without `\\u`
    escapes, the same JSON: moderation reads `"\\u70b8"` as six letters, not 炸."""
    text = container.get(key) if isinstance(container, dict) else None
    if isinstance(text, str) and "\\u" in text:
        with contextlib.suppress(ValueError):  # not (yet) JSON: moderated as it is
            container[key] = json.dumps(loads_bounded(text.encode()), ensure_ascii=False)


def tool_call_slots(calls: Any, choice: int = 0, *, streamed: bool = False) -> list[Slot]:
    """Names and arguments of `tool_calls`, each call its own kind (streams window per call)."""
    slots: list[Slot] = []
    if not isinstance(calls, list):
        return slots
    for position, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            continue
        index = choice_index(call, position) if streamed else position
        if not streamed:
            unescaped_json(call["function"], "arguments")
        slots += field_slot(call["function"], "arguments", f"tool_arguments.{index}", choice)
        slots += field_slot(call["function"], "name", f"tool_name.{index}", choice)
    return slots


def response_format_slots(body: dict[str, Any]) -> list[Slot]:
    """Descriptions in a structured-output schema (`response_format`, vLLM's `guided_json` and
    `structured_outputs`): the model reads them as instructions."""
    slots: list[Slot] = []
    for key in ("response_format", "guided_json", "structured_outputs"):
        if isinstance(body.get(key), (dict, list)):
            slots += schema_descriptions(body[key])
    return slots


def message_slots(message: dict[str, Any], choice: int = 0) -> list[Slot]:
    """The texts of one chat message (a request's or an answer's) or of a stream delta."""
    slots = text_slots(message.get("content"), message, "content", choice=choice)
    slots += field_slot(message, "name", "name", choice)
    for key in ("reasoning_content", "reasoning"):
        slots += field_slot(message, key, key, choice)
    slots += field_slot(message, "refusal", "refusal", choice)
    slots += tool_call_slots(message.get("tool_calls"), choice)
    if isinstance(message.get("function_call"), dict):
        unescaped_json(message["function_call"], "arguments")
        slots += field_slot(message["function_call"], "arguments", "tool_arguments.0", choice)
        slots += field_slot(message["function_call"], "name", "tool_name.0", choice)
    return slots


def logprob_tokens(logprobs: Any) -> str:
    """The tokens of a `logprobs` object (chat's `content`/`refusal` lists or completions'
    `tokens`/`top_logprobs`), chosen tokens first, then every alternative."""
    chosen: list[str] = []
    others: list[str] = []
    if not isinstance(logprobs, dict):
        return ""
    for key in ("content", "refusal"):
        for entry in logprobs.get(key) or []:
            if isinstance(entry, dict):
                chosen.append(str(entry.get("token", "")))
                others += [str(t.get("token", "")) for t in entry.get("top_logprobs") or []
                           if isinstance(t, dict)]
    chosen += [str(t) for t in logprobs.get("tokens") or []]
    for alternatives in logprobs.get("top_logprobs") or []:
        if isinstance(alternatives, dict):
            others += [str(t) for t in alternatives]
    return "".join(chosen) + "\n" + " ".join(others)


def choices(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise malformed("the model's answer has no choices")
    return [c for c in body["choices"] if isinstance(c, dict)]


def withhold(body: Any, choice: int, error: dict[str, Any], *, chat: bool) -> bool:
    """Empty choice `choice` of an OpenAI answer and mark it content_filter (Art.14); False when
    the answer has no such choice."""
    for position, item in enumerate(choices(body)):
        if choice_index(item, position) != choice:
            continue
        for key in ("message", "text", "logprobs", "delta"):
            item.pop(key, None)
        if chat:
            item["message"] = {"role": "assistant", "content": ""}
        else:
            item["text"] = ""
        item["finish_reason"] = "content_filter"
        item["error"] = error
        return True
    return False


@dataclass
class Chat(Family):
    """`/v1/chat/completions`."""

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise invalid("messages must be a list")
        for position, message in enumerate(messages):
            if isinstance(message, dict):
                refuse_media(message.get("content"), f"messages[{position}].content")
        slots = [s for m in messages if isinstance(m, dict) for s in message_slots(m)]
        slots += tool_slots(body.get("tools")) + tool_slots(body.get("functions"))
        slots += field_slot(body, "chat_template", "template")
        if "documents" in body:
            slots += string_leaves(body["documents"], kind="document")
        if isinstance(body.get("chat_template_kwargs"), dict):
            slots += string_leaves(body["chat_template_kwargs"], kind="template")
        return slots + response_format_slots(body)

    def output_slots(self, body: Any) -> list[Slot]:
        slots: list[Slot] = []
        for position, choice in enumerate(choices(body)):
            index = choice_index(choice, position)
            if isinstance(choice.get("message"), dict):
                slots += message_slots(choice["message"], index)
            if isinstance(choice.get("logprobs"), dict):
                slots.append(probe(logprob_tokens(choice["logprobs"]), choice, "logprobs", index))
        return slots

    def withhold_choice(self, body: Any, choice: int, error: dict[str, Any]) -> bool:
        return withhold(body, choice, error, chat=True)

    def chunk_slots(self, chunk: Any) -> list[Slot]:
        # The common chunk (one choice, a delta of content and at most the role) without the
        # general walk: half the relay's time per token went there (bench/streaming.py). Any
        # other key in the delta takes the walk below, so no field is skipped.
        if type(chunk) is dict:
            found = chunk.get("choices")
            if type(found) is list and len(found) == 1 and type(found[0]) is dict:
                delta = found[0].get("delta")
                if type(delta) is dict and type(delta.get("content")) is str and \
                        delta.keys() <= _PLAIN_DELTA:
                    index = found[0].get("index", 0)
                    if type(index) is int:
                        return [Slot(delta, "content", "content", index)]
        slots: list[Slot] = []
        for position, choice in enumerate(stream_choices(chunk)):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                index = choice_index(choice, position)
                slots += text_slots(delta.get("content"), delta, "content", choice=index)
                for key in ("reasoning_content", "reasoning", "refusal"):
                    slots += field_slot(delta, key, key, index)
                slots += tool_call_slots(delta.get("tool_calls"), index, streamed=True)
        return slots

    def scrub(self, chunk: Any) -> list[str]:
        return drop_logprobs(chunk)

    def final_event(self, template: dict[str, Any], error: dict[str, Any]) -> Any:
        return cut_chunk(template, error, {"delta": {}})

    def finish_reason(self, chunk: Any) -> dict[int, Any]:
        return finish_reasons(chunk)


def stream_choices(chunk: Any) -> list[dict[str, Any]]:
    if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
        raise ValueError("a chunk without choices")
    if not all(isinstance(c, dict) for c in chunk["choices"]):
        raise ValueError("a choice that is not an object")
    return list(chunk["choices"])


def drop_logprobs(chunk: Any) -> list[str]:
    dropped = False
    for choice in chunk.get("choices") or () if type(chunk) is dict else ():
        # `"logprobs": null` stays: it spells nothing (and a chunk unchanged is sent as is)
        if type(choice) is dict and choice.get("logprobs") is not None:
            del choice["logprobs"]
            dropped = True
    return ["logprobs"] if dropped else []


def cut_chunk(template: dict[str, Any], error: dict[str, Any], body: dict[str, Any]
              ) -> dict[str, Any]:
    final = {k: template[k] for k in ("id", "object", "created", "model") if k in template}
    final["choices"] = [{"index": 0, **body, "text": "", "finish_reason": "content_filter"}]
    final["error"] = error
    return final


def finish_reasons(chunk: Any) -> dict[int, Any]:
    """The finish reason of each choice that has one in this chunk."""
    reasons: dict[int, Any] = {}
    for position, choice in enumerate(chunk.get("choices") or [] if isinstance(chunk, dict)
                                      else []):
        if isinstance(choice, dict) and choice.get("finish_reason") is not None:
            reasons[choice_index(choice, position)] = choice["finish_reason"]
    return reasons


CHAT = Chat("chat", done_marker=DONE)

__all__ = ["CHAT", "DONE", "Chat", "choices", "cut_chunk", "drop_logprobs",
           "finish_reasons", "logprob_tokens", "message_slots", "response_format_slots",
           "stream_choices",
           "tool_call_slots", "tool_slots", "withhold"]
