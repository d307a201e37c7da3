"""Triton Python-backend model `pii`: hegui.moderation.pii, served (Art.4(4)).

The rule lives in hegui.moderation, so the unit tests and the served model run the same code;
`hegui` must be importable by the backend stub (HEGUI_TRITON_PYTHONPATH). The file is not
called model.py (config.pbtxt names it) so that each model file has its own module name for mypy.
"""

import os
import sys
from typing import Any

# The stub runs its embedded interpreter isolated from PYTHONPATH, so the launcher passes the
# import path (where hegui and numpy are) in HEGUI_TRITON_PYTHONPATH.
sys.path[:0] = [p for p in os.environ.get("HEGUI_TRITON_PYTHONPATH", "").split(os.pathsep)
                if p and p not in sys.path]

import triton_python_backend_utils as pb_utils  # noqa: E402

from hegui.moderation.findings import INPUT_NAME, OUTPUT_NAME, pii_findings  # noqa: E402
from hegui.moderation.triton_backend import findings_batch  # noqa: E402


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
            OUTPUT_NAME,
            findings_batch(pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy(),
                           pii_findings))]) for r in requests]
