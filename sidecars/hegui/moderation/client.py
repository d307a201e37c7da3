"""The sidecar's moderators: the cheap rules in-process, the neural classifier in Triton.

`RulesModerator` runs the keyword lexicon and personal-information rules in the sidecar's own
process: they cost microseconds a text, far less than a network hop to Triton per streamed window,
and they are the same code the Triton `lexicon` and `pii` models run (hegui.moderation.findings).
`CombinedModerator` adds a Triton model, the neural classifier, batched across streams and
sidecars by Triton's dynamic batcher; its findings are merged with the rules'.

`TritonModerator` is the client of the moderation models in Triton (async gRPC or HTTP).

Any model whose outputs are named `FINDINGS` or `FINDINGS_*` (hegui/moderation/findings.py) can be
called: a single model (`lexicon`, `pii`) or the `moderation` ensemble that runs them all. Texts
sent together go as one batch; concurrent callers are batched by Triton's dynamic batcher.
Every failure (connection refused, timeout, a server error) is raised as `ModeratorUnavailable`,
on which the sidecar applies the declared fail mode (Art.14).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hegui.api.generativeservice import TritonEndpoint, TritonProtocol
from hegui.moderation import pii
from hegui.moderation.classifier import IMAGE_INPUT
from hegui.moderation.findings import (
    INPUT_NAME,
    OUTPUT_NAME,
    Findings,
    lexicon_findings,
    pii_findings,
)
from hegui.moderation.lexicon import Lexicon, LexiconStore, load_lexicon

#: Triton models that run only the rules RulesModerator runs in-process (no classifier).
RULE_MODELS = frozenset({"moderation", "lexicon", "pii"})

# Personal information hegui masks is a number (a digit, full-width or a Chinese numeral) or an
# address (an @, a full-width one, 艾特 or a bracketed "at"): a text with none of these has none,
# and costs one regular-expression search instead of the detectors (the hot path of every
# streamed token). pii.may_contain_pii replaces this when pii.py offers it.
_MAY_HOLD = re.compile("[\\d@\uff20" + "".join(getattr(pii, "NUMERALS", {}))
                       + "]|艾特|[\\[({<\u3010\uff08\u3014\u300c]\\s*at", re.IGNORECASE)
may_contain_pii: Callable[[str], bool] = getattr(
    pii, "may_contain_pii", lambda text: _MAY_HOLD.search(text) is not None)


def personal_information(text: str) -> Findings:
    """`pii_findings`, skipped for a text that cannot hold personal information."""
    return pii_findings(text) if may_contain_pii(text) else Findings()


#: The rules' verdict is a function of the text and the lexicon: a short text found clean is not
#: scanned again (`RulesModerator.findings`), at most this many kept.
_CLEAN_CHARS = 128
_CLEAN_TEXTS = 8192
#: Characters a moderation call scans on the event loop (~3 ms here); longer: off the loop.
_INLINE_CHARS = 2048


class ModeratorUnavailable(Exception):
    """The moderation model could not be asked: Triton down, slow or failing."""


class Moderator(Protocol):
    async def moderate(self, texts: list[str]) -> list[Findings]: ...

    async def close(self) -> None: ...


class RulesModerator:
    """The lexicon and personal-information rules, in-process (no network hop, Art.4, Art.14).
    With a LexiconStore the keyword list follows its files (a ConfigMap update) while running."""

    def __init__(self, lexicon: Lexicon | LexiconStore | None = None) -> None:
        self.store = lexicon if isinstance(lexicon, LexiconStore) else None
        self._lexicon = lexicon if isinstance(lexicon, Lexicon) else None
        if self.store is None and self._lexicon is None:
            self._lexicon = load_lexicon()
        # Short texts found clean, for the lexicon they were checked with: headers, model names,
        # roles, ids repeat on every request and stream event (bench/streaming.py).
        self._clean: set[str] = set()
        self._clean_for: Lexicon | None = None
        self._scanner: ThreadPoolExecutor | None = None
        # The rules load their tables on first use (hundreds of ms): at start, not on the
        # first user's request.
        self.findings("预热 warm-up 13800138000 a@example.com 一三八")

    @property
    def lexicon(self) -> Lexicon:
        """The keyword list in force (taken once per text: a reload swaps it whole)."""
        if self.store is not None:
            return self.store.lexicon
        assert self._lexicon is not None
        return self._lexicon

    def findings(self, text: str) -> Findings:
        lexicon = self.lexicon
        short = len(text) <= _CLEAN_CHARS
        if short:
            if self._clean_for is not lexicon:  # reloaded: what was clean is checked again
                self._clean, self._clean_for = set(), lexicon
            elif text in self._clean:
                return Findings()
        found = lexicon_findings(lexicon, text).merge(personal_information(text))
        # Only for the lexicon it was checked with: a reload (in another thread) between the
        # scan and here must not mark a text clean under the new list.
        if short and not found.scores and not found.spans and self._clean_for is lexicon:
            if len(self._clean) >= _CLEAN_TEXTS:  # bounded: a client sending new texts forever
                self._clean.clear()
            self._clean.add(text)
        return found

    async def moderate(self, texts: list[str]) -> list[Findings]:
        if sum(map(len, texts)) <= _INLINE_CHARS:
            return [self.findings(t) for t in texts]
        # A long prompt (a RAG context: 100 ms at 32k characters) scanned on the event loop
        # would stop every other stream's tokens as long: in one thread of its own, where the
        # interpreter's switch interval (5 ms) bounds the loop's wait. One thread: long scans
        # queue rather than share the interpreter with the loop ever more thinly.
        if self._scanner is None:
            self._scanner = ThreadPoolExecutor(1, thread_name_prefix="hegui-rules")
        return await asyncio.get_running_loop().run_in_executor(
            self._scanner, lambda: [self.findings(t) for t in texts])

    async def close(self) -> None:
        if self._scanner is not None:
            self._scanner.shutdown(wait=False, cancel_futures=True)
            self._scanner = None


class CombinedModerator:
    """The rules in-process plus a Triton model (the neural classifier), findings merged. The
    Triton call is the only one that can fail (`ModeratorUnavailable`, the fail mode applies)."""

    def __init__(self, rules: RulesModerator, model: Moderator) -> None:
        self.rules, self.model = rules, model

    async def moderate(self, texts: list[str]) -> list[Findings]:
        if not texts:
            return []
        remote = await self.model.moderate(texts)
        rules = await self.rules.moderate(texts)
        return [mine.merge(found) for mine, found in zip(rules, remote, strict=True)]

    async def close(self) -> None:
        await self.rules.close()
        await self.model.close()


#: Texts an infer call carries when the model's config does not say (hegui's models: 64).
DEFAULT_MAX_BATCH = 64


class TritonModerator:
    """Moderation through Triton; one client (connection pool) per sidecar."""

    def __init__(self, endpoint: TritonEndpoint, timeout: float = 2.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._client: Any = None
        self._module: Any = None
        self._outputs: list[str] | None = None
        self._batch = DEFAULT_MAX_BATCH

    def _connect(self) -> Any:
        if self._client is None:
            if self.endpoint.protocol == TritonProtocol.GRPC:
                import tritonclient.grpc.aio as module
            else:
                import tritonclient.http.aio as module
            self._module = module
            self._client = module.InferenceServerClient(self.endpoint.address)
        return self._client

    async def _output_names(self, client: Any) -> list[str]:
        if self._outputs is None:
            if self.endpoint.protocol == TritonProtocol.GRPC:
                meta = await client.get_model_metadata(self.endpoint.model,
                                                       self.endpoint.model_version, as_json=True)
            else:
                meta = await client.get_model_metadata(self.endpoint.model,
                                                       self.endpoint.model_version)
            names = [str(o["name"]) for o in meta["outputs"]]
            self._batch = await self._max_batch(client)
            self._outputs = [n for n in names if n == OUTPUT_NAME or n.startswith("FINDINGS_")]
        return self._outputs

    async def _max_batch(self, client: Any) -> int:
        """The model's max_batch_size: more texts than this in one infer call are refused by
        Triton, so a request of many messages would read as Triton failing (Art.13's SLI
        against the service, or unmoderated under fail mode Open)."""
        if self.endpoint.protocol == TritonProtocol.GRPC:
            config = await client.get_model_config(self.endpoint.model,
                                                   self.endpoint.model_version, as_json=True)
        else:
            config = await client.get_model_config(self.endpoint.model,
                                                   self.endpoint.model_version)
        config = config.get("config", config) if isinstance(config, dict) else {}
        size = int(config.get("max_batch_size") or config.get("maxBatchSize") or 0)
        return size if size > 0 else DEFAULT_MAX_BATCH

    async def _infer(self, texts: list[str]) -> list[Findings]:
        client = self._connect()
        outputs = await self._output_names(client)
        data = np.array([[t.encode("utf-8", "replace")] for t in texts], dtype=np.object_)
        tensor = self._module.InferInput(INPUT_NAME, [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(data)
        result = await client.infer(
            self.endpoint.model, [tensor], model_version=self.endpoint.model_version,
            outputs=[self._module.InferRequestedOutput(n) for n in outputs])
        merged = [Findings() for _ in texts]
        for name in outputs:
            rows = result.as_numpy(name)
            for index in range(len(texts)):
                merged[index] = merged[index].merge(Findings.from_json(rows[index][0]))
        return merged

    async def _batched(self, texts: list[str]) -> list[Findings]:
        """At most the model's max_batch_size texts an infer call, the calls concurrent."""
        await self._output_names(self._connect())
        size = self._batch
        if len(texts) <= size:
            return await self._infer(texts)
        parts = await asyncio.gather(*(self._infer(texts[i:i + size])
                                       for i in range(0, len(texts), size)))
        return [found for part in parts for found in part]

    async def moderate(self, texts: list[str]) -> list[Findings]:
        if not texts:
            return []
        try:
            return await asyncio.wait_for(self._batched(texts), self.timeout)
        except ModeratorUnavailable:
            raise
        except Exception as error:  # any failure of the moderator is a fail-mode event
            # The connection may be broken for good (Triton restarted): start afresh next time.
            await self.close()
            raise ModeratorUnavailable(f"{type(error).__name__}: {error}") from error

    async def close(self) -> None:
        client, self._client, self._outputs = self._client, None, None
        if client is not None:
            # Closing a broken client must not hide the error that broke it.
            with contextlib.suppress(Exception):
                await client.close()


class UndecodableImage(ValueError):
    """An image the model's output holds cannot be decoded (not a fault of the moderator);
    `index` is its place in the batch asked."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


class TritonImageModerator:
    """An image classifier served by Triton (hegui.moderation.classifier's image contract): each
    image is decoded, made RGB and resized to the model's input size, and the batch is scored in
    one request. Failures raise `ModeratorUnavailable`, as for text; an image that cannot be
    decoded raises UndecodableImage."""

    def __init__(self, endpoint: TritonEndpoint, timeout: float = 5.0) -> None:
        self.text = TritonModerator(endpoint, timeout)  # the connection and its life cycle
        self._size: int | None = None

    async def _input_size(self, client: Any) -> int:
        if self._size is None:
            endpoint = self.text.endpoint
            if endpoint.protocol == TritonProtocol.GRPC:
                meta = await client.get_model_metadata(endpoint.model, endpoint.model_version,
                                                       as_json=True)
            else:
                meta = await client.get_model_metadata(endpoint.model, endpoint.model_version)
            tensor = next(t for t in meta["inputs"] if t["name"] == IMAGE_INPUT)
            self._size = int(tensor["shape"][-2])
        return self._size

    @staticmethod
    def pixels(images: list[bytes], size: int) -> npt.NDArray[np.uint8]:
        """uint8 [batch, size, size, 3]: what the model takes."""
        import io

        from PIL import Image, UnidentifiedImageError

        rows = []
        for index, data in enumerate(images):
            try:
                with Image.open(io.BytesIO(data)) as image:
                    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                    rows.append(np.asarray(rgb, dtype=np.uint8))
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError,
                    ValueError) as error:  # a bomb is the picture's fault, not the moderator's
                raise UndecodableImage(f"image {index}: not a decodable image ({error})",
                                       index) from None
        return np.stack(rows)

    async def _infer(self, images: list[bytes]) -> list[Findings]:
        client = self.text._connect()
        module = self.text._module
        size = await self._input_size(client)
        # Decoding and resizing pictures is CPU work: off the event loop the streams share.
        data = await asyncio.to_thread(self.pixels, images, size)
        tensor = module.InferInput(IMAGE_INPUT, list(data.shape), "UINT8")
        tensor.set_data_from_numpy(data)
        endpoint = self.text.endpoint
        result = await client.infer(endpoint.model, [tensor], model_version=endpoint.model_version,
                                    outputs=[module.InferRequestedOutput(OUTPUT_NAME)])
        rows = result.as_numpy(OUTPUT_NAME)
        return [Findings.from_json(rows[i][0]) for i in range(len(images))]

    async def moderate_images(self, images: list[bytes]) -> list[Findings]:
        if not images:
            return []
        try:
            return await asyncio.wait_for(self._infer(images), self.text.timeout)
        except (ModeratorUnavailable, UndecodableImage):
            raise
        except Exception as error:  # any failure of the moderator is a fail-mode event
            await self.close()
            raise ModeratorUnavailable(f"{type(error).__name__}: {error}") from error

    async def close(self) -> None:
        self._size = None
        await self.text.close()


def answer_images(body: Any) -> list[bytes | None]:
    """The pictures of an OpenAI images answer (`data[].b64_json`), in order, for
    `TritonImageModerator`: None for an entry the sidecar cannot see (a `url`, or base64 that does
    not decode), which the caller must treat as unmoderated, never as clean."""
    import base64
    import binascii

    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return []
    found: list[bytes | None] = []
    for entry in data:
        encoded = entry.get("b64_json") if isinstance(entry, dict) else None
        try:
            found.append(base64.b64decode(encoded, validate=True)
                         if isinstance(encoded, str) and encoded else None)
        except (binascii.Error, ValueError):
            found.append(None)
    return found
