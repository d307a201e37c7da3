"""Labels on generated images (Art.12, GB 45438-2025 §5 images): a visible text label at a
corner, at least 5% of the shorter side high, and the implicit AIGC label in the file's own
metadata (PNG iTXt and XMP, JPEG XMP and EXIF, WebP XMP and EXIF). Readers for each.

Input that cannot be labeled safely (truncated, animated, too large, unknown format) comes back
unchanged with a flag, so the caller can pass it through or refuse it per the posture.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps, PngImagePlugin

from hegui.api.generativeservice import ExplicitLabel, LabelPosition
from hegui.labeling.metadata import (
    AIGC_KEY,
    IPTC_TRAINED_ALGORITHMIC_MEDIA,
    TC260_NS,
    AigcLabel,
    MetadataError,
)
from hegui.labeling.text import DEFAULT_LABEL_TEXT

#: GB 45438-2025: the label text is at least 5% of the image's shorter side high.
MIN_TEXT_HEIGHT_RATIO = 0.05
#: Images over this many pixels are not decoded (Pillow's own bomb limit is 89 M).
MAX_PIXELS = 40_000_000
#: A label needs a few pixels to be legible; smaller images get metadata only, flagged.
MIN_SIDE_FOR_EXPLICIT = 32
#: Where hegui records that it drew the visible label (pixels cannot be read back without OCR).
HEGUI_NS = "https://hegui.io/ns/labeling/1.0/"
XMP_PNG_KEY = "XML:com.adobe.xmp"
EXIF_USER_COMMENT = 0x9286
EXIF_IFD = 0x8769
FONT_ENV = "HEGUI_LABEL_FONT"
_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
)
#: Written when no available font has the configured wording's glyphs (flagged).
FALLBACK_TEXT = "AI-generated"
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def sniff(data: bytes) -> str | None:
    """The format by magic bytes: PNG, JPEG, WEBP, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


@dataclass
class ImageResult:
    """A labeling outcome: the bytes to send, and why anything was left out."""

    data: bytes
    format: str | None
    labeled: bool
    explicit: bool = False
    implicit: bool = False
    watermarked: bool = False
    flags: list[str] = field(default_factory=list)


# --- XMP ------------------------------------------------------------------------------------

def xmp_packet(aigc: AigcLabel, explicit_text: str | None = None,
               explicit_position: str | None = None) -> str:
    """An XMP packet with TC260's AIGC property, IPTC's digital source type, and hegui's record
    of the visible label it drew."""
    hegui_attrs = ""
    if explicit_text:
        hegui_attrs = (f'\n    xmlns:hegui="{HEGUI_NS}"'
                       f'\n    hegui:ExplicitLabel="{html.escape(explicit_text)}"'
                       f'\n    hegui:ExplicitLabelPosition="{explicit_position or ""}"')
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:TC260="{TC260_NS}"\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f'{hegui_attrs}\n'
        f'    TC260:AIGC="{html.escape(aigc.to_json())}"\n'
        f'    Iptc4xmpExt:DigitalSourceType="{IPTC_TRAINED_ALGORITHMIC_MEDIA}"/>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="w"?>'
    )


def _xmp_property(xmp: str, prefix_ns: str, name: str) -> str | None:
    """A simple property by namespace URI, in attribute or element form. A regular expression
    rather than an XML parser: the packet is untrusted and only two shapes are written."""
    prefix = re.search(r'xmlns:([\w.-]+)\s*=\s*["\']' + re.escape(prefix_ns) + r'["\']', xmp)
    if prefix is None:
        return None
    qname = re.escape(f"{prefix.group(1)}:{name}")
    found = (re.search(qname + r'\s*=\s*"([^"]*)"', xmp)
             or re.search(qname + r"\s*=\s*'([^']*)'", xmp)
             or re.search(r"<" + qname + r">([^<]*)</" + qname + r">", xmp))
    return html.unescape(found.group(1)) if found else None


@dataclass
class XmpLabels:
    aigc: AigcLabel | None = None
    digital_source_type: str | None = None
    explicit_text: str | None = None
    explicit_position: str | None = None
    errors: list[str] = field(default_factory=list)


def read_xmp(xmp: str | bytes) -> XmpLabels:
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", errors="replace")
    found = XmpLabels(
        digital_source_type=_xmp_property(
            xmp, "http://iptc.org/std/Iptc4xmpExt/2008-02-29/", "DigitalSourceType"),
        explicit_text=_xmp_property(xmp, HEGUI_NS, "ExplicitLabel"),
        explicit_position=_xmp_property(xmp, HEGUI_NS, "ExplicitLabelPosition"))
    raw = _xmp_property(xmp, TC260_NS, AIGC_KEY)
    if raw is not None:
        try:
            found.aigc = AigcLabel.from_json(raw)
        except MetadataError as error:
            found.errors.append(f"XMP TC260:AIGC: {error}")
    return found


# --- explicit label -------------------------------------------------------------------------

def _font_paths() -> list[str]:
    configured = os.environ.get(FONT_ENV)
    return [p for p in ([configured] if configured else []) + list(_FONT_CANDIDATES)
            if Path(p).is_file()]


def _has_glyphs(font: ImageFont.FreeTypeFont, text: str) -> bool:
    """False when any character would be drawn as the font's missing-glyph box."""
    def bitmap(ch: str) -> bytes:
        mask = font.getmask(ch)
        return bytes(mask.size) + bytes(mask[i] for i in range(mask.size[0] * mask.size[1]))

    missing = bitmap("\U0010fffd")      # a private-use code point no font maps
    return all(ch.isspace() or bitmap(ch) != missing for ch in text)


def _font(text: str, size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, str]:
    """A font that can draw `text`, or the fallback wording with any font."""
    for path in _font_paths():
        try:
            font = ImageFont.truetype(path, size)
        except OSError:
            continue
        if _has_glyphs(font, text):
            return font, text
    for path in _font_paths():
        try:
            return ImageFont.truetype(path, size), FALLBACK_TEXT
        except OSError:
            continue
    # Pillow's built-in font covers Latin only.
    return ImageFont.load_default(size), text if text.isascii() else FALLBACK_TEXT


def _corners(position: LabelPosition) -> list[LabelPosition]:
    if position is LabelPosition.START:
        return [LabelPosition.TOP_LEFT]
    if position is LabelPosition.END:
        return [LabelPosition.BOTTOM_RIGHT]
    if position is LabelPosition.START_AND_END:
        return [LabelPosition.TOP_LEFT, LabelPosition.BOTTOM_RIGHT]
    return [position]


def draw_label(image: Image.Image, text: str, position: LabelPosition
               ) -> tuple[Image.Image, str, list[tuple[int, int, int, int]]]:
    """The image with `text` drawn at the position's corner(s), glyphs at least 5% of the
    shorter side high (GB 45438-2025), on a translucent plate so it stays legible on any
    background. Returns the image, the wording drawn and the text boxes."""
    width, height = image.size
    target = max(8, int(min(width, height) * MIN_TEXT_HEIGHT_RATIO + 0.999))
    size = target
    font, drawn = _font(text, size)
    # Font size is not glyph height: grow until the drawn glyphs reach the target height.
    for _ in range(20):
        left, top, right, bottom = font.getbbox(drawn)
        if bottom - top >= target or not isinstance(font, ImageFont.FreeTypeFont):
            break
        size += max(1, size // 10)
        font = font.font_variant(size=size)
    left, top, right, bottom = (int(v) for v in font.getbbox(drawn))
    text_w, text_h = right - left, bottom - top
    pad = max(2, text_h // 4)
    margin = max(2, int(min(width, height) * 0.02))
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    boxes: list[tuple[int, int, int, int]] = []
    for corner in _corners(position):
        x = margin if corner in (LabelPosition.TOP_LEFT, LabelPosition.BOTTOM_LEFT) else \
            width - margin - text_w - 2 * pad
        y = margin if corner in (LabelPosition.TOP_LEFT, LabelPosition.TOP_RIGHT) else \
            height - margin - text_h - 2 * pad
        x, y = max(0, x), max(0, y)
        draw.rectangle((x, y, x + text_w + 2 * pad, y + text_h + 2 * pad), fill=(0, 0, 0, 140))
        draw.text((x + pad - left, y + pad - top), drawn, font=font, fill=(255, 255, 255, 235))
        boxes.append((x + pad, y + pad, x + pad + text_w, y + pad + text_h))
    labeled = Image.alpha_composite(base, overlay)
    keep_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return labeled if keep_alpha else labeled.convert("RGB"), drawn, boxes


# --- writing --------------------------------------------------------------------------------

def _exif_bytes(exif: Image.Exif, aigc: AigcLabel) -> bytes:
    """The source's EXIF plus the AIGC JSON in UserComment (ASCII charset code, as EXIF 2.3
    §4.6.5 asks)."""
    payload = json.dumps({AIGC_KEY: aigc.to_dict()}, ensure_ascii=True, separators=(",", ":"))
    exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = b"ASCII\x00\x00\x00" + payload.encode()
    return exif.tobytes()


def encode(image: Image.Image, fmt: str, aigc: AigcLabel, xmp: str, quality: int = 95,
           exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    exif = exif if exif is not None else Image.Exif()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(XMP_PNG_KEY, xmp)
        info.add_itxt(AIGC_KEY, aigc.to_json())
        image.save(out, "PNG", pnginfo=info)
    elif fmt == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=quality, xmp=xmp.encode(),
                                  exif=_exif_bytes(exif, aigc))
    else:
        image.save(out, "WEBP", quality=quality, xmp=xmp.encode(),
                   exif=_exif_bytes(exif, aigc))
    return out.getvalue()


def watermark(image: Image.Image, key: bytes, produce_id: str) -> Image.Image:
    """The image with the invisible watermark carrying `produce_id`'s digest (needs torch and
    numpy, imported here so that the metadata labels work without them)."""
    import numpy as np
    import torch

    from hegui.labeling import watermark_image

    rgb = image.convert("RGB")
    tensor = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float()
    marked, = watermark_image.embed([tensor], key,
                                    [watermark_image.produce_id_digest(produce_id)])
    array = marked.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    result = Image.fromarray(array, "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        result.putalpha(image.convert("RGBA").getchannel("A"))
    return result


def label_image(data: bytes, aigc: AigcLabel | None, explicit: ExplicitLabel | None, *,
                default_text: str = DEFAULT_LABEL_TEXT, max_pixels: int = MAX_PIXELS,
                watermark_key: bytes | None = None) -> ImageResult:
    """An image with its explicit label drawn (unless disabled), the implicit label in its
    metadata (when `aigc` is given) and the invisible watermark carrying the ProduceID (when
    `watermark_key` and `aigc` are given). Never raises on bad input: it comes back unchanged,
    flagged. `explicit=None` means the policy's default wording at the end, as in the API."""
    fmt = sniff(data)
    if fmt is None:
        return ImageResult(data, None, False, flags=["unknown-format"])
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > max_pixels:
                return ImageResult(data, fmt, False, flags=[
                    f"too-large: {opened.width}x{opened.height} exceeds {max_pixels} pixels"])
            if getattr(opened, "is_animated", False):
                return ImageResult(data, fmt, False, flags=["animated"])
            opened.load()
            # Draw on the image as it is displayed: apply, then drop, any EXIF rotation.
            image = ImageOps.exif_transpose(opened)
            source_exif = opened.getexif()
            source_exif.pop(0x0112, None)
    except Image.DecompressionBombError as error:
        return ImageResult(data, fmt, False, flags=[f"too-large: {error}"])
    except (OSError, SyntaxError, ValueError) as error:
        return ImageResult(data, fmt, False, flags=[f"unreadable: {error}"])

    flags: list[str] = []
    wants_explicit = explicit is None or explicit.enabled
    text = (explicit.text if explicit and explicit.text else None) or default_text
    position = explicit.position if explicit else LabelPosition.END
    drawn: str | None = None
    if wants_explicit:
        if min(image.size) < MIN_SIDE_FOR_EXPLICIT:
            flags.append(f"too-small-for-explicit-label: {image.width}x{image.height}")
        else:
            image, drawn, _ = draw_label(image, text, position)
            if drawn != text:
                flags.append(f"label-text-substituted: no font with the glyphs of {text!r}; "
                             f"drew {drawn!r} (set {FONT_ENV} to a CJK font)")
    if aigc is None and drawn is None:
        return ImageResult(data, fmt, False, flags=flags)
    watermarked = False
    if watermark_key is not None and aigc is not None:
        try:
            image = watermark(image, watermark_key, aigc.ProduceID)
            watermarked = True
        except ImportError:
            flags.append("watermark-unavailable: torch and numpy are not installed")
    xmp = xmp_packet(aigc, drawn, position.value) if aigc else ""
    if aigc is None:
        out = io.BytesIO()
        image.save(out, fmt, **({"quality": 95} if fmt != "PNG" else {}))
        return ImageResult(out.getvalue(), fmt, True, explicit=True, flags=flags)
    return ImageResult(encode(image, fmt, aigc, xmp, exif=source_exif), fmt, True,
                       explicit=drawn is not None,
                       implicit=True, watermarked=watermarked, flags=flags)


# --- reading --------------------------------------------------------------------------------

@dataclass
class ImageLabels:
    """The labels found in an image file, by where they were found."""

    format: str | None
    size: tuple[int, int] | None = None
    xmp: XmpLabels | None = None
    text_chunk: AigcLabel | None = None        # PNG iTXt/tEXt "AIGC"
    exif: AigcLabel | None = None              # EXIF UserComment
    errors: list[str] = field(default_factory=list)

    @property
    def aigc(self) -> AigcLabel | None:
        """The implicit label, preferring TC260's XMP property."""
        return (self.xmp.aigc if self.xmp else None) or self.text_chunk or self.exif


def _exif_label(exif: Image.Exif) -> AigcLabel | None:
    comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    if isinstance(comment, bytes):
        comment = comment[8:] if comment[:8] in (b"ASCII\x00\x00\x00", b"UNICODE\x00") else \
            comment
        comment = comment.decode("utf-8", errors="replace")
    if not isinstance(comment, str) or AIGC_KEY not in comment:
        return None
    return AigcLabel.from_json(comment.strip("\x00 "))


def read_image_labels(data: bytes) -> ImageLabels:
    """Read the implicit labels of a PNG, JPEG or WebP file; unreadable input is an error entry,
    never an exception."""
    labels = ImageLabels(sniff(data))
    if labels.format is None:
        labels.errors.append("not a PNG, JPEG or WebP image")
        return labels
    try:
        with Image.open(io.BytesIO(data)) as image:
            labels.size = image.size
            info = dict(image.info)
            if labels.format == "PNG":
                image.load()    # text chunks after the image data are read on load
                info.update(image.info)
            xmp = info.get("xmp") or info.get(XMP_PNG_KEY)
            if isinstance(xmp, str | bytes):
                labels.xmp = read_xmp(xmp)
                labels.errors.extend(labels.xmp.errors)
            chunk = info.get(AIGC_KEY)
            if isinstance(chunk, str | bytes):
                try:
                    labels.text_chunk = AigcLabel.from_json(chunk)
                except MetadataError as error:
                    labels.errors.append(f"PNG text chunk AIGC: {error}")
            try:
                labels.exif = _exif_label(image.getexif())
            except MetadataError as error:
                labels.errors.append(f"EXIF UserComment: {error}")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        labels.errors.append(f"unreadable image: {error}")
    return labels


# --- images/generations ---------------------------------------------------------------------

def label_images_response(body: dict[str, Any], new_aigc: Any, explicit: ExplicitLabel | None,
                          **options: Any) -> tuple[dict[str, Any], list[str]]:
    """An OpenAI-compatible images/generations response with each `b64_json` image labeled;
    `new_aigc()` gives each image its own label (its own ProduceID), which is also set as the
    item's `AIGC` field. URL items cannot be labeled here and are flagged."""
    labeled = dict(body)
    flags: list[str] = []
    items = body.get("data")
    if not isinstance(items, list):
        return labeled, ["no-data"]
    out_items = []
    for number, item in enumerate(items):
        if not isinstance(item, dict):
            out_items.append(item)
            continue
        item = dict(item)
        if isinstance(item.get("b64_json"), str):
            try:
                raw = base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError):
                flags.append(f"data[{number}]: invalid base64")
                out_items.append(item)
                continue
            aigc: AigcLabel = new_aigc()
            result = label_image(raw, aigc, explicit, **options)
            flags.extend(f"data[{number}]: {flag}" for flag in result.flags)
            if result.labeled:
                item["b64_json"] = base64.b64encode(result.data).decode()
            if result.implicit:
                item[AIGC_KEY] = aigc.to_dict()
        elif "url" in item:
            flags.append(f"data[{number}]: url-not-labeled")
        out_items.append(item)
    labeled["data"] = out_items
    return labeled, flags
