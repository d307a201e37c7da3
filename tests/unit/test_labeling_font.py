"""The explicit image label is drawn in the wording the posture declares, Chinese included
(Art.12, GB 45438-2025): a CJK font is found (fonts-wqy-microhei from dev/apt-packages.txt),
its glyphs are real ones, not the missing-glyph box, and the lookup order is kept."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFont

from hegui.api.generativeservice import ExplicitLabel, ImplicitLabel, LabelPosition
from hegui.labeling import new_label
from hegui.labeling.image import (
    FALLBACK_TEXT,
    FONT_ENV,
    draw_label,
    find_label_font,
    label_image,
    read_image_labels,
)
from hegui.labeling.text import DEFAULT_LABEL_TEXT

CJK = "人工智能生成"
LATIN_ONLY_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _mask(font: ImageFont.FreeTypeFont, text: str) -> bytes:
    mask = font.getmask(text)
    return bytes(mask.size) + bytes(mask[i] for i in range(mask.size[0] * mask.size[1]))


@pytest.fixture
def cjk_font(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv(FONT_ENV, raising=False)
    path = find_label_font(CJK)
    assert path is not None, ("no CJK font found: install fonts-wqy-microhei "
                              "(dev/apt-packages.txt; `make test` does)")
    return path


def test_the_font_found_draws_chinese_glyphs_not_tofu(cjk_font: str) -> None:
    font = ImageFont.truetype(cjk_font, 40)
    tofu = _mask(font, "\U0010fffd")
    assert all(_mask(font, ch) != tofu for ch in CJK)
    # Distinct characters get distinct glyphs: a box font would draw them all alike.
    assert len({_mask(font, ch) for ch in CJK}) == len(set(CJK))


def test_default_label_is_drawn_in_chinese_not_the_fallback(cjk_font: str) -> None:
    assert DEFAULT_LABEL_TEXT == CJK
    original = Image.new("RGB", (480, 320), (90, 140, 60))
    out = io.BytesIO()
    original.save(out, "PNG")
    aigc = new_label(ImplicitLabel(content_producer="示例科技有限公司"))
    result = label_image(out.getvalue(), aigc, None)
    assert result.explicit and result.flags == []
    labels = read_image_labels(result.data)
    assert labels.xmp is not None and labels.xmp.explicit_text == CJK

    with Image.open(io.BytesIO(result.data)) as labeled:
        drawn = labeled.convert("RGB")
    chinese, wording, boxes = draw_label(original, CJK, LabelPosition.END)
    fallback, fallback_wording, _ = draw_label(original, FALLBACK_TEXT, LabelPosition.END)
    assert wording == CJK and fallback_wording == FALLBACK_TEXT
    # The served image carries the Chinese rendering, which differs from the fallback's.
    assert ImageChops.difference(drawn, chinese).getbbox() is None
    assert ImageChops.difference(drawn, fallback).getbbox() is not None
    (_, top, _, bottom), = boxes
    assert bottom - top >= 0.05 * 320          # GB 45438-2025: at least 5% of the shorter side


def test_configured_font_comes_first_when_it_has_the_glyphs(
        cjk_font: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "operator-font.ttc"
    copy.write_bytes(Path(cjk_font).read_bytes())
    monkeypatch.setenv(FONT_ENV, str(copy))
    assert find_label_font(CJK) == str(copy)


def test_configured_font_without_the_glyphs_is_passed_over(
        cjk_font: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path(LATIN_ONLY_FONT).is_file():
        pytest.skip("DejaVu Sans is not installed")
    monkeypatch.setenv(FONT_ENV, LATIN_ONLY_FONT)
    assert find_label_font(CJK) == cjk_font          # the next font that can draw it
    assert find_label_font("AI generated") == LATIN_ONLY_FONT


def test_a_missing_configured_font_is_skipped(cjk_font: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FONT_ENV, "/nonexistent/font.ttf")
    assert find_label_font(CJK) == cjk_font
    result = label_image(_png(), None, ExplicitLabel(text=CJK))
    assert result.explicit and result.flags == []


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 120), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()
