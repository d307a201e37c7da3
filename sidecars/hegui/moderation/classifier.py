"""The neural classifier slot: a small TorchScript text classifier served by Triton (Art.4(1)).

Keyword lists miss paraphrases; a classifier trained on a provider's own labeled examples scores
what the lexicon cannot. hegui fixes the contract, not the model, so any TorchScript module that
keeps it can be dropped in (e.g. a distilled transformer exported with its own featuriser folded
into `featurise`'s ids).

Contract of a classifier directory (what `train` writes, what the `classifier` Triton model
loads from its version directory):

- `model.pt`: TorchScript; `forward(ids: int64[batch, max_len]) -> float32[batch, C]`, the
  probability (0..1) of each category; id 0 is padding;
- `labels.json`: `{"categories": [C of the 31 risks or 5 classes of hegui.moderation.categories],
  "buckets": B, "max_len": L}`; ids are `featurise(text, B, L)`: character unigrams and bigrams
  of the normalised text (hegui.moderation.lexicon.normalise), hashed (CRC-32) into 1..B-1.

The Triton model answers with the same `FINDINGS` JSON as the other models (scores, no spans),
so the sidecar's thresholds and actions apply to it unchanged.

Training: `python -m hegui.moderation.classifier train DATA.jsonl OUT_DIR`, where each line of
DATA is `{"text": "...", "categories": ["terrorismExtremism", ...]}` (an empty list: clean).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hegui.moderation.categories import is_known
from hegui.moderation.findings import Findings
from hegui.moderation.lexicon import normalise

MODEL_FILE = "model.pt"
LABELS_FILE = "labels.json"


def featurise(text: str, buckets: int, max_len: int) -> list[int]:
    folded, _ = normalise(text)
    grams = list(folded) + [folded[i:i + 2] for i in range(len(folded) - 1)]
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams[:max_len]]


def batch_ids(texts: Iterable[str], buckets: int, max_len: int) -> torch.Tensor:
    rows = [featurise(t, buckets, max_len) or [0] for t in texts]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.int64)


@contextlib.contextmanager
def _torchscript() -> Iterator[None]:
    # TorchScript is deprecated in torch 2.x but still what Triton's PyTorch backend (libtorch)
    # serves, so the contract keeps it; its FutureWarning is silenced here only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
        yield


class BagClassifier(nn.Module):
    """Mean of n-gram embeddings, then one linear layer per category (fastText-like)."""

    def __init__(self, buckets: int, categories: int, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(buckets, dim, mode="mean", padding_idx=0)
        self.out = nn.Linear(dim, categories)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.embed(ids)))


@dataclass(frozen=True)
class Example:
    text: str
    categories: tuple[str, ...]


def read_examples(path: Path) -> list[Example]:
    examples: list[Example] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            text, categories = raw["text"], tuple(raw.get("categories", []))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a labeled example ({error})") from None
        unknown = [c for c in categories if not is_known(c)]
        if not isinstance(text, str) or unknown:
            raise ValueError(f"{path}:{number}: unknown categories {unknown} or no text")
        examples.append(Example(text, categories))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def train(examples: list[Example], out: Path, *, buckets: int = 1 << 14, max_len: int = 512,
          epochs: int = 60, dim: int = 32, seed: int = 0) -> list[str]:
    """Fit a BagClassifier and write the classifier directory; the categories it scores."""
    torch.manual_seed(seed)
    categories = sorted({c for e in examples for c in e.categories})
    if not categories:
        raise ValueError("no example has a category: nothing to learn")
    ids = batch_ids([e.text for e in examples], buckets, max_len)
    targets = torch.tensor([[1.0 if c in e.categories else 0.0 for c in categories]
                            for e in examples])
    model = BagClassifier(buckets, len(categories), dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = nn.BCELoss()
    model.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = loss_fn(model(ids), targets)
        loss.backward()
        optimiser.step()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    with _torchscript():
        torch.jit.script(model).save(str(out / MODEL_FILE))  # type: ignore[no-untyped-call]
    (out / LABELS_FILE).write_text(json.dumps({"categories": categories, "buckets": buckets,
                                               "max_len": max_len}) + "\n", encoding="utf-8")
    return categories


class Classifier:
    """A classifier directory, loaded: what the Triton model runs."""

    def __init__(self, directory: Path) -> None:
        labels = json.loads((directory / LABELS_FILE).read_text(encoding="utf-8"))
        self.categories: list[str] = [str(c) for c in labels["categories"]]
        self.buckets, self.max_len = int(labels["buckets"]), int(labels["max_len"])
        with _torchscript():
            self.model = torch.jit.load(  # type: ignore[no-untyped-call]
                str(directory / MODEL_FILE), map_location="cpu")
        self.model.eval()

    def findings(self, texts: list[str]) -> list[Findings]:
        if not texts:
            return []
        with torch.inference_mode():
            scores = self.model(batch_ids(texts, self.buckets, self.max_len)).tolist()
        return [Findings({c: round(float(s), 4) for c, s in zip(self.categories, row,
                                                                strict=True)})
                for row in scores]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hegui.moderation.classifier")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train", help="fit a classifier on labeled JSONL")
    fit.add_argument("data", type=Path, help='JSONL: {"text": ..., "categories": [...]}')
    fit.add_argument("out", type=Path, help="the classifier directory to write")
    fit.add_argument("--epochs", type=int, default=60)
    fit.add_argument("--buckets", type=int, default=1 << 14)
    args = parser.parse_args(argv)
    try:
        categories = train(read_examples(args.data), args.out, epochs=args.epochs,
                           buckets=args.buckets)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: scores {', '.join(categories)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
