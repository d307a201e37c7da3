"""Triton Inference Server serving an LLM (TensorRT-LLM, vLLM or Python backends) (Art.4, Art.14).

- The generate extension, `/v2/models/<m>[/versions/<v>]/generate` and `generate_stream`: JSON
  keys name the model's input tensors (`text_input` by convention) and output tensors
  (`text_output`). Every string in the request and in the answer is moderated, whatever the
  tensor is called; `generate_stream` is SSE, one JSON object per event.
- KServe v2 inference, `/v2/models/<m>[/versions/<v>]/infer`, JSON form: the data of every
  BYTES tensor, in and out. The binary tensor extension and integer token-id inputs cannot be
  moderated and are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hegui.sidecar.families.base import Family, Slot, invalid, malformed, string_leaves

_META = frozenset({"model_name", "model_version", "id", "name", "datatype"})
_TOKEN_IDS = re.compile(r"(?i)(input_ids|token_ids|tokens?|input_lengths?_ids)$")


def _leaves(body: dict[str, Any]) -> list[Slot]:
    return [s for key, value in body.items() if key not in _META
            for s in ([Slot(body, key, _kind(key))] if isinstance(value, str)
                      else string_leaves(value, kind=_kind(key)))]


def _kind(name: str) -> str:
    """`text_output` (the conventional text tensor) is the content people read and label."""
    return "content" if name == "text_output" else f"tensor.{name}"


@dataclass
class TritonGenerate(Family):
    """The generate extension."""

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        if not any(isinstance(v, (str, list)) for k, v in body.items() if k != "parameters"):
            raise invalid("the request carries no text input (text_input)")
        for key, value in body.items():
            if _TOKEN_IDS.search(key) and not isinstance(value, str):
                raise invalid(f"{key} holds token ids, which cannot be moderated (Art.14): send "
                              "text in text_input")
        slots = _leaves(body)
        for slot in slots:
            slot.kind = "content"
        return slots

    def output_slots(self, body: Any) -> list[Slot]:
        if not isinstance(body, dict):
            raise malformed("the model's answer is not an object")
        return _leaves(body)

    def chunk_slots(self, chunk: Any) -> list[Slot]:
        if not isinstance(chunk, dict):
            raise ValueError("an event that is not an object")
        return _leaves(chunk)

    def final_event(self, template: dict[str, Any], error: dict[str, Any]) -> Any:
        head = {k: template[k] for k in ("model_name", "model_version", "id") if k in template}
        return {**head, "error": error.get("message"), "hegui": error}


def _tensor_slots(tensors: Any, side: str) -> list[Slot]:
    if not isinstance(tensors, list):
        raise invalid(f"{side} must be a list of tensors") if side == "inputs" else \
            malformed(f"the model's answer has no {side}")
    slots: list[Slot] = []
    for tensor in tensors:
        if not isinstance(tensor, dict):
            continue
        parameters = tensor.get("parameters")
        if isinstance(parameters, dict) and (parameters.get("binary_data")
                                             or parameters.get("binary_data_size")):
            raise invalid("binary tensor data cannot be moderated (Art.14): send JSON data")
        datatype = str(tensor.get("datatype", "")).upper()
        name = str(tensor.get("name", ""))
        if side == "inputs" and datatype.startswith(("INT", "UINT")) and _TOKEN_IDS.search(name):
            raise invalid(f"input tensor {name} holds token ids, which cannot be moderated "
                          "(Art.14): send text in a BYTES tensor")
        if datatype == "BYTES":
            slots += string_leaves(tensor.get("data"), kind=_kind(name))
    return slots


@dataclass
class TritonInfer(Family):
    """KServe v2 `infer` with JSON tensors."""

    def input_slots(self, body: dict[str, Any]) -> list[Slot]:
        parameters = body.get("parameters")
        if isinstance(parameters, dict) and parameters.get("binary_data_output"):
            raise invalid("binary_data_output cannot be moderated (Art.14)")
        for output in body.get("outputs") or []:
            if isinstance(output, dict) and isinstance(output.get("parameters"), dict) and \
                    output["parameters"].get("binary_data"):
                raise invalid("binary output tensors cannot be moderated (Art.14)")
        return _tensor_slots(body.get("inputs"), "inputs")

    def output_slots(self, body: Any) -> list[Slot]:
        if not isinstance(body, dict):
            raise malformed("the model's answer is not an object")
        return _tensor_slots(body.get("outputs"), "outputs")


TRITON_GENERATE = TritonGenerate("triton_generate", stream_field=None,
                                 streams=frozenset({"generate_stream"}))
TRITON_INFER = TritonInfer("triton_infer", stream_field=None)

__all__ = ["TRITON_GENERATE", "TRITON_INFER", "TritonGenerate", "TritonInfer"]
