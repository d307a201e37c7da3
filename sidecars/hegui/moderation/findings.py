"""What a moderation model returns, and its wire form between Triton and the sidecar.

Every hegui moderation model (lexicon, pii) has the same contract, so the sidecar treats them
alike:

- input `TEXT`: TYPE_STRING, dims [1] (batched: [batch, 1]), UTF-8 text;
- output `FINDINGS`: TYPE_STRING, dims [1], UTF-8 JSON
  `{"scores": {category: 0..1}, "spans": [[start, end, category, label], ...]}` where offsets
  count Unicode code points of the input, end exclusive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hegui.moderation.categories import PERSONAL_INFORMATION
from hegui.moderation.lexicon import Lexicon
from hegui.moderation.pii import find_pii

INPUT_NAME = "TEXT"
OUTPUT_NAME = "FINDINGS"


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    category: str
    label: str  # the keyword's category or the kind of personal information


@dataclass
class Findings:
    scores: dict[str, float] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)

    def merge(self, other: Findings) -> Findings:
        scores = dict(self.scores)
        for category, score in other.scores.items():
            scores[category] = max(scores.get(category, 0.0), score)
        return Findings(scores, [*self.spans, *other.spans])

    def to_json(self) -> bytes:
        return json.dumps({"scores": self.scores,
                           "spans": [[s.start, s.end, s.category, s.label] for s in self.spans]},
                          ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Findings:
        raw: Any = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("findings are not a JSON object")
        scores = {str(k): float(v) for k, v in dict(raw.get("scores", {})).items()}
        spans = [Span(int(s[0]), int(s[1]), str(s[2]), str(s[3])) for s in raw.get("spans", [])]
        return cls(scores, spans)


def lexicon_findings(lexicon: Lexicon, text: str) -> Findings:
    found = Findings()
    for match in lexicon.finditer(text):
        category = match.keyword.category
        found.scores[category] = max(found.scores.get(category, 0.0), match.keyword.score)
        found.spans.append(Span(match.start, match.end, category, match.keyword.text))
    return found


def pii_findings(text: str) -> Findings:
    spans = [Span(s.start, s.end, PERSONAL_INFORMATION, s.kind.value) for s in find_pii(text)]
    return Findings({PERSONAL_INFORMATION: 1.0} if spans else {}, spans)
