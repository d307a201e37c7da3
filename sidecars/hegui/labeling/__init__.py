"""Labeling of generated content (Art.12 of the Interim Measures, the Measures for Labeling
AI-Generated Synthetic Content and GB 45438-2025): explicit labels people perceive, implicit
AIGC metadata labels, and `hegui label verify`. Pure functions the labeling sidecar calls.

- `hegui.labeling.metadata`: the AIGC payload (GB 45438-2025's seven fields), ProduceIDs.
- `hegui.labeling.text`: plain text, OpenAI-compatible JSON and SSE streams.
- `hegui.labeling.image`: PNG, JPEG, WebP (bytes or base64 in images/generations).
- `hegui.labeling.verify`: which labels a file carries; the `label verify` command.
"""

from hegui.labeling.metadata import (
    AIGC_KEY,
    HEADER,
    AigcLabel,
    LabelValue,
    MetadataError,
    new_label,
    new_produce_id,
)

__all__ = ["AIGC_KEY", "HEADER", "AigcLabel", "LabelValue", "MetadataError", "new_label",
           "new_produce_id"]
