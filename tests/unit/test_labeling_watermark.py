"""Watermarks (encouraged by GB 45438-2025 beside the Art.12 labels): the keyed image mark
carries the ProduceID digest through JPEG, resizing, a crop and a brightness change; the
Kirchenbauer text mark separates watermarked from plain text by z-score; a wrong key finds
nothing. Tiny random models built here; nothing is downloaded."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("numpy")

import numpy as np
import torch
from PIL import Image, ImageEnhance

from hegui.labeling.watermark_image import (
    detect,
    embed,
    produce_id_digest,
)
from hegui.labeling.watermark_text import (
    WatermarkLogitsProcessor,
    detect_text,
    detect_tokens,
)

KEY = b"0123456789abcdef0123456789abcdef"
PID = produce_id_digest("img-20261129035512a1b2c3d4e5f6a7b8c9d0e1f2a3")


def _photo(size: int, seed: int = 1) -> Image.Image:
    """A synthetic photo: smooth shading, flat shapes and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([128 + 80 * np.sin(6 * xx / size + c) * np.cos(4 * yy / size - c)
                     for c in (0, 1, 2)], -1)
    for _ in range(20):
        cy, cx, r = rng.random() * size, rng.random() * size, rng.random() * size / 5
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3) * 255
    base += rng.normal(0, 6, base.shape)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float()


def _image(tensor: torch.Tensor) -> Image.Image:
    return Image.fromarray(tensor.round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return Image.open(out)


@pytest.fixture(scope="module")
def marked() -> tuple[Image.Image, Image.Image]:
    original = _photo(384)
    return original, _image(embed([_tensor(original)], KEY, [PID])[0])


def test_image_mark_is_invisible_enough(marked: tuple[Image.Image, Image.Image]) -> None:
    original, watermarked = marked
    mse = float(((_tensor(original) - _tensor(watermarked)) ** 2).mean())
    assert 10 * np.log10(255 ** 2 / mse) > 38       # PSNR in dB


@pytest.mark.parametrize("attack", [
    "none", "jpeg75", "jpeg50", "resize50", "brightness", "crop10", "crop10centre",
    "crop10width"])
def test_image_mark_survives(marked: tuple[Image.Image, Image.Image], attack: str) -> None:
    _, image = marked
    size = image.width
    attacked = {
        "none": lambda: image,
        "jpeg75": lambda: _jpeg(image, 75),
        "jpeg50": lambda: _jpeg(image, 50),
        "resize50": lambda: image.resize((size // 2, size // 2), Image.Resampling.BILINEAR),
        "brightness": lambda: ImageEnhance.Brightness(image).enhance(1.2),
        "crop10": lambda: image.crop((0, 0, int(size * 0.9), int(size * 0.9))),
        "crop10centre": lambda: image.crop((19, 19, 19 + int(size * 0.9),
                                            19 + int(size * 0.9))),
        "crop10width": lambda: image.crop((int(size * 0.1), 0, size, size)),
    }[attack]()
    found = detect(_tensor(attacked), KEY)
    assert found.found and found.payload == PID
    assert found.bit_accuracy(PID) >= 0.95


def test_image_mark_wrong_key_and_unmarked_find_nothing(
        marked: tuple[Image.Image, Image.Image]) -> None:
    original, image = marked
    assert not detect(_tensor(image), b"another key", search_crops=False).found
    assert not detect(_tensor(original), KEY, search_crops=False).found


def test_image_mark_batch_of_sizes_each_with_its_payload() -> None:
    images = [_tensor(_photo(200, 2)), _tensor(_photo(320, 3).resize((320, 180)))]
    payloads = [produce_id_digest("a"), produce_id_digest("b")]
    marked_images = embed(images, KEY, payloads)
    assert [m.shape for m in marked_images] == [i.shape for i in images]
    assert [detect(m, KEY, search_crops=False).payload for m in marked_images] == payloads


def test_uint8_images_are_marked_without_a_float_copy_and_decode_alike() -> None:
    """The sidecar's path: uint8 in, uint8 out, the same mark as the float path (rounded)."""
    images = [torch.from_numpy(np.array(_photo(256, s))).permute(2, 0, 1) for s in (5, 6)]
    payloads = [produce_id_digest("c"), produce_id_digest("d")]
    as_uint8 = embed(images, KEY, payloads)
    as_float = embed([i.float() for i in images], KEY, payloads)
    assert all(m.dtype == torch.uint8 for m in as_uint8)
    for small, wide in zip(as_uint8, as_float, strict=True):
        assert int((small.int() - wide.round().int()).abs().max()) <= 1
    assert [detect(m, KEY, search_crops=False).payload for m in as_uint8] == payloads
    with pytest.raises(ValueError, match="2 images but 1 payloads"):
        embed(images, KEY, payloads[:1])


# --- text ---------------------------------------------------------------------------------

VOCAB = 500


class TinyLM(torch.nn.Module):
    """A randomly initialised bigram model: enough entropy per step to carry a watermark."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 32)
        self.head = torch.nn.Linear(32, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.embed(input_ids[:, -1])) * 4
        return logits


def _generate(model: TinyLM, steps: int, processor: WatermarkLogitsProcessor | None,
              seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[seed % VOCAB]])
    with torch.no_grad():
        for _ in range(steps):
            scores = model(ids)
            if processor is not None:
                scores = processor(ids, scores)
            token = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)
            ids = torch.cat([ids, token], dim=1)
    return [int(t) for t in ids[0]]


def test_text_watermark_z_score_margin_on_200_tokens() -> None:
    torch.manual_seed(0)
    model = TinyLM()
    processor = WatermarkLogitsProcessor(VOCAB, KEY, gamma=0.25, delta=2.0)
    marked_z = [detect_tokens(_generate(model, 200, processor, s), VOCAB, KEY).z
                for s in range(3)]
    plain_z = [detect_tokens(_generate(model, 200, None, s), VOCAB, KEY).z for s in range(3)]
    assert min(marked_z) > 4 and max(plain_z) < 2.5
    assert min(marked_z) - max(plain_z) > 3
    detection = detect_tokens(_generate(model, 200, processor, 7), VOCAB, KEY)
    assert detection.watermarked and detection.p_value < 1e-4 and detection.scored == 200


def test_text_watermark_wrong_key_detects_nothing() -> None:
    torch.manual_seed(0)
    model = TinyLM()
    tokens = _generate(model, 200, WatermarkLogitsProcessor(VOCAB, KEY), 5)
    assert not detect_tokens(tokens, VOCAB, b"wrong key").watermarked
    assert abs(detect_tokens(tokens, VOCAB, b"wrong key").z) < 3


class WordTokenizer:
    """A stand-in for a Hugging Face tokenizer: one id per word of a fixed vocabulary."""

    def __init__(self) -> None:
        self.words = [f"w{i}" for i in range(VOCAB)]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [int(word[1:]) for word in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)

    def __len__(self) -> int:
        return VOCAB


def test_text_detection_needs_only_the_tokenizer_and_key() -> None:
    torch.manual_seed(0)
    tokenizer = WordTokenizer()
    text = tokenizer.decode(_generate(TinyLM(), 200, WatermarkLogitsProcessor(VOCAB, KEY), 3))
    assert detect_text(text, tokenizer, KEY).watermarked
    assert not detect_text(text, tokenizer, b"wrong key").watermarked


def test_logits_processor_pads_to_a_wider_model_vocabulary() -> None:
    processor = WatermarkLogitsProcessor(VOCAB, KEY)
    scores = processor(torch.tensor([[1, 2]]), torch.zeros(1, VOCAB + 12))
    assert scores.shape == (1, VOCAB + 12)
    assert int((scores[0] > 0).sum()) == int(VOCAB * 0.25)
    assert float(scores[0, VOCAB:].abs().sum()) == 0.0


# --- in the sidecar's image path and in `hegui label verify --key-file` ---------------------

def test_labeled_image_watermark_matches_its_metadata_produce_id(tmp_path: Path) -> None:
    import argparse

    from hegui.api.generativeservice import ImplicitLabel
    from hegui.labeling import new_label
    from hegui.labeling.image import label_image
    from hegui.labeling.verify import Status, add_parser, verify_bytes

    out = io.BytesIO()
    _photo(256, 4).save(out, "JPEG", quality=90)
    aigc = new_label(ImplicitLabel(content_producer="示例科技有限公司"))
    result = label_image(out.getvalue(), aigc, None, watermark_key=KEY)
    assert result.watermarked and result.implicit and result.explicit

    report = verify_bytes(result.data, key=KEY)
    assert report.watermark.status is Status.PRESENT and report.complete
    assert "matches the metadata ProduceID" in report.watermark.detail
    assert report.watermark.payload == {"payload": f"{produce_id_digest(aigc.ProduceID):016x}"}

    # A platform strips the metadata and re-encodes: the watermark still names the content.
    stripped = io.BytesIO()
    Image.open(io.BytesIO(result.data)).save(stripped, "JPEG", quality=60)
    report = verify_bytes(stripped.getvalue(), key=KEY)
    assert report.implicit.status is Status.MISSING
    assert report.watermark.status is Status.PRESENT

    path, key_file = tmp_path / "img.jpg", tmp_path / "key"
    path.write_bytes(result.data)
    key_file.write_bytes(b"not the key")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["label", "verify", "--key-file", str(key_file), "-o", "json",
                              str(path)])
    assert args.run(args) == 1       # a wrong key finds no watermark
    key_file.write_bytes(KEY)
    assert args.run(args) == 0
