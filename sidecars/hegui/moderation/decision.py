"""From a model's findings to an action, by the posture of the GenerativeService (Art.4, Art.14).

`spec.moderation.categories` maps each category to a threshold, an action (Block, Mask, Flag) and
the directions it applies to. Block wins over Mask over Flag: a blocked input never reaches the
model, a blocked output never reaches the user (Art.14, stop generation and transmission).
Categories a model reports that the posture does not declare are flagged at
`UNDECLARED_THRESHOLD`, never dropped, so the metrics show them (a classifier scores every
category it knows, mostly near 0, and those are not flagged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hegui.api.generativeservice import Direction, Moderation, ModerationAction
from hegui.moderation.categories import article_of
from hegui.moderation.findings import Findings, Span


class Outcome(StrEnum):
    ALLOW = "allow"
    FLAG = "flag"
    MASK = "mask"
    BLOCK = "block"


UNDECLARED_THRESHOLD = 0.5

_RANK = {Outcome.ALLOW: 0, Outcome.FLAG: 1, Outcome.MASK: 2, Outcome.BLOCK: 3}
_OUTCOME = {ModerationAction.BLOCK: Outcome.BLOCK, ModerationAction.MASK: Outcome.MASK,
            ModerationAction.FLAG: Outcome.FLAG}


@dataclass(frozen=True)
class Hit:
    category: str
    score: float
    outcome: Outcome
    article: str


@dataclass
class Decision:
    direction: Direction
    outcome: Outcome = Outcome.ALLOW
    hits: list[Hit] = field(default_factory=list)
    mask_spans: list[Span] = field(default_factory=list)

    @property
    def blocking(self) -> list[Hit]:
        return [h for h in self.hits if h.outcome == Outcome.BLOCK]

    @property
    def article(self) -> str:
        """The article the decision cites: that of its strongest hit."""
        for hit in sorted(self.hits, key=lambda h: -_RANK[h.outcome]):
            return hit.article
        return "Art.14"


def decide(findings: Findings, moderation: Moderation, direction: Direction) -> Decision:
    decision = Decision(direction)
    declared = {c.name: c for c in moderation.categories}
    masked: set[str] = set()
    for category, score in sorted(findings.scores.items()):
        posture = declared.get(category)
        if posture is None:
            if score < UNDECLARED_THRESHOLD:
                continue
            hit = Hit(category, score, Outcome.FLAG, article_of(category))
        elif direction not in posture.directions or score < posture.threshold:
            continue
        else:
            hit = Hit(category, score, _OUTCOME[posture.action],
                      article_of(category, posture.article))
        decision.hits.append(hit)
        if _RANK[hit.outcome] > _RANK[decision.outcome]:
            decision.outcome = hit.outcome
        if hit.outcome == Outcome.MASK:
            masked.add(category)
    decision.mask_spans = [s for s in findings.spans if s.category in masked]
    return decision
