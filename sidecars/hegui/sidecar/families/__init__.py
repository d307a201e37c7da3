"""The API families the sidecar fronts, one module each (Art.4, Art.14): where the text is in
each family's requests, answers and stream events. The route table (`hegui.sidecar.routes`)
maps paths to these names; the names are also the `route` label of the sidecar's metrics.

Generation (moderated both ways): chat, completions, responses (OpenAI); messages (Anthropic);
tgi (TGI and SGLang `/generate`); ollama_chat, ollama_generate; triton_generate, triton_infer;
invocations (SageMaker, by body shape); images (prompt only). Embeddings, tokenize and metadata
carry no generated text and are relayed (`hegui.sidecar.routes.Kind`).
"""

from __future__ import annotations

from hegui.sidecar.families.anthropic_messages import MESSAGES
from hegui.sidecar.families.base import Family
from hegui.sidecar.families.images import IMAGES
from hegui.sidecar.families.invocations import INVOCATIONS
from hegui.sidecar.families.ollama import OLLAMA_CHAT, OLLAMA_GENERATE
from hegui.sidecar.families.openai_chat import CHAT
from hegui.sidecar.families.openai_completions import COMPLETIONS
from hegui.sidecar.families.openai_responses import RESPONSES
from hegui.sidecar.families.tgi import TGI
from hegui.sidecar.families.triton import TRITON_GENERATE, TRITON_INFER

FAMILIES: dict[str, Family] = {f.name: f for f in (
    CHAT, COMPLETIONS, RESPONSES, MESSAGES, TGI, OLLAMA_CHAT, OLLAMA_GENERATE, TRITON_GENERATE,
    TRITON_INFER, INVOCATIONS, IMAGES)}
#: Families that generate text (declared routes may name only these, see routes.py).
GENERATION = frozenset(FAMILIES)


def get(name: str) -> Family:
    return FAMILIES[name]


__all__ = ["FAMILIES", "GENERATION", "Family", "get"]
