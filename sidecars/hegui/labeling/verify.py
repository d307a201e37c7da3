"""`hegui label verify FILE|-`: which labels a piece of generated content carries (Art.12,
GB 45438-2025), with the implicit label's payload decoded.

Exit codes, for pipelines: 0 every label the content's kind needs is present, 1 some are
missing, 2 the input cannot be read. Kinds: PNG/JPEG/WebP images, OpenAI-compatible JSON
responses (chat/completions, completions, images/generations), their SSE streams, plain text.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hegui.labeling.image import read_image_labels, sniff
from hegui.labeling.metadata import AIGC_KEY, CITATION, AigcLabel, MetadataError
from hegui.labeling.text import KNOWN_LABEL_TEXTS, explicit_label_positions, read_stream

#: Inputs larger than this are refused rather than read into memory.
MAX_INPUT_BYTES = 256 << 20


class Status(StrEnum):
    PRESENT = "present"
    MISSING = "missing"
    NOT_CHECKED = "not-checked"         # cannot be checked for this kind, or not asked for
    INVALID = "invalid"                 # present but malformed


@dataclass
class Finding:
    status: Status
    detail: str
    payload: dict[str, str] | None = None


@dataclass
class Report:
    kind: str
    explicit: Finding
    implicit: Finding
    watermark: Finding
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(f.status in (Status.PRESENT, Status.NOT_CHECKED)
                   for f in (self.explicit, self.implicit, self.watermark))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"complete": self.complete}


class UnreadableInput(Exception):
    """Input verify cannot interpret at all (exit code 2)."""


def _implicit(label: AigcLabel | None, where: str, errors: list[str]) -> Finding:
    if label is None:
        detail = (f"no AIGC implicit label in {where} ({CITATION} require one in the "
                  "metadata)")
        if errors:
            detail += "; " + "; ".join(errors)
            return Finding(Status.INVALID, detail)
        return Finding(Status.MISSING, detail)
    missing = label.missing()
    if missing:
        return Finding(Status.INVALID, f"AIGC label in {where} lacks {', '.join(missing)} "
                                       f"({CITATION})", label.to_dict())
    return Finding(Status.PRESENT, f"AIGC label in {where}: producer {label.ContentProducer}, "
                                   f"ProduceID {label.ProduceID}", label.to_dict())


def _explicit_text(texts: list[str], label_texts: tuple[str, ...]) -> Finding:
    if not texts:
        return Finding(Status.NOT_CHECKED, "no generated text to check")
    unlabeled = []
    found: set[str] = set()
    for number, text in enumerate(texts):
        start, end = explicit_label_positions(text, label_texts)
        if start is None and end is None:
            unlabeled.append(number)
        found.update(f"{t!r} at the {where}" for t, where in ((start, "start"), (end, "end"))
                     if t)
    if unlabeled:
        return Finding(Status.MISSING, f"no explicit label at the start or end of output(s) "
                                       f"{unlabeled} ({CITATION}: text carries a prompt such "
                                       f"as 人工智能生成 at the start, end or middle)")
    return Finding(Status.PRESENT, "explicit label " + ", ".join(sorted(found)))


def _image_watermark(data: bytes, key: bytes | None, aigc: AigcLabel | None) -> Finding:
    if key is None:
        return Finding(Status.NOT_CHECKED, "no watermark key given (--key-file); the watermark "
                                           "is encouraged, not required (GB 45438-2025)")
    try:
        import io

        import numpy as np
        import torch
        from PIL import Image

        from hegui.labeling.watermark_image import detect, produce_id_digest
    except ImportError:
        return Finding(Status.NOT_CHECKED, "watermark detection needs torch and numpy")
    from hegui.labeling.image import MAX_PIXELS

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                return Finding(Status.NOT_CHECKED, f"not decoded for the watermark: "
                                                   f"{image.width}x{image.height} exceeds "
                                                   f"{MAX_PIXELS} pixels")
            tensor = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    except Exception as error:     # truncated or hostile pixel data: reported, not raised
        return Finding(Status.NOT_CHECKED, f"pixels unreadable for the watermark: "
                                           f"{type(error).__name__}: {error}")
    found = detect(tensor, key)
    if not found.found or found.payload is None:
        return Finding(Status.MISSING, "no watermark under this key (a wrong key or an "
                                       f"unmarked image; {CITATION})")
    payload = f"{found.payload:016x}"
    detail = f"watermark payload {payload} (ProduceID digest), key matches"
    if aigc is not None:
        matches = produce_id_digest(aigc.ProduceID) == found.payload
        detail += (f"; {'matches' if matches else 'does NOT match'} the metadata ProduceID "
                   f"{aigc.ProduceID}")
        if not matches:
            return Finding(Status.INVALID, detail, {"payload": payload})
    if found.crop is not None:
        detail += f"; found in a cropped copy ({found.crop})"
    return Finding(Status.PRESENT, detail, {"payload": payload})


def verify_image(data: bytes, key: bytes | None = None) -> Report:
    labels = read_image_labels(data)
    if labels.size is None:
        raise UnreadableInput("; ".join(labels.errors) or "unreadable image")
    where = {"PNG": "PNG iTXt/XMP", "JPEG": "JPEG XMP/EXIF", "WEBP": "WebP XMP/EXIF"}
    implicit = _implicit(labels.aigc, where.get(labels.format or "", "metadata"),
                         labels.errors)
    xmp = labels.xmp
    if xmp and xmp.explicit_text:
        explicit = Finding(Status.PRESENT,
                           f"visible label {xmp.explicit_text!r} at {xmp.explicit_position} "
                           "declared in XMP by the labeler (pixels not read back)")
    else:
        explicit = Finding(Status.NOT_CHECKED,
                           "no declaration of a visible label in the metadata; a visible "
                           f"label cannot be read from pixels here ({CITATION})")
    notes = [f"{labels.format} {labels.size[0]}x{labels.size[1]}"]
    if xmp and xmp.digital_source_type:
        notes.append(f"IPTC DigitalSourceType {xmp.digital_source_type}")
    return Report(f"image/{(labels.format or '').lower()}", explicit, implicit,
                  _image_watermark(data, key, labels.aigc), notes)


def _verify_json(body: dict[str, Any], label_texts: tuple[str, ...], key: bytes | None
                 ) -> Report:
    if isinstance(body.get("data"), list):       # images/generations
        return _verify_images_response(body, key)
    texts = []
    for choice in body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(content, str):
            texts.append(content)
    return Report("application/json", _explicit_text(texts, label_texts),
                  _json_implicit(body.get(AIGC_KEY), "the response's AIGC field"),
                  Finding(Status.NOT_CHECKED, "text watermark detection needs the model's "
                                              "tokenizer: hegui.labeling.watermark_text"))


def _json_implicit(value: Any, where: str) -> Finding:
    if value is None:
        return _implicit(None, where, [])
    try:
        return _implicit(AigcLabel.from_dict(value), where, [])
    except MetadataError as error:
        return _implicit(None, where, [str(error)])


def _verify_images_response(body: dict[str, Any], key: bytes | None) -> Report:
    findings = []
    for number, item in enumerate(body["data"]):
        if not isinstance(item, dict) or not isinstance(item.get("b64_json"), str):
            continue
        try:
            image = verify_image(base64.b64decode(item["b64_json"], validate=True), key)
        except (binascii.Error, ValueError, UnreadableInput) as error:
            raise UnreadableInput(f"data[{number}]: {error}") from None
        findings.append((number, image))
    if not findings:
        raise UnreadableInput("an images response without b64_json images")
    worst = next((r for _, r in findings if not r.complete), findings[0][1])
    notes = [f"data[{n}]: {r.implicit.status}, explicit {r.explicit.status}"
             for n, r in findings]
    return Report("images-response", worst.explicit, worst.implicit, worst.watermark, notes)


def verify_bytes(data: bytes, label_texts: tuple[str, ...] = KNOWN_LABEL_TEXTS,
                 key: bytes | None = None) -> Report:
    """The labels `data` carries, the image watermark checked under `key` when given; raises
    UnreadableInput when it is no kind verify knows."""
    if sniff(data) is not None:
        return verify_image(data, key)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableInput("neither a PNG, JPEG or WebP image nor UTF-8 text") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError as error:
            raise UnreadableInput(f"invalid JSON: {error}") from None
        if isinstance(body, dict):
            return _verify_json(body, label_texts, key)
    if stripped.startswith("data:"):
        stream = read_stream(data)
        if stream.events:
            aigc = stream.aigc[0] if stream.aigc else None
            return Report("text/event-stream",
                          _explicit_text([stream.texts[i] for i in sorted(stream.texts)],
                                         label_texts),
                          _json_implicit(aigc, "the stream's AIGC field"),
                          Finding(Status.NOT_CHECKED, "text watermark detection needs the "
                                                      "model's tokenizer"))
    return Report("text/plain", _explicit_text([text], label_texts),
                  Finding(Status.NOT_CHECKED, "plain text has no metadata; its implicit label "
                                              "travels in the response header X-AIGC and "
                                              f"the provider's records ({CITATION})"),
                  Finding(Status.NOT_CHECKED, "text watermark detection needs the model's "
                                              "tokenizer"))


# --- command line ---------------------------------------------------------------------------

def add_parser(commands: Any) -> None:
    """`hegui label verify FILE|-`, on the `hegui` command's subparsers."""
    label = commands.add_parser("label", help="content labels (Art.12, GB 45438-2025)")
    label_commands = label.add_subparsers(dest="label_command", required=True)
    verify = label_commands.add_parser(
        "verify", help="report the explicit, implicit and watermark labels of a file; exit 0 "
                       "all present, 1 missing, 2 unreadable")
    verify.add_argument("file", help="an image, a JSON or SSE response, or text; - for stdin")
    verify.add_argument("--label-text", action="append", default=[],
                        help="an explicit label wording to look for (repeatable; default: "
                             "人工智能生成, AI生成 and similar)")
    verify.add_argument("--key-file", help="the watermark key (the Secret's value, raw bytes); "
                                           "checks the invisible image watermark")
    verify.add_argument("-o", "--output", choices=("human", "json"), default="human")
    verify.set_defaults(run=run)


def _read(name: str) -> bytes:
    if name == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        with Path(name).open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise UnreadableInput(f"larger than {MAX_INPUT_BYTES >> 20} MiB")
    return data


def run(args: argparse.Namespace) -> int:
    label_texts = tuple(args.label_text) + KNOWN_LABEL_TEXTS
    try:
        key = Path(args.key_file).read_bytes() if args.key_file else None
        report = verify_bytes(_read(args.file), label_texts, key)
    except (OSError, UnreadableInput) as error:
        print(f"hegui label verify: {args.file}: cannot read: {error}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"{args.file}: {report.kind}" + "".join(f", {n}" for n in report.notes))
        for name in ("explicit", "implicit", "watermark"):
            finding: Finding = getattr(report, name)
            print(f"  {name:<9} {finding.status:<11} {finding.detail}")
            for field_name, value in (finding.payload or {}).items():
                print(f"      {field_name}: {value}")
        print("all required labels present" if report.complete else
              f"labels missing ({CITATION})")
    return 0 if report.complete else 1
