"""Image labels (Art.12, GB 45438-2025): a visible label at the posture's corner, at least 5% of
the shorter side high; the AIGC label in PNG iTXt/XMP, JPEG XMP/EXIF, WebP XMP, read back by
Pillow; bad input passed through unchanged with a flag."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image, ImageChops

from hegui.api.generativeservice import ExplicitLabel, ImplicitLabel, LabelPosition
from hegui.labeling import AigcLabel, new_label
from hegui.labeling.image import (
    draw_label,
    label_image,
    label_images_response,
    read_image_labels,
)
from hegui.labeling.metadata import TC260_NS

IMPLICIT = ImplicitLabel(content_producer="示例科技有限公司", produce_id_prefix="img-")


def _image(fmt: str, size: tuple[int, int] = (320, 200), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (40, 110, 170)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_metadata_round_trips_through_pillow(fmt: str) -> None:
    aigc = new_label(IMPLICIT)
    result = label_image(_image(fmt), aigc, None)
    assert result.labeled and result.implicit and result.explicit and result.format == fmt
    with Image.open(io.BytesIO(result.data)) as image:
        image.load()
        xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
        assert image.format == fmt and image.size == (320, 200)
    xmp_text = xmp.decode() if isinstance(xmp, bytes) else str(xmp)
    assert TC260_NS in xmp_text and "TC260:AIGC=" in xmp_text
    assert "trainedAlgorithmicMedia" in xmp_text
    labels = read_image_labels(result.data)
    assert labels.aigc == aigc and labels.errors == []
    assert labels.xmp is not None and labels.xmp.aigc == aigc


def test_png_itxt_chunk_carries_the_fields() -> None:
    aigc = new_label(IMPLICIT)
    data = label_image(_image("PNG"), aigc, None).data
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        chunk = image.info["AIGC"]
    assert AigcLabel.from_json(chunk).to_dict() == aigc.to_dict()
    assert AigcLabel.from_json(chunk).ContentProducer == "示例科技有限公司"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_carries_the_fields(fmt: str) -> None:
    aigc = new_label(IMPLICIT)
    labels = read_image_labels(label_image(_image(fmt), aigc, None).data)
    assert labels.exif == aigc


def test_each_image_gets_its_own_produce_id() -> None:
    body = {"created": 1, "data": [{"b64_json": base64.b64encode(_image("PNG")).decode()},
                                   {"b64_json": base64.b64encode(_image("JPEG")).decode()},
                                   {"url": "https://example.invalid/x.png"}]}
    labeled, flags = label_images_response(body, lambda: new_label(IMPLICIT), None)
    ids = [read_image_labels(base64.b64decode(item["b64_json"])).aigc
           for item in labeled["data"][:2]]
    assert all(ids) and ids[0] != ids[1]
    assert labeled["data"][0]["AIGC"]["ProduceID"] == ids[0].ProduceID  # type: ignore[union-attr]
    assert "data[2]: url-not-labeled" in flags


@pytest.mark.parametrize(("position", "corner"), [
    (LabelPosition.BOTTOM_RIGHT, (1, 1)), (LabelPosition.TOP_LEFT, (0, 0)),
    (LabelPosition.TOP_RIGHT, (1, 0)), (LabelPosition.BOTTOM_LEFT, (0, 1)),
])
def test_visible_label_in_the_corner_and_at_least_5_percent_high(
        position: LabelPosition, corner: tuple[int, int]) -> None:
    original = Image.new("RGB", (400, 300), (40, 110, 170))
    labeled, _, boxes = draw_label(original, "AI生成", position)
    (_, top, _, bottom), = boxes
    assert bottom - top >= 0.05 * 300
    changed = ImageChops.difference(original, labeled).getbbox()
    assert changed is not None
    x0, y0, x1, y1 = changed
    assert (x0 > 200) == bool(corner[0]) and (y0 > 150) == bool(corner[1])
    assert x1 - x0 < 400 and y1 - y0 < 150        # a corner, not the whole image


def test_start_and_end_labels_two_corners_and_disabled_draws_nothing() -> None:
    _, _, boxes = draw_label(Image.new("RGB", (300, 300)), "AI", LabelPosition.START_AND_END)
    assert len(boxes) == 2
    source = _image("PNG")
    result = label_image(source, new_label(IMPLICIT), ExplicitLabel(enabled=False))
    assert result.implicit and not result.explicit
    with Image.open(io.BytesIO(result.data)) as image:
        assert ImageChops.difference(image.convert("RGB"),
                                     Image.open(io.BytesIO(source)).convert("RGB")).getbbox() \
            is None


def test_alpha_channel_is_kept() -> None:
    result = label_image(_image("PNG", mode="RGBA"), new_label(IMPLICIT), None)
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.mode == "RGBA"


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size over a few bytes of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _animated_png() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:])
    return out.getvalue()


@pytest.mark.parametrize(("data", "flag"), [
    (_image("PNG")[:200], "unreadable"),
    (_image("JPEG")[:300], "unreadable"),
    (_png_claiming(20_000, 20_000), "too-large"),      # Pillow's bomb guard, before decoding
    (_png_claiming(8_000, 8_000), "too-large"),
    (_animated_png(), "animated"),
    (b"GIF89a....", "unsupported-format: GIF"),
    (b"", "unknown-format"),
])
def test_bad_input_passes_through_unchanged_with_a_flag(data: bytes, flag: str) -> None:
    result = label_image(data, new_label(IMPLICIT), None)
    assert result.data == data and not result.labeled
    assert result.flags and result.flags[0].startswith(flag)


def test_one_pixel_image_gets_metadata_but_no_visible_label() -> None:
    aigc = new_label(IMPLICIT)
    result = label_image(_image("PNG", size=(1, 1)), aigc, None)
    assert result.implicit and not result.explicit
    assert result.flags[0].startswith("too-small-for-explicit-label")
    assert read_image_labels(result.data).aigc == aigc


def test_wording_without_a_font_for_its_glyphs_is_substituted_and_flagged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine without any CJK font (simulated: the lookup's CJK sources report none).
    monkeypatch.setattr("hegui.labeling.image._FONT_CANDIDATES", ())
    monkeypatch.setattr("hegui.labeling.image._fontconfig_cjk", lambda: ())
    monkeypatch.delenv("HEGUI_LABEL_FONT", raising=False)
    substituted = label_image(_image("PNG"), None, ExplicitLabel(text="人工智能生成"))
    assert substituted.explicit
    assert substituted.flags[0].startswith("label-text-substituted")
    ascii_label = label_image(_image("PNG"), None, ExplicitLabel(text="AI generated"))
    assert ascii_label.explicit and ascii_label.flags == []


def test_source_exif_is_kept_beside_the_aigc_label() -> None:
    exif = Image.Exif()
    exif[0x0110] = "hegui-camera"        # Model
    out = io.BytesIO()
    Image.new("RGB", (64, 64)).save(out, "JPEG", exif=exif.tobytes())
    aigc = new_label(IMPLICIT)
    result = label_image(out.getvalue(), aigc, None)
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.getexif()[0x0110] == "hegui-camera"
    assert read_image_labels(result.data).exif == aigc
