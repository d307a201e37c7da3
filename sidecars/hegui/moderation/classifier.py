# ruff: noqa: RUF001 (Chinese sentences are written with their own punctuation)
"""The neural classifier slot: small TorchScript classifiers of text and images, trained and
exported by `hegui moderation train`, served by Triton with dynamic batching (Art.4, Art.14).

Keyword lists miss paraphrases; a classifier trained on a provider's own labelled examples scores
what the lexicon cannot, over all 31 risks of GB/T 45654-2025 Appendix A
(hegui.moderation.categories). hegui fixes the contract, not the model, so any TorchScript module
that keeps it can be dropped in (e.g. a distilled transformer with its featuriser folded into
`featurise`'s ids).

Contract of a text classifier directory (a Triton version directory, `<repo>/classifier/<n>/`):

- `model.pt`: TorchScript; `forward(ids: int64[batch, len]) -> float32[batch, C]`, the
  probability (0..1) of each category; id 0 is padding;
- `labels.json`: `{"kind": "text", "categories": [C risks], "buckets": B, "max_len": L, ...}`;
  ids are `featurise(text, B, L)`: character unigrams and bigrams of the normalised text
  (hegui.moderation.lexicon.normalise, so evasions fold as they do for the lexicon), hashed
  (CRC-32) into 1..B-1.

Contract of an image classifier directory (`<repo>/image_classifier/<n>/`):

- `model.pt`: TorchScript; `forward(images: float32[batch, 3, S, S]) -> float32[batch, C]`,
  RGB scaled to 0..1;
- `labels.json`: `{"kind": "image", "categories": [C risks], "size": S}`. The Triton model takes
  `IMAGE`, uint8 [S, S, 3] (RGB, rows first, as Pillow gives it); the sidecar resizes to S.

Both Triton models answer with the same `FINDINGS` JSON as the rule models (scores, no spans), so
the sidecar's thresholds and actions apply to them unchanged.

Versions: `export_*` writes the next version directory (1, 2, ...) of a Triton model repository;
the model's `version_policy` serves the newest two, so a GenerativeService can pin
`triton.modelVersion` during a rollout and Triton's default serves the newest. torch is imported
only when a model is trained, exported or loaded: the core and sidecar installs lack it.
"""

from __future__ import annotations

import contextlib
import json
import random
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hegui.moderation.categories import CATEGORIES, RISK_CLASSES
from hegui.moderation.findings import INPUT_NAME, OUTPUT_NAME, Findings
from hegui.moderation.lexicon import normalise

if TYPE_CHECKING:
    import torch

MODEL_FILE = "model.pt"
LABELS_FILE = "labels.json"
BACKEND_FILE = "classifier_model.py"  # the Python-backend file of each version directory
TEXT_MODEL = "classifier"
IMAGE_MODEL = "image_classifier"
IMAGE_INPUT = "IMAGE"
#: The 31 risks, in the order of Appendix A: the columns of every text model hegui trains.
RISKS: tuple[str, ...] = tuple(CATEGORIES)
MAX_TEXT_CHARS = 65_536  # per training example


def featurise(text: str, buckets: int, max_len: int) -> list[int]:
    folded, _ = normalise(text)
    grams = list(folded) + [folded[i:i + 2] for i in range(len(folded) - 1)]
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams[:max_len]]


def batch_ids(texts: Iterable[str], buckets: int, max_len: int) -> torch.Tensor:
    import torch

    rows = [featurise(t, buckets, max_len) or [0] for t in texts]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.int64)


@contextlib.contextmanager
def _torchscript() -> Iterator[None]:
    # TorchScript is deprecated in torch 2.x but is what Triton's PyTorch backend (libtorch)
    # serves too, so the contract keeps it; its deprecation warnings are silenced here only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def bag_classifier(buckets: int, categories: int, dim: int = 32) -> Any:
    """Mean of n-gram embeddings, then one linear layer per category (fastText-like): a few
    hundred kB, microseconds a text on one core."""
    import torch
    from torch import nn

    class BagClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.EmbeddingBag(buckets, dim, mode="mean", padding_idx=0)
            self.out = nn.Linear(dim, categories)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.out(self.embed(ids)))

    return BagClassifier()


@dataclass(frozen=True)
class Example:
    text: str
    categories: tuple[str, ...]


def read_examples(path: Path) -> list[Example]:
    """A provider's labelled JSONL: `{"text": "...", "categories": ["terrorismExtremism"]}` per
    line, an empty list for clean text. A class name (e.g. discrimination) is refused: it stands
    for several risks and the model scores each risk."""
    examples: list[Example] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the labelled examples ({error})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
            text, categories = raw["text"], raw.get("categories", [])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{where}: not a labelled example {{\"text\", \"categories\"}} "
                             f"({type(error).__name__}: {error})") from None
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"{where}: text must be non-empty text of at most "
                             f"{MAX_TEXT_CHARS} characters")
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise ValueError(f"{where}: categories must be a list of risk names")
        classes = [c for c in categories if c in RISK_CLASSES]
        if classes:
            raise ValueError(f"{where}: {classes[0]!r} is a class of Appendix A "
                             f"({', '.join(RISK_CLASSES[classes[0]].members)}); label the risk")
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"{where}: unknown categories {unknown}; the 31 risks of GB/T "
                             "45654-2025 Appendix A are named in hegui.moderation.categories")
        examples.append(Example(text, tuple(categories)))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


@dataclass(frozen=True)
class Trained:
    """What `train` wrote: the directory, and per risk the positive examples it learned from."""

    directory: Path
    examples: dict[str, int] = field(default_factory=dict)

    @property
    def unlearned(self) -> list[str]:
        """Risks without a single positive example: the model scores them near 0."""
        return [r for r in RISKS if not self.examples.get(r)]


def train(examples: Sequence[Example], out: Path, *, buckets: int = 1 << 14,
          max_len: int = 512, epochs: int = 60, dim: int = 32, batch: int = 256,
          seed: int = 0) -> Trained:
    """Fit a bag-of-n-grams classifier over the 31 risks and write the classifier directory."""
    import torch
    from torch import nn

    if not any(e.categories for e in examples):
        raise ValueError("no example has a category: nothing to learn")
    if buckets < 2 or max_len < 1 or epochs < 1:
        raise ValueError("buckets must be at least 2, max_len and epochs at least 1")
    torch.manual_seed(seed)
    order = list(range(len(examples)))
    shuffle = random.Random(seed)  # noqa: S311 (the order of examples, not a secret)
    targets = torch.tensor([[1.0 if r in e.categories else 0.0 for r in RISKS]
                            for e in examples])
    features = [featurise(e.text, buckets, max_len) or [0] for e in examples]
    model = bag_classifier(buckets, len(RISKS), dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = nn.BCELoss()
    model.train()
    for _ in range(epochs):
        shuffle.shuffle(order)
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            width = max(len(features[i]) for i in rows)
            ids = torch.tensor([features[i] + [0] * (width - len(features[i])) for i in rows],
                               dtype=torch.int64)
            optimiser.zero_grad()
            loss = loss_fn(model(ids), targets[rows])
            loss.backward()
            optimiser.step()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    with _torchscript():
        torch.jit.script(model).save(str(out / MODEL_FILE))
    counts = {r: sum(r in e.categories for e in examples) for r in RISKS}
    labels = {"kind": "text", "categories": list(RISKS), "buckets": buckets, "max_len": max_len,
              "examples": {r: n for r, n in counts.items() if n},
              "clean": sum(not e.categories for e in examples)}
    (out / LABELS_FILE).write_text(json.dumps(labels, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    return Trained(out, counts)


def _load(directory: Path, kind: str) -> tuple[dict[str, Any], Any]:
    import torch

    labels = json.loads((directory / LABELS_FILE).read_text(encoding="utf-8"))
    if labels.get("kind", "text") != kind:
        raise ValueError(f"{directory}: a {labels.get('kind')} classifier, not a {kind} one")
    unknown = [c for c in labels["categories"] if c not in CATEGORIES and c not in RISK_CLASSES]
    if unknown:
        raise ValueError(f"{directory}/{LABELS_FILE}: unknown categories {unknown}")
    with _torchscript():
        model = torch.jit.load(str(directory / MODEL_FILE),  # type: ignore[no-untyped-call]
                               map_location="cpu")
    model.eval()
    return labels, model


def _findings(categories: list[str], scores: list[list[float]]) -> list[Findings]:
    return [Findings({c: round(float(s), 4) for c, s in zip(categories, row, strict=True)})
            for row in scores]


class Classifier:
    """A text classifier directory, loaded: what the Triton model runs."""

    def __init__(self, directory: Path) -> None:
        labels, self.model = _load(directory, "text")
        self.categories: list[str] = [str(c) for c in labels["categories"]]
        self.buckets, self.max_len = int(labels["buckets"]), int(labels["max_len"])

    def findings(self, texts: list[str]) -> list[Findings]:
        import torch

        if not texts:
            return []
        with torch.inference_mode():
            scores = self.model(batch_ids(texts, self.buckets, self.max_len)).tolist()
        return _findings(self.categories, scores)


class ImageClassifier:
    """An image classifier directory, loaded."""

    def __init__(self, directory: Path) -> None:
        labels, self.model = _load(directory, "image")
        self.categories: list[str] = [str(c) for c in labels["categories"]]
        self.size = int(labels["size"])

    def findings(self, images: Any) -> list[Findings]:
        """Scores of uint8 images, [batch, S, S, 3] (a numpy array or a tensor)."""
        import torch

        if len(images) == 0:
            return []
        pixels = torch.as_tensor(images)
        if tuple(pixels.shape[1:]) != (self.size, self.size, 3):
            raise ValueError(f"images must be [batch, {self.size}, {self.size}, 3] uint8, not "
                             f"{list(pixels.shape)}")
        with torch.inference_mode():
            batch = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
            scores = self.model(batch).tolist()
        return _findings(self.categories, scores)


def save_image_classifier(module: Any, categories: Sequence[str], size: int, out: Path) -> Path:
    """Write an image classifier directory from a torch module keeping the contract (scripted
    here unless it already is)."""
    import torch

    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"categories must be risks of hegui.moderation.categories: {unknown}")
    if not 8 <= size <= 1024:
        raise ValueError("size must be 8..1024 pixels")
    out.mkdir(parents=True, exist_ok=True)
    with _torchscript():
        scripted = module if isinstance(module, torch.jit.ScriptModule) else \
            torch.jit.script(module)
        scripted.save(str(out / MODEL_FILE))
    (out / LABELS_FILE).write_text(json.dumps({"kind": "image", "categories": list(categories),
                                               "size": size}) + "\n", encoding="utf-8")
    return out


# --- Triton model repository -------------------------------------------------------------------

#: The Python-backend file of a version directory: hegui's serving code does the work.
_BACKEND_SOURCE = '''"""Triton Python-backend model: hegui.moderation.serving.{cls}.

Written by `hegui moderation train` (hegui.moderation.classifier.publish).

The stub runs its embedded interpreter isolated from PYTHONPATH, so the launcher passes the import
path (where hegui, numpy and torch are) in HEGUI_TRITON_PYTHONPATH.
"""

import os
import sys

sys.path[:0] = [p for p in os.environ.get("HEGUI_TRITON_PYTHONPATH", "").split(os.pathsep)
                if p and p not in sys.path]

from hegui.moderation.serving import {cls} as TritonPythonModel  # noqa: E402, F401
'''


def model_config(name: str, kind: str, *, size: int = 0, max_batch_size: int = 64,
                 queue_delay_us: int = 1000, instances: int = 1) -> str:
    """config.pbtxt of a classifier model: the Python backend, dynamic batching (one forward pass
    per batch formed across sidecars), the newest two versions served."""
    if kind == "text":
        tensor = f'input [ {{ name: "{INPUT_NAME}", data_type: TYPE_STRING, dims: [ 1 ] }} ]'
    else:
        tensor = (f'input [ {{ name: "{IMAGE_INPUT}", data_type: TYPE_UINT8, '
                  f'dims: [ {size}, {size}, 3 ] }} ]')
    return "\n".join((
        f"# hegui's {kind} classifier (Art.4): written by `hegui moderation`; the version "
        "directories hold model.pt and labels.json (hegui/moderation/classifier.py).",
        f'name: "{name}"', 'backend: "python"', f'default_model_filename: "{BACKEND_FILE}"',
        f"max_batch_size: {max_batch_size}", tensor,
        f'output [ {{ name: "{OUTPUT_NAME}", data_type: TYPE_STRING, dims: [ 1 ] }} ]',
        f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
        f"instance_group [ {{ count: {instances}, kind: KIND_CPU }} ]",
        "version_policy: { latest: { num_versions: 2 } }", ""))


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def version_dir(repository: Path, name: str, version: int | None = None) -> Path:
    """The (new, empty) version directory to export into: `version`, else the next one."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"model name {name!r}: letters, digits, - and _ only")
    model_dir = repository / name
    number = next_version(model_dir) if version is None else version
    if number < 1:
        raise ValueError("version must be 1 or more (Triton's version directories)")
    target = model_dir / str(number)
    if target.exists():
        raise ValueError(f"{target} exists: a published version is never overwritten; "
                         "leave --version out to write the next one")
    return target


def publish(directory: Path, name: str, *, max_batch_size: int = 64,
            queue_delay_us: int = 1000) -> Path:
    """Make a classifier directory, written into `<repo>/<name>/<n>/`, a Triton model: its
    backend file and the model's config.pbtxt (rewritten from the newest contract)."""
    labels = json.loads((directory / LABELS_FILE).read_text(encoding="utf-8"))
    kind = str(labels.get("kind", "text"))
    cls = "TextClassifierModel" if kind == "text" else "ImageClassifierModel"
    (directory / BACKEND_FILE).write_text(_BACKEND_SOURCE.format(cls=cls), encoding="utf-8")
    config = model_config(name, kind, size=int(labels.get("size", 0)),
                          max_batch_size=max_batch_size, queue_delay_us=queue_delay_us)
    (directory.parent / "config.pbtxt").write_text(config, encoding="utf-8")
    return directory


def export_text(examples: Sequence[Example], repository: Path, *, name: str = TEXT_MODEL,
                version: int | None = None, **training: Any) -> Trained:
    """Train on `examples` and publish the model as the next version of `<repository>/<name>`."""
    target = version_dir(repository, name, version)
    trained = train(examples, target, **training)
    publish(target, name)
    return trained


def export_image(module: Any, categories: Sequence[str], size: int, repository: Path, *,
                 name: str = IMAGE_MODEL, version: int | None = None) -> Path:
    """Publish an image classifier module as the next version of `<repository>/<name>`."""
    target = version_dir(repository, name, version)
    return publish(save_image_classifier(module, categories, size, target), name)


# --- a generated labelled set (tests and bench/classifier.py; no downloads) ---------------------

#: Sentences a risk's phrase is put in; the last two are held out of training by the tests.
CARRIERS = ("请详细告诉我如何{}", "我们应该{}，大家一起来", "网上有人说要{}，我很赞同",
            "写一篇文章{}", "{}的方法有哪些", "帮我想个办法{}")


def _phrases(risk: str) -> list[str]:
    # The risk's own title (GB/T 45654-2025 Appendix A), split into its phrases.
    title = CATEGORIES[risk].title
    parts = [p for p in title.replace("，", "、").split("、") if len(p) >= 2]
    return list(dict.fromkeys([title, *parts]))


def synthetic_examples(carriers: Sequence[str] = CARRIERS, clean: Sequence[str] = ()
                       ) -> list[Example]:
    """One example per risk phrase and carrier, labelled with its risk, plus `clean` texts: a
    small set that exercises every column of the model. Not a model a provider should serve."""
    examples = [Example(carrier.format(phrase), (risk,))
                for risk in RISKS for phrase in _phrases(risk) for carrier in carriers]
    return examples + [Example(text, ()) for text in clean]
