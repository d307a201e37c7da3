"""`hegui moderation train`: a labelled JSONL over the 31 risks in, a versioned Triton model out;
the model finds each risk in sentences it was not trained on and passes clean text (Art.4)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hegui import cli
from hegui.moderation.classifier import (
    BACKEND_FILE,
    CARRIERS,
    LABELS_FILE,
    MODEL_FILE,
    RISKS,
    Classifier,
    ImageClassifier,
    export_image,
    featurise,
    read_examples,
    synthetic_examples,
)
from hegui.moderation.quality import chinese_phrases, english_corpus

torch = pytest.importorskip("torch")

CLEAN = chinese_phrases(500, seed=3) + english_corpus(300)
TRAIN_CARRIERS, HELD_OUT = CARRIERS[:4], CARRIERS[4:]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("train")
    data = write_jsonl(work / "labelled.jsonl", [
        {"text": e.text, "categories": list(e.categories)}
        for e in synthetic_examples(TRAIN_CARRIERS, CLEAN[:500])])
    assert cli.main(["moderation", "train", "--data", str(data), "--out", str(work / "repo"),
                     "--buckets", "4096", "--epochs", "80", "--max-len", "64"]) == 0
    return work / "repo"


def test_train_writes_a_triton_model_version(repository: Path) -> None:
    model = repository / "classifier"
    version = model / "1"
    assert sorted(p.name for p in version.iterdir()) == sorted([MODEL_FILE, LABELS_FILE,
                                                                BACKEND_FILE])
    labels = json.loads((version / LABELS_FILE).read_text())
    assert labels["categories"] == list(RISKS) and len(RISKS) == 31
    # Every risk learned from its examples: the phrases of its title in 4 sentences each.
    assert labels["examples"] == Counter(
        e.categories[0] for e in synthetic_examples(TRAIN_CARRIERS))
    assert min(labels["examples"].values()) == 4 and labels["clean"] == 500
    config = (model / "config.pbtxt").read_text()
    assert 'name: "classifier"' in config and "dynamic_batching" in config
    assert "num_versions: 2" in config
    assert "TextClassifierModel" in (version / BACKEND_FILE).read_text()


def test_the_model_finds_every_risk_in_unseen_sentences_and_passes_clean_text(
        repository: Path) -> None:
    classifier = Classifier(repository / "classifier" / "1")
    held = synthetic_examples(HELD_OUT)
    found = classifier.findings([e.text for e in held])
    missed = [(e.text, max(f.scores, key=lambda c: f.scores[c]))
              for e, f in zip(held, found, strict=True)
              if f.scores[e.categories[0]] < 0.5
              or max(f.scores, key=lambda c: f.scores[c]) != e.categories[0]]
    assert len(missed) <= len(held) // 20, missed  # recall on unseen sentences >= 95%
    assert {e.categories[0] for e in held} == set(RISKS)
    clean = classifier.findings(CLEAN[500:])
    flagged = [t for t, f in zip(CLEAN[500:], clean, strict=True)
               if max(f.scores.values()) >= 0.5]
    assert len(flagged) <= len(clean) // 50, flagged  # false positives <= 2%
    assert classifier.findings([]) == []


def test_each_export_is_a_new_version_and_none_is_overwritten(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [
        {"text": "拿刀砍人", "categories": ["violenceObscenity"]},
        {"text": "今天天气很好", "categories": []}])
    args = ["moderation", "train", "--data", str(data), "--out", str(tmp_path / "repo"),
            "--buckets", "256", "--epochs", "2"]
    assert cli.main(args) == 0
    assert "no example of 30 risk(s)" in capsys.readouterr().err
    assert cli.main(args) == 0
    assert sorted(p.name for p in (tmp_path / "repo" / "classifier").iterdir()) == [
        "1", "2", "config.pbtxt"]
    assert cli.main([*args, "--version", "1"]) == 2
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "x", "categories": ["nosuch"]}', "unknown categories ['nosuch']"),
    ('{"text": "x", "categories": ["discrimination"]}', "is a class of Appendix A"),
    ('{"text": "x", "categories": "violenceObscenity"}', "must be a list"),
    ('{"text": "", "categories": []}', "non-empty text"),
    ('{"categories": []}', "not a labelled example"),
    ("not json", "not a labelled example"),
    ("[1, 2]", "not a labelled example"),
])
def test_bad_training_data_names_the_line(tmp_path: Path, line: str, message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "categories": []}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"bad.jsonl:2: .*{re.escape(message)}"):
        read_examples(bad)
    assert cli.main(["moderation", "train", "--data", str(bad), "--out",
                     str(tmp_path / "out")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_nothing_to_learn_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "clean.jsonl", [{"text": "你好", "categories": []}])
    assert cli.main(["moderation", "train", "--data", str(data), "--out",
                     str(tmp_path / "out")]) == 2
    assert "nothing to learn" in capsys.readouterr().err
    assert not (tmp_path / "out" / "classifier" / "1").exists()


def test_features_fold_evasions_as_the_lexicon_does() -> None:
    # Traditional characters and an invisible character give the same ids as the plain text.
    assert featurise("製作炸彈", 4096, 512) == featurise("制作炸弹", 4096, 512)
    assert featurise("炸\u200b弹", 4096, 512) == featurise("炸弹", 4096, 512)
    assert all(0 < i < 4096 for i in featurise("打人 hurt", 4096, 512))


def test_image_classifier_contract(tmp_path: Path) -> None:
    # A tiny model made here: mean colour -> one score; red images score high.
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[12.0, -12.0, -12.0]]))
        model[2].bias.fill_(-2.0)
    version = export_image(model, ["violenceObscenity"], 16, tmp_path)
    assert version == tmp_path / "image_classifier" / "1"
    config = (tmp_path / "image_classifier" / "config.pbtxt").read_text()
    assert "TYPE_UINT8" in config and "dims: [ 16, 16, 3 ]" in config
    classifier = ImageClassifier(version)
    red = torch.zeros(16, 16, 3, dtype=torch.uint8)
    red[..., 0] = 255
    found = classifier.findings(torch.stack([red, torch.zeros(16, 16, 3, dtype=torch.uint8)]))
    assert found[0].scores["violenceObscenity"] > 0.9
    assert found[1].scores["violenceObscenity"] < 0.2
    with pytest.raises(ValueError, match=r"\[batch, 16, 16, 3\]"):
        classifier.findings(torch.zeros(1, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="not a text one"):
        Classifier(version)
    with pytest.raises(ValueError, match="risks"):
        export_image(model, ["nosuch"], 16, tmp_path)


def test_training_code_does_not_import_torch_until_it_trains() -> None:
    # The core and sidecar installs lack torch: the CLI, the client and the classifier's
    # contract must import without it.
    probe = ("import sys\nimport hegui.moderation.cli, hegui.moderation.client, "
             "hegui.moderation.classifier\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_answer_images_are_what_an_images_answer_carries() -> None:
    from hegui.moderation.client import answer_images

    body = {"data": [{"b64_json": "aGVsbG8="}, {"url": "http://x/y.png"},
                     {"b64_json": "not base64!"}, "junk"]}
    assert answer_images(body) == [b"hello", None, None, None]
    assert answer_images({"data": "x"}) == [] and answer_images([1]) == []
