"""The neural classifier slot: train a tiny one on a labeled set made here, check the contract,
and serve it through a real tritonserver next to the lexicon and pii models (Art.4(1))."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hegui.api.generativeservice import TritonEndpoint
from hegui.moderation.classifier import (
    LABELS_FILE,
    MODEL_FILE,
    Classifier,
    featurise,
    main,
    read_examples,
)
from hegui.moderation.client import TritonModerator
from hegui.moderation.tritonserver import MODEL_REPOSITORY, TritonServer, TritonUnavailable

VIOLENT = ["我要去打人", "把他打死算了", "用刀砍人", "I will hurt you badly", "去砍死那个人",
           "kill them all tonight", "我们去打架斗殴", "拿刀捅人"]
CLEAN = ["今天天气很好", "帮我写一首诗", "明天去公园散步", "how do I bake bread",
         "推荐一本好书", "what time is it", "我喜欢吃苹果", "学习编程很有趣"]


def labeled_set(path: Path) -> Path:
    rows = [{"text": t, "categories": ["violenceObscenity"]} for t in VIOLENT]
    rows += [{"text": t, "categories": []} for t in CLEAN]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("classifier")
    out = work / "model"
    assert main(["train", str(labeled_set(work / "data.jsonl")), str(out),
                 "--buckets", "4096"]) == 0
    return out


def test_training_writes_the_contract(trained: Path) -> None:
    assert (trained / MODEL_FILE).is_file()
    labels = json.loads((trained / LABELS_FILE).read_text())
    assert labels == {"categories": ["violenceObscenity"], "buckets": 4096, "max_len": 512}
    classifier = Classifier(trained)
    found = classifier.findings(["拿刀砍人", "今天天气很好", ""])
    assert found[0].scores["violenceObscenity"] > 0.5
    assert found[1].scores["violenceObscenity"] < 0.5
    assert found[0].spans == []
    assert all(0 < i < 4096 for i in featurise("打人 hurt", 4096, 512))


def test_bad_training_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "categories": ["nosuch"]}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown categories"):
        read_examples(bad)
    assert main(["train", str(bad), str(tmp_path / "out")]) == 2
    bad.write_text('{"text": "x", "categories": []}\n', encoding="utf-8")
    assert main(["train", str(bad), str(tmp_path / "out")]) == 2


@pytest.mark.triton
async def test_classifier_served_by_triton(trained: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    for name in ("lexicon", "pii"):
        (repository / name).symlink_to(MODEL_REPOSITORY / name)
    shutil.copytree(MODEL_REPOSITORY.parent / "classifier", repository / "classifier",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for file in (MODEL_FILE, LABELS_FILE):
        shutil.copy(trained / file, repository / "classifier" / "1" / file)
    try:
        server = TritonServer(model_repository=repository).start(timeout=180)
    except TritonUnavailable as missing:
        pytest.skip(f"tritonserver is not installed: {missing}")
    try:
        moderator = TritonModerator(TritonEndpoint(address=server.grpc_url, model="classifier"),
                                    timeout=10.0)
        texts = ["拿刀砍人", "今天天气很好"]
        served = await moderator.moderate(texts)
        await moderator.close()
        local = Classifier(trained).findings(texts)
        assert [f.scores for f in served] == [f.scores for f in local]
        assert served[0].scores["violenceObscenity"] > 0.5
    finally:
        server.stop()
