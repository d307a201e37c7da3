"""Bad input to the image labeler (Art.12, GB 45438-2025; issue 7 "Bad input"): truncated
files, 1x1 and 20,000x20,000 images, animated formats, unknown content types and corrupted
bytes are passed through unchanged with a flag naming why, never a crash, and a decompression
bomb is refused from its header: memory stays bounded."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hegui.api.generativeservice import ImplicitLabel
from hegui.labeling import new_label
from hegui.labeling.image import (
    header_flags,
    label_image,
    label_images_response,
    read_image_labels,
)

IMPLICIT = ImplicitLabel(content_producer="示例科技有限公司", produce_id_prefix="img-")


def _image(fmt: str, size: tuple[int, int] = (96, 80), **options: object) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(out, fmt, **options)
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: a few KiB that decode to width x
    height bytes (and four times that as RGBA)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG whose frame header claims width x height over a few bytes of scan data."""
    sof = (b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3)
           + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01")
    sos = b"\xff\xda" + struct.pack(">H", 12) + b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\x00" * 64 + b"\xff\xd9"


def _webp_claiming(width: int, height: int) -> bytes:
    """A WebP extended header (VP8X) claiming the format's largest size, and no image data."""
    vp8x = (b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
            + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little"))
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def _animated(fmt: str) -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((200, 30, 30), (30, 200, 30))]
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def _ztxt_bomb() -> bytes:
    """A PNG with a compressed text chunk that inflates to 64 MiB (compressed a MiB at a
    time: the test itself stays small)."""
    png = _image("PNG", (64, 64))
    packer, block = zlib.compressobj(9), b"A" * (1 << 20)
    text = b"".join(packer.compress(block) for _ in range(64)) + packer.flush()
    bomb = _chunk(b"zTXt", b"Comment\x00\x00" + text)
    return png[:33] + bomb + png[33:]        # right after IHDR


CASES = {
    "truncated PNG header": (_image("PNG")[:40], "unreadable"),
    "truncated PNG data": (_image("PNG")[:-200], "unreadable"),
    "truncated JPEG data": (_image("JPEG")[:-300], "unreadable"),
    "truncated WebP": (_image("WEBP")[:60], "unreadable"),
    "20000x20000 PNG bomb": (_png_bomb(20_000, 20_000), "too-large"),
    "12000x12000 PNG under Pillow's own limit": (_png_bomb(12_000, 12_000), "too-large"),
    "20000x20000 JPEG header": (_jpeg_claiming(20_000, 20_000), "too-large"),
    "16383x16383 WebP header": (_webp_claiming(16_383, 16_383), "unreadable"),
    "zTXt text bomb": (_ztxt_bomb(), "unreadable"),
    "animated PNG (APNG)": (_animated("PNG"), "animated: 2 frames"),
    "animated WebP": (_animated("WEBP"), "animated: 2 frames"),
    "animated GIF": (_animated("GIF"), "unsupported-format: GIF"),
    "BMP": (_image("BMP"), "unsupported-format: BMP"),
    "TIFF": (_image("TIFF"), "unsupported-format: TIFF"),
    "HTML": (b"<!doctype html><p>model error</p>", "unknown-format"),
    "JSON": (json.dumps({"error": "overloaded"}).encode(), "unknown-format"),
    "empty": (b"", "unknown-format"),
    "PNG magic only": (b"\x89PNG\r\n\x1a\n", "unreadable"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_image_passes_through_unchanged_with_a_flag(name: str) -> None:
    data, flag = CASES[name]
    result = label_image(data, new_label(IMPLICIT), None, watermark_key=b"k" * 32)
    assert result.data == data
    assert not (result.labeled or result.explicit or result.implicit or result.watermarked)
    assert len(result.flags) == 1 and result.flags[0].startswith(flag), result.flags
    # Reading labels back (hegui label verify) reports rather than raises.
    read_image_labels(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_one_pixel_images_get_metadata_and_a_flag_not_a_visible_label(fmt: str) -> None:
    aigc = new_label(IMPLICIT)
    result = label_image(_image(fmt, (1, 1)), aigc, None, watermark_key=b"k" * 32)
    assert result.implicit and not result.explicit
    assert result.flags[0] == "too-small-for-explicit-label: 1x1"
    assert read_image_labels(result.data).aigc == aigc


def test_a_bomb_is_refused_from_its_header_with_memory_bounded(tmp_path: Path) -> None:
    """In a fresh process, so that its peak memory is this test's alone: labeling and
    verifying (with a watermark key, which would decode the pixels) a 20000x20000 and a
    12000x12000 bomb grows the process by a few MiB, not the 0.4-1.6 GB a decode takes."""
    paths = [tmp_path / "20000.png", tmp_path / "12000.png"]
    paths[0].write_bytes(_png_bomb(20_000, 20_000))
    paths[1].write_bytes(_png_bomb(12_000, 12_000))
    script = textwrap.dedent("""
        import json, resource, sys
        import torch  # noqa: F401 - imported before measuring: verify uses it
        from hegui.api.generativeservice import ImplicitLabel
        from hegui.labeling import new_label
        from hegui.labeling.image import label_image
        from hegui.labeling.verify import UnreadableInput, verify_bytes
        bombs = [open(path, "rb").read() for path in sys.argv[1:]]
        aigc = new_label(ImplicitLabel(content_producer="x"))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        flags, notes = [], []
        for data in bombs:
            flags += label_image(data, aigc, None, watermark_key=b"k").flags
            try:
                notes.append(verify_bytes(data, key=b"k").watermark.detail)
            except UnreadableInput as error:     # what `hegui label verify` reports
                notes.append(str(error))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"grown_kib": grown, "flags": flags, "notes": notes}))
    """)
    run = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout)
    assert [flag.split(":")[0] for flag in outcome["flags"]] == ["too-large", "too-large"]
    assert "decompression bomb" in outcome["notes"][0]
    assert "exceeds 40000000 pixels" in outcome["notes"][1]     # not decoded for the watermark
    assert outcome["grown_kib"] < 64 * 1024


_SEEDS = [_image("PNG"), _image("JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"),
          _image("WEBP"), _animated("PNG"), _png_bomb(64, 64)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(_SEEDS), edits=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=12),
    cut=st.floats(0.05, 1))
def test_corrupted_images_never_crash_the_labeler(
        seed: bytes, edits: list[tuple[float, int]], cut: float) -> None:
    data = bytearray(seed[:max(1, int(len(seed) * cut))])
    for where, value in edits:
        data[int(where * len(data))] = value
    result = label_image(bytes(data), new_label(IMPLICIT), None)
    assert result.labeled or (result.data == bytes(data) and result.flags)
    read_image_labels(bytes(data))


def test_hostile_images_responses_are_flagged_item_by_item() -> None:
    good = base64.b64encode(_image("PNG")).decode()
    items: list[Any] = [
        {"b64_json": good},
        {"b64_json": "not base64 at all!"},
        {"b64_json": base64.b64encode(b"<html>oops</html>").decode()},
        {"b64_json": base64.b64encode(_animated("GIF")).decode()},
        "a string where an object belongs",
        {"b64_json": 12345},
        {"url": "https://example.invalid/1.png"},
    ]
    body = {"created": 1, "data": items}
    labeled, flags = label_images_response(body, lambda: new_label(IMPLICIT), None)
    assert labeled["data"][0]["b64_json"] != good and "AIGC" in labeled["data"][0]
    assert labeled["data"][1:] == items[1:]          # the rest unchanged
    assert flags == ["data[1]: invalid base64", "data[2]: unknown-format",
                     "data[3]: unsupported-format: GIF (only PNG, JPEG and WebP are labeled)",
                     "data[4]: not-an-object",
                     "data[5]: no-image: neither b64_json text nor url",
                     "data[6]: url-not-labeled"]
    assert label_images_response({"data": "nope"}, lambda: new_label(IMPLICIT), None)[1] == [
        "no-data"]


def test_header_flags_are_short_ascii_kinds() -> None:
    flags = ["data[0]: unreadable: OSError: image file is truncated (5 bytes, not processed)",
             "data[0]: unreadable: OSError: another message",
             "label-text-substituted: no font with the glyphs of '人工智能生成'; drew 'AI'",
             "data[3]: animated: 2 frames"]
    assert header_flags(flags) == ("data[0]:unreadable,label-text-substituted,"
                                   "data[3]:animated")
    many = [f"data[{n}]: unknown-format" for n in range(500)]
    shortened = header_flags(many)
    assert len(shortened) <= 1024 + 4 and shortened.endswith(",...")
    assert shortened.isascii()
