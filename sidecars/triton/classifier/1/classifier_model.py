"""Triton Python-backend model `classifier`: hegui.moderation.classifier, served (Art.4(1)).

Loads model.pt and labels.json from this version directory and scores each dynamic batch in
one forward pass. `hegui`, numpy and torch must be importable by the backend stub
(HEGUI_TRITON_PYTHONPATH). Named apart from model.py so each model file has its own module name.
"""

import os
import sys
from pathlib import Path
from typing import Any

# The stub runs its embedded interpreter isolated from PYTHONPATH, so the launcher passes the
# import path (where hegui, numpy and torch are) in HEGUI_TRITON_PYTHONPATH.
sys.path[:0] = [p for p in os.environ.get("HEGUI_TRITON_PYTHONPATH", "").split(os.pathsep)
                if p and p not in sys.path]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from hegui.moderation.classifier import Classifier  # noqa: E402
from hegui.moderation.findings import INPUT_NAME, OUTPUT_NAME  # noqa: E402
from hegui.moderation.triton_backend import decode  # noqa: E402


class TritonPythonModel:
    classifier: Classifier

    def initialize(self, args: dict[str, str]) -> None:
        self.classifier = Classifier(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy() for r in requests]
        texts = [decode(row[0]) for batch in batches for row in batch.reshape(len(batch), -1)]
        findings = iter(self.classifier.findings(texts))
        responses = []
        for batch in batches:
            out = np.array([[next(findings).to_json()] for _ in range(len(batch))],
                           dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(OUTPUT_NAME, out)]))
        return responses
