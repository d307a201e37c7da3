"""`hegui label verify FILE|-`: labeled content passes (exit 0), stripped content is reported
missing (exit 1), unreadable input exits 2; the AIGC payload is decoded."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from hegui.api.generativeservice import ImplicitLabel, LabelPosition
from hegui.labeling import new_label
from hegui.labeling.image import label_image
from hegui.labeling.text import TextLabel, label_response, label_stream, label_text
from hegui.labeling.verify import Status, add_parser, verify_bytes

IMPLICIT = ImplicitLabel(content_producer="示例科技有限公司", produce_id_prefix="v-")
END = TextLabel("人工智能生成", at_start=False, at_end=True)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hegui")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 120), (10, 200, 90)).save(out, "PNG")
    return out.getvalue()


def _stripped(data: bytes) -> bytes:
    """What a platform that drops metadata leaves: the pixels only."""
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.save(out, image.format)
    return out.getvalue()


def test_labeled_png_reports_all_labels_and_decodes_the_payload(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    aigc = new_label(IMPLICIT)
    path = tmp_path / "out.png"
    path.write_bytes(label_image(_png(), aigc, None).data)
    report = verify_bytes(path.read_bytes())
    assert report.implicit.status is Status.PRESENT
    assert report.implicit.payload == aigc.to_dict()
    assert report.explicit.status is Status.PRESENT
    assert _cli(["label", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert aigc.ProduceID in out and "示例科技有限公司" in out


def test_stripped_image_is_reported_missing(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stripped.png"
    path.write_bytes(_stripped(label_image(_png(), new_label(IMPLICIT), None).data))
    report = verify_bytes(path.read_bytes())
    assert report.implicit.status is Status.MISSING and not report.complete
    assert _cli(["label", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "GB 45438-2025" in out and "Art.12" in out


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_and_webp_verify(fmt: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (100, 100)).save(out, fmt)
    labeled = label_image(out.getvalue(), new_label(IMPLICIT), None).data
    assert verify_bytes(labeled).complete
    assert not verify_bytes(_stripped(labeled)).complete


def test_chat_response_and_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = {"object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "答案"}}]}
    labeled = label_response(body, END, new_label(IMPLICIT))
    assert verify_bytes(json.dumps(labeled).encode()).complete
    unlabeled = verify_bytes(json.dumps(body).encode())
    assert unlabeled.explicit.status is Status.MISSING
    assert unlabeled.implicit.status is Status.MISSING

    chunk = {"id": "1", "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": {"content": "答案"}, "finish_reason": None}]}
    stream = b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"
    path = tmp_path / "stream.txt"
    path.write_bytes(label_stream(stream, END, new_label(IMPLICIT)))
    assert _cli(["label", "verify", "-o", "json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "text/event-stream" and report["complete"]
    assert report["implicit"]["payload"]["ContentProducer"] == "示例科技有限公司"
    assert not verify_bytes(stream).complete


def test_plain_text_explicit_label_and_custom_wording(tmp_path: Path) -> None:
    assert verify_bytes(label_text("一段文字", END).encode()).complete
    assert not verify_bytes("一段文字".encode()).complete
    path = tmp_path / "custom.txt"
    path.write_text(label_text("text", TextLabel.from_posture(None, "本内容由模型合成")))
    assert _cli(["label", "verify", str(path)]) == 1
    assert _cli(["label", "verify", "--label-text", "本内容由模型合成", str(path)]) == 0


def test_invalid_aigc_payload_is_not_accepted() -> None:
    body = {"choices": [{"message": {"content": "x\n\n人工智能生成"}}],
            "AIGC": {"Label": "1", "ContentProducer": "", "ProduceID": ""}}
    report = verify_bytes(json.dumps(body).encode())
    assert report.implicit.status is Status.INVALID and not report.complete


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\ntruncated", b"\xff\xfe\x00binary",
                                  b'{"not": "closed"'])
def test_unreadable_input_exits_2(tmp_path: Path, data: bytes,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad"
    path.write_bytes(data)
    assert _cli(["label", "verify", str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert _cli(["label", "verify", str(tmp_path / "absent")]) == 2


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    labeled = label_image(_png(), new_label(IMPLICIT), None).data

    class Stdin:
        buffer = io.BytesIO(labeled)

    monkeypatch.setattr("sys.stdin", Stdin)
    assert _cli(["label", "verify", "-"]) == 0


def test_start_position_text_recognised() -> None:
    label = TextLabel.from_posture(None)
    assert label.at_end
    start = TextLabel("AI生成", at_start=True, at_end=False)
    report = verify_bytes(label_text("hello", start).encode())
    assert report.complete and "at the start" in report.explicit.detail
    assert LabelPosition.START.value == "Start"
