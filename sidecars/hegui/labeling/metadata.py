"""The implicit label's payload (隐式标识, Art.12 and GB 45438-2025 Annex E): the `AIGC` object.

GB 45438-2025 names seven metadata fields under the key `AIGC`; TC260's practice guide puts them
in XMP under the namespace below. The same object travels with text responses as a JSON field
and an HTTP header, since text served over an API has no file to carry it.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from hegui.api.generativeservice import ImplicitLabel

#: The metadata key GB 45438-2025 uses for the implicit label.
AIGC_KEY = "AIGC"
#: The HTTP response header carrying the implicit label of a text response (ASCII JSON).
HEADER = "X-AIGC"
#: TC260's XMP namespace for the AIGC property (practice guide TC260-PG-20258A).
TC260_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
#: IPTC's digital source type for generated media, written beside TC260's for global platforms.
IPTC_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia")
CITATION = "Art.12, GB 45438-2025"


class LabelValue(StrEnum):
    """GB 45438-2025's `Label` element: how sure the labeler is that content is generated."""

    GENERATED = "1"      # 属于人工智能生成合成内容
    POSSIBLY = "2"       # 可能为人工智能生成合成内容
    SUSPECTED = "3"      # 疑似为人工智能生成合成内容


class MetadataError(ValueError):
    """An AIGC payload that is not the standard's object."""


@dataclass(frozen=True)
class AigcLabel:
    """The seven fields of GB 45438-2025's implicit label, named as the standard names them."""

    Label: str = LabelValue.GENERATED.value
    ContentProducer: str = ""
    ProduceID: str = ""
    ReservedCode1: str = ""
    ContentPropagator: str = ""
    PropagateID: str = ""
    ReservedCode2: str = ""

    def to_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        """Compact JSON of the fields; ASCII-only so that it fits an HTTP header and EXIF."""
        return json.dumps(self.to_dict(), ensure_ascii=True, separators=(",", ":"))

    def header_value(self) -> str:
        return self.to_json()

    @classmethod
    def from_dict(cls, data: Any) -> AigcLabel:
        """Read the fields, either bare or wrapped as {"AIGC": {...}}; unknown keys are ignored
        (a later edition of the standard may add some), wrong types are refused."""
        if isinstance(data, dict) and set(data) == {AIGC_KEY}:
            data = data[AIGC_KEY]
        if not isinstance(data, dict):
            raise MetadataError(f"the AIGC label is not an object ({CITATION})")
        values: dict[str, str] = {}
        for f in fields(cls):
            value = data.get(f.name, "")
            if not isinstance(value, str | int):
                raise MetadataError(f"AIGC field {f.name} is not a string ({CITATION})")
            values[f.name] = str(value)
        label = cls(**values)
        if label.Label not in {v.value for v in LabelValue}:
            raise MetadataError(f"AIGC field Label is {label.Label!r}, not 1, 2 or 3 "
                                f"({CITATION})")
        return label

    @classmethod
    def from_json(cls, text: str | bytes) -> AigcLabel:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise MetadataError(f"the AIGC label is not JSON ({CITATION}): {error}") from None
        return cls.from_dict(data)

    def missing(self) -> list[str]:
        """The fields a producer must fill (GB 45438-2025: label, producer, produce id)."""
        return [name for name in ("Label", "ContentProducer", "ProduceID")
                if not getattr(self, name)]


def new_produce_id(prefix: str = "") -> str:
    """A content production id (内容制作编号) unique per output: UTC time for tracing it in
    the records, then 96 random bits so that concurrent replicas never collide."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return f"{prefix}{stamp}{secrets.token_hex(12)}"


def new_label(implicit: ImplicitLabel, *, propagator: str = "", propagate_id: str = "",
              reserved1: str = "", reserved2: str = "") -> AigcLabel:
    """The implicit label of one output of a service with the posture's `implicit` settings."""
    return AigcLabel(
        Label=LabelValue.GENERATED.value,
        ContentProducer=implicit.content_producer,
        ProduceID=new_produce_id(implicit.produce_id_prefix),
        ReservedCode1=reserved1,
        ContentPropagator=propagator,
        PropagateID=propagate_id,
        ReservedCode2=reserved2,
    )
