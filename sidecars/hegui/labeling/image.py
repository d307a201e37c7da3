"""Labels on generated images (Art.12, GB 45438-2025 §5 images): a visible text label at a
corner, at least 5% of the shorter side high, and the implicit AIGC label in the file's own
metadata (PNG iTXt and XMP, JPEG XMP and EXIF, WebP XMP and EXIF). Readers for each.

Input that cannot be labeled safely (truncated, animated, too large, unknown format) comes back
unchanged with a flag, so the caller can pass it through or refuse it per the posture.
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
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
#: Where the label's font is looked for, in this order (the first that has every glyph of the
#: wording wins): $HEGUI_LABEL_FONT; these Debian paths of CJK fonts (fonts-noto-cjk,
#: fonts-wqy-microhei, the one dev/apt-packages.txt installs, fonts-wqy-zenhei,
#: fonts-arphic-uming, fonts-droid-fallback); any font fontconfig knows for Chinese
#: (`fc-list :lang=zh`, fonts installed elsewhere); DejaVu Sans Bold, then Pillow's built-in
#: font, both Latin only: a Chinese wording then falls back to FALLBACK_TEXT, flagged.
_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
_LATIN_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",)
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


def _other_format(data: bytes) -> str | None:
    """Image formats hegui does not label, named in the flag so an operator knows why."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return "HEIF"
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

@functools.cache
def _fontconfig_cjk() -> tuple[str, ...]:
    """The font files fontconfig lists for Chinese; none when fc-list is absent or fails."""
    try:
        listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True,
                                text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    files = (line.strip().rstrip(":") for line in listed.splitlines())
    return tuple(sorted(f for f in files if f.lower().endswith((".ttf", ".ttc", ".otf"))))


def _font_paths() -> Iterator[str]:
    """Candidate font files in lookup order (see _FONT_CANDIDATES), existing ones only;
    fontconfig is asked only when no earlier candidate was taken."""
    configured = os.environ.get(FONT_ENV)
    seen: set[str] = set()
    for group in (lambda: [configured] if configured else [], lambda: _FONT_CANDIDATES,
                  _fontconfig_cjk, lambda: _LATIN_FONTS):
        for path in group():
            if path not in seen and Path(path).is_file():
                seen.add(path)
                yield path


def _has_glyphs(font: ImageFont.FreeTypeFont, text: str) -> bool:
    """False when any character would be drawn as the font's missing-glyph box (tofu)."""
    def bitmap(ch: str) -> bytes:
        mask = font.getmask(ch)
        return bytes(mask.size) + bytes(mask[i] for i in range(mask.size[0] * mask.size[1]))

    missing = bitmap("\U0010fffd")      # a private-use code point no font maps
    return all(ch.isspace() or bitmap(ch) != missing for ch in text)


@functools.lru_cache(maxsize=256)
def _covers(path: str, text: str) -> bool:
    """Whether the font file draws every character of `text` (cached: a .ttc takes
    milliseconds to load and the wording rarely changes)."""
    try:
        return _has_glyphs(ImageFont.truetype(path, 24), text)
    except OSError:
        return False


def find_label_font(text: str) -> str | None:
    """The first font file in lookup order that can draw `text`, or None."""
    return next((path for path in _font_paths() if _covers(path, text)), None)


def _font(text: str, size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, str]:
    """A font that can draw `text`, or the fallback wording with any font."""
    for wording in (text, FALLBACK_TEXT):
        path = find_label_font(wording)
        if path is not None:
            return ImageFont.truetype(path, size), wording
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
    # uint8 in, uint8 out: embed's fast path, no float copy of the pixels.
    tensor = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    marked, = watermark_image.embed([tensor], key,
                                    [watermark_image.produce_id_digest(produce_id)])
    result = Image.fromarray(marked.permute(1, 2, 0).contiguous().numpy(), "RGB")
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
        other = _other_format(data)
        return ImageResult(data, None, False, flags=[
            f"unsupported-format: {other} (only PNG, JPEG and WebP are labeled)" if other
            else "unknown-format"])
    try:
        # Only the sniffed format's parser sees the bytes; the size comes from the header, so a
        # decompression bomb is refused before any pixel is decoded.
        with Image.open(io.BytesIO(data), formats=[fmt]) as opened:
            if opened.width * opened.height > max_pixels:
                return ImageResult(data, fmt, False, flags=[
                    f"too-large: {opened.width}x{opened.height} exceeds {max_pixels} pixels"])
            if getattr(opened, "is_animated", False):
                # A label on the first frame only would mislabel the rest (GB 45438-2025).
                return ImageResult(data, fmt, False, flags=[
                    f"animated: {getattr(opened, 'n_frames', 0)} frames"])
            opened.load()
            # Draw on the image as it is displayed: apply, then drop, any EXIF rotation.
            image = ImageOps.exif_transpose(opened)
            source_exif = opened.getexif()
            source_exif.pop(0x0112, None)
    except Image.DecompressionBombError as error:
        return ImageResult(data, fmt, False, flags=[f"too-large: {error}"])
    except Exception as error:
        # Pillow's parsers raise many kinds on hostile input (struct.error, EOFError, ...):
        # the image is passed on flagged, the sidecar never fails on it.
        return ImageResult(data, fmt, False,
                           flags=[f"unreadable: {type(error).__name__}: {error}"])

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
    try:
        encoded = encode(image, fmt, aigc, xmp, exif=source_exif)
    except Exception as error:      # a source EXIF that Pillow read but cannot write back
        flags.append(f"source-exif-dropped: {type(error).__name__}: {error}")
        encoded = encode(image, fmt, aigc, xmp)
    return ImageResult(encoded, fmt, True,
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
        with Image.open(io.BytesIO(data), formats=[labels.format]) as image:
            labels.size = image.size
            info = dict(image.info)
            # Pillow decodes a PNG to reach chunks after its pixels (text, and EXIF in
            # getexif()): not for one whose decoding could exhaust memory.
            too_large_png = labels.format == "PNG" and image.width * image.height > MAX_PIXELS
            if too_large_png:
                labels.errors.append(f"{image.width}x{image.height} exceeds {MAX_PIXELS} "
                                     "pixels: chunks after the image data not read")
            elif labels.format == "PNG":
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
                if not too_large_png:
                    labels.exif = _exif_label(image.getexif())
            except MetadataError as error:
                labels.errors.append(f"EXIF UserComment: {error}")
    except Exception as error:      # Pillow's parsers raise many kinds on hostile input
        labels.errors.append(f"unreadable image: {type(error).__name__}: {error}")
    return labels


# --- images/generations ---------------------------------------------------------------------

def header_flags(flags: list[str], limit: int = 1024) -> str:
    """Flags for an HTTP header: each flag's kind only ("data[1]:unreadable"), deduplicated in
    order, ASCII, at most `limit` characters; the full text (Pillow's messages, wording in
    Chinese) belongs in the records, not in a header."""
    kinds = []
    for flag in flags:
        where, _, rest = flag.partition(": ") if flag.startswith("data[") else ("", "", flag)
        kind = rest.split(":", 1)[0].strip().replace(",", ";")
        kinds.append(f"{where}:{kind}" if where else kind)
    text = ",".join(dict.fromkeys(kinds)).encode("ascii", "replace").decode()
    return text if len(text) <= limit else text[:limit].rsplit(",", 1)[0] + ",..."


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
            flags.append(f"data[{number}]: not-an-object")
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
        else:
            flags.append(f"data[{number}]: no-image: neither b64_json text nor url")
        out_items.append(item)
    labeled["data"] = out_items
    return labeled, flags
