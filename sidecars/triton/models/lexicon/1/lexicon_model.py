"""Triton Python-backend model `lexicon`: hegui.moderation.lexicon, served (Art.4(1), Art.14).

The rule lives in hegui.moderation, so the unit tests and the served model run the same code;
`hegui` must be importable by the backend stub (HEGUI_TRITON_PYTHONPATH). The file is not
called model.py (config.pbtxt names it) so that each model file has its own module name for mypy.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

# The stub runs its embedded interpreter isolated from PYTHONPATH, so the launcher passes the
# import path (where hegui and numpy are) in HEGUI_TRITON_PYTHONPATH.
sys.path[:0] = [p for p in os.environ.get("HEGUI_TRITON_PYTHONPATH", "").split(os.pathsep)
                if p and p not in sys.path]

import triton_python_backend_utils as pb_utils  # noqa: E402

from hegui.moderation.findings import INPUT_NAME, OUTPUT_NAME, Findings, lexicon_findings  # noqa: E402
from hegui.moderation.lexicon import Lexicon, load_lexicon  # noqa: E402
from hegui.moderation.triton_backend import findings_batch  # noqa: E402


class TritonPythonModel:
    lexicon: Lexicon

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        folder = config.get("parameters", {}).get("lexicon_dir", {}).get("string_value", "")
        self.lexicon = load_lexicon(Path(folder)) if folder else load_lexicon()

    def _rule(self, text: str) -> Findings:
        return lexicon_findings(self.lexicon, text)

    def execute(self, requests: list[Any]) -> list[Any]:
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
            OUTPUT_NAME,
            findings_batch(pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy(),
                           self._rule))]) for r in requests]
