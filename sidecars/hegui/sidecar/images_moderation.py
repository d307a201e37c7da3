"""The pictures of an images answer, scored by the image classifier the posture names (Art.4,
Art.14); their texts are moderated as every answer's are (`Sidecar._images_answer`).

- Declared (`spec.moderation.images`): every `b64_json` picture of an answer is scored in one
  Triton call; the posture's categories, thresholds and actions apply as for text. A picture has
  no span to mask, so Mask on an image category blocks. One blocked picture withholds the whole
  answer (451 `hegui.output_blocked`, recorded like every block): Art.14 says stop transmission,
  and an answer with a hole where a picture was would tell what was generated.
- A picture the sidecar cannot see is never clean: a `url` (the sidecar would have to fetch what
  the client fetches, later and maybe otherwise) or a `b64_json` that does not decode. In fail
  mode Closed the answer is refused (a url: 422, ask `response_format: b64_json`; a broken
  picture: 502, the model's doing); in Open it is served with `x-hegui-output: unmoderated` and
  an `unmoderated` record, as text is while the moderator is down.
- Classifier down: the fail mode decides, as for text (Closed: 503 `moderation_unavailable`).
- Not declared: fail mode Closed promises that nothing unmoderated is served, so image requests
  are refused before the model is called (503, naming `spec.moderation.images`: the provider's
  fix, not the user's); Open serves them flagged and recorded.

Labels (Art.12) go on whatever is served, after this (`Sidecar._labeled_images`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from hegui.api.generativeservice import Direction, Moderation, TritonEndpoint
from hegui.moderation.client import (
    ModeratorUnavailable,
    TritonImageModerator,
    UndecodableImage,
    answer_images,
)
from hegui.moderation.decision import Decision, Hit, Outcome, decide
from hegui.moderation.findings import Findings
from hegui.sidecar.common import BadRequest, ModerationDown, error_response

if TYPE_CHECKING:
    from hegui.sidecar.app import Sidecar

log = logging.getLogger("hegui.sidecar.images")

ROUTE = "images"
FIELD = "spec.moderation.images"


class ImageModerator(Protocol):
    """What scores pictures: `TritonImageModerator`, or a test's stand-in."""

    async def moderate_images(self, images: list[bytes]) -> list[Findings]: ...

    async def close(self) -> None: ...


MakeImageModerator = Callable[[TritonEndpoint, float], ImageModerator]


#: Where the sidecar finds Triton when the posture names no endpoint (as __main__ does for text).
DEFAULT_TRITON = TritonEndpoint(address="127.0.0.1:8001", model="moderation")


class ImageClassifiers:
    """The image moderator of the posture in force: the model `spec.moderation.images` names,
    on the Triton of `spec.moderation.triton` (`address` overrides its host:port, as
    `--triton` does for text). One client per endpoint, made on first use and again when a
    posture change names another (`PostureWatch`), so a running pod follows the posture without
    a restart. Replaced clients are closed with the sidecar (a request may still use one)."""

    def __init__(self, make: MakeImageModerator | None = None, *,
                 address: str | None = None) -> None:
        self._make: MakeImageModerator = make or TritonImageModerator
        self.address = address
        self._current: tuple[tuple[TritonEndpoint, float], ImageModerator] | None = None
        self._retired: list[ImageModerator] = []

    def endpoint(self, moderation: Moderation) -> TritonEndpoint | None:
        if moderation.images is None:
            return None
        update: dict[str, str] = {"model": moderation.images.model,
                                  "model_version": moderation.images.model_version}
        if self.address:
            update["address"] = self.address
        return (moderation.triton or DEFAULT_TRITON).model_copy(update=update)

    def for_posture(self, moderation: Moderation, timeout: float) -> ImageModerator | None:
        endpoint = self.endpoint(moderation)
        if endpoint is None:
            return None
        key = (endpoint, timeout)
        if self._current is None or self._current[0] != key:
            if self._current is not None:
                self._retired.append(self._current[1])
            self._current = (key, self._make(*key))
        return self._current[1]

    async def close(self) -> None:
        moderators = self._retired + ([self._current[1]] if self._current else [])
        self._current, self._retired = None, []
        for moderator in moderators:
            await moderator.close()


def as_picture(decision: Decision) -> Decision:
    """A text decision made a picture's: Mask (a span to hide) means nothing for a picture, so
    it blocks (Art.14), never lets the picture through as if it had been masked."""
    hits = [replace(h, outcome=Outcome.BLOCK) if h.outcome is Outcome.MASK else h
            for h in decision.hits]
    outcome = max((h.outcome for h in hits), default=Outcome.ALLOW,
                  key=[Outcome.ALLOW, Outcome.FLAG, Outcome.MASK, Outcome.BLOCK].index)
    return Decision(decision.direction, outcome, hits, [])


@dataclass
class Scored:
    """What the classifier said of an answer's pictures, by their place in `data`."""

    decisions: dict[int, Decision] = field(default_factory=dict)
    unseen: list[int] = field(default_factory=list)  # a url, or no b64_json
    undecodable: list[int] = field(default_factory=list)  # b64_json that is no picture

    @property
    def blocking(self) -> list[Hit]:
        return [h for d in self.decisions.values() for h in d.blocking]


async def score(entries: list[bytes | None], moderator: ImageModerator,
                moderation: Moderation, *, every: bool = True) -> Scored:
    """Every visible picture scored in one call. A picture that does not decode is set aside and
    the rest scored again (`every`), or scoring stops there (fail mode Closed refuses anyway).
    Raises ModeratorUnavailable."""
    scored = Scored(unseen=[i for i, e in enumerate(entries) if e is None])
    pending = [i for i, e in enumerate(entries) if e is not None]
    while pending:
        try:
            found = await moderator.moderate_images([e for i in pending
                                                     if (e := entries[i]) is not None])
        except UndecodableImage as bad:
            scored.undecodable.append(pending.pop(bad.index))
            if not every:
                break
            continue
        scored.decisions = {i: as_picture(decide(f, moderation, Direction.OUTPUT))
                            for i, f in zip(pending, found, strict=True)}
        break
    return scored


def _where(indices: list[int]) -> str:
    return ", ".join(f"data[{i}]" for i in indices)


def check_request(sidecar: Sidecar, body: dict[str, Any]) -> None:
    """Before the model is called: an images request whose pictures could not be served is
    refused without spending the GPU on them (fail mode Closed). Raises BadRequest."""
    config = sidecar.config
    if not config.moderation.output.enabled or config.fail_open:
        return
    if config.moderation.images is None:
        raise BadRequest("hegui.image_moderation_undeclared",
                         f"this service declares no image classifier ({FIELD}) and its fail "
                         "mode is Closed: generated pictures cannot be moderated, so none are "
                         "served (Art.4, Art.14); the provider declares one in "
                         f"{FIELD}.model", 503)
    if body.get("response_format") == "url":
        raise BadRequest("hegui.image_not_moderatable",
                         "pictures answered as a url cannot be moderated by the sidecar, so "
                         "they are not served (Art.14); ask with response_format: b64_json")


async def _unmoderated(sidecar: Sidecar, headers: dict[str, str], user: str | None,
                       reason: str, entries: list[int] | None = None) -> None:
    headers["x-hegui-output"] = "unmoderated"
    fields: dict[str, Any] = {"entries": [f"data[{i}]" for i in entries]} if entries else {}
    await sidecar.record("unmoderated", user=user, direction="output", route=ROUTE,
                         article="Art.14", reason=reason, **fields)


async def moderate_pictures(sidecar: Sidecar, body: Any, headers: dict[str, str],
                            user: str | None) -> web.Response | None:
    """The pictures of an images answer moderated: a refusal to send instead of the answer, or
    None to serve it (with `headers` saying what was not moderated). Raises ModerationDown (the
    classifier down, fail mode Closed) and BadRequest."""
    entries = answer_images(body)
    if not entries:
        return None
    config = sidecar.config
    moderator = sidecar.image_classifiers.for_posture(config.moderation,
                                                      config.moderation_timeout)
    if moderator is None:  # Closed never gets here (check_request); served flagged in Open
        if not config.fail_open:
            check_request(sidecar, {})
        await _unmoderated(sidecar, headers, user,
                           f"no image classifier declared ({FIELD}), fail mode Open")
        return None
    scored = Scored(unseen=[i for i, e in enumerate(entries) if e is None])
    if scored.unseen and not config.fail_open:
        # Not scored at all: the answer is refused whatever the others are.
        return error_response(
            422, "hegui.image_not_moderatable",
            f"{_where(scored.unseen)} of the model's answer cannot be moderated (a url, or no "
            "picture), so the answer is not served (Art.14); ask with response_format: "
            "b64_json", direction="output")
    metrics = sidecar.metrics
    try:
        scored = await score(entries, moderator, config.moderation, every=config.fail_open)
    except ModeratorUnavailable as failure:
        metrics.moderator_errors.labels(Direction.OUTPUT.value).inc()
        mode = "Open" if config.fail_open else "Closed"
        metrics.fail_mode.labels(mode, Direction.OUTPUT.value).inc()
        log.warning("image classifier unreachable (%s), fail mode %s (Art.14)", failure, mode)
        if not config.fail_open:
            raise ModerationDown(f"image classifier: {failure}") from failure
        headers["x-hegui-moderation"] = "unavailable"
        await _unmoderated(sidecar, headers, user,
                           "image classifier unavailable, fail mode Open")
        return None
    for decision in scored.decisions.values():
        for hit in decision.hits:
            metrics.decisions.labels(hit.outcome.value, hit.category,
                                     Direction.OUTPUT.value).inc()
            if hit.outcome is Outcome.BLOCK:
                metrics.incidents.labels(config.service, Direction.OUTPUT.value).inc()
    if blocked := scored.blocking:
        categories, reference = await sidecar._record_block(blocked, "output", ROUTE, user)
        return error_response(
            451, "hegui.output_blocked", "the model's answer was withheld by content "
            "moderation: a generated picture is prohibited", article=blocked[0].article,
            direction="output", categories=categories, reference=reference)
    if scored.undecodable and not config.fail_open:
        raise BadRequest("hegui.upstream_malformed",
                         f"{_where(scored.undecodable)} of the model's answer is not a picture "
                         "the sidecar can decode, so it cannot be moderated and the answer is "
                         "not served (Art.14)", 502)
    if unseen := sorted(scored.unseen + scored.undecodable):
        await _unmoderated(sidecar, headers, user,
                           "pictures the sidecar cannot see (a url or no decodable picture), "
                           "fail mode Open", unseen)
    return None


__all__ = ["ImageClassifiers", "ImageModerator", "Scored", "as_picture", "check_request",
           "moderate_pictures", "score"]
