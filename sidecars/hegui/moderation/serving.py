"""Triton Python-backend models of hegui's classifiers (Art.4): what the `classifier_model.py` of
each exported version directory runs (hegui.moderation.classifier writes it).

Each `execute` gets every request of one dynamic batch, possibly from several sidecars, and runs
them through the model in one forward pass. `triton_python_backend_utils` exists only inside
Triton's backend stub, so it is imported there, when a model is initialised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hegui.moderation.classifier import IMAGE_INPUT, Classifier, ImageClassifier
from hegui.moderation.findings import INPUT_NAME, OUTPUT_NAME, Findings
from hegui.moderation.triton_backend import decode


def _responses(pb_utils: Any, sizes: list[int], findings: list[Findings]) -> list[Any]:
    rows = iter(findings)
    responses = []
    for size in sizes:
        out = np.array([[next(rows).to_json()] for _ in range(size)], dtype=np.object_)
        responses.append(pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(OUTPUT_NAME, out)]))
    return responses


class TextClassifierModel:
    """`TEXT` ([batch, 1] bytes) in, `FINDINGS` out."""

    classifier: Classifier
    pb_utils: Any

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        self.classifier = Classifier(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [self.pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy()
                   for r in requests]
        texts = [decode(row[0]) for batch in batches for row in batch.reshape(len(batch), -1)]
        return _responses(self.pb_utils, [len(b) for b in batches],
                          self.classifier.findings(texts))


class ImageClassifierModel:
    """`IMAGE` ([batch, S, S, 3] uint8) in, `FINDINGS` out."""

    classifier: ImageClassifier
    pb_utils: Any

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        self.classifier = ImageClassifier(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [self.pb_utils.get_input_tensor_by_name(r, IMAGE_INPUT).as_numpy()
                   for r in requests]
        return _responses(self.pb_utils, [len(b) for b in batches],
                          self.classifier.findings(np.concatenate(batches)))
