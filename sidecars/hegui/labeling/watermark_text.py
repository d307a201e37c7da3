"""A text watermark for models run with Hugging Face transformers (Kirchenbauer et al. 2023,
"A Watermark for Large Language Models"): before each token is sampled, a keyed "green list"
of gamma x vocabulary tokens, seeded by the previous token, gets delta added to its logits.
The detector needs only the token ids (from the tokenizer) and the key: watermarked text has
far more green tokens than the gamma share chance gives, measured as a z-score.

GB 45438-2025 encourages digital watermarks beside the metadata label (Art.12); this one
survives copy and paste of the text, which metadata does not.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

DEFAULT_GAMMA = 0.25
DEFAULT_DELTA = 2.0
#: z above this is reported as watermarked (p about 3e-5 one-sided).
DEFAULT_Z_THRESHOLD = 4.0


def _seed(key: bytes, previous: int) -> int:
    digest = hashlib.sha256(b"hegui-text-wm\0" + key + previous.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


@dataclass
class GreenLists:
    """The green list for each previous token, cached (a generation reuses few contexts)."""

    vocab_size: int
    key: bytes
    gamma: float = DEFAULT_GAMMA
    cache_size: int = 4096
    _cache: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.gamma < 1:
            raise ValueError("gamma must be between 0 and 1")
        if self.vocab_size < 2:
            raise ValueError("the vocabulary needs at least 2 tokens")

    def mask(self, previous: int) -> torch.Tensor:
        """A (vocab_size,) bool mask of the green tokens after `previous`."""
        cached = self._cache.get(previous)
        if cached is not None:
            return cached
        generator = torch.Generator().manual_seed(_seed(self.key, previous))
        green = torch.randperm(self.vocab_size, generator=generator)[
            :max(1, int(self.gamma * self.vocab_size))]
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[green] = True
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[previous] = mask
        return mask


class WatermarkLogitsProcessor:
    """A logits processor with transformers' signature `(input_ids, scores) -> scores`; put it
    in `generate(..., logits_processor=LogitsProcessorList([...]))` or call it in a loop."""

    def __init__(self, vocab_size: int, key: bytes, gamma: float = DEFAULT_GAMMA,
                 delta: float = DEFAULT_DELTA) -> None:
        self.green = GreenLists(vocab_size, key, gamma)
        self.delta = delta

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] == 0:
            return scores
        bias = torch.stack([self.green.mask(int(row[-1])) for row in input_ids])
        width = scores.shape[-1]
        if bias.shape[-1] < width:      # models often pad the vocabulary beyond the tokenizer
            bias = torch.nn.functional.pad(bias, (0, width - bias.shape[-1]))
        bias = bias[:, :width].to(scores.device)
        return scores + bias.to(scores.dtype) * self.delta


@dataclass(frozen=True)
class TextDetection:
    scored: int            # tokens scored (all but the first)
    green: int
    z: float
    p_value: float         # one-sided, normal approximation
    watermarked: bool


def detect_tokens(token_ids: Sequence[int], vocab_size: int, key: bytes,
                  gamma: float = DEFAULT_GAMMA,
                  z_threshold: float = DEFAULT_Z_THRESHOLD) -> TextDetection:
    """The z-score of the green-token count in `token_ids` under `key`."""
    green_lists = GreenLists(vocab_size, key, gamma)
    scored = green = 0
    for previous, token in itertools.pairwise(token_ids):
        if 0 <= token < vocab_size:
            scored += 1
            green += bool(green_lists.mask(previous)[token])
    if scored == 0:
        return TextDetection(0, 0, 0.0, 1.0, False)
    z = (green - gamma * scored) / math.sqrt(scored * gamma * (1 - gamma))
    p_value = 0.5 * math.erfc(z / math.sqrt(2))
    return TextDetection(scored, green, z, p_value, z >= z_threshold)


class Tokenizer(Protocol):
    """What detection needs of a Hugging Face tokenizer."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def __len__(self) -> int: ...


def detect_text(text: str, tokenizer: Tokenizer, key: bytes, gamma: float = DEFAULT_GAMMA,
                z_threshold: float = DEFAULT_Z_THRESHOLD) -> TextDetection:
    """`detect_tokens` on text, with the model's tokenizer (`len(tokenizer)` is the vocabulary
    the green lists were drawn from)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return detect_tokens(ids, len(tokenizer), key, gamma, z_threshold)
