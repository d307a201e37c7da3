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

from hegui.moderation.findings import INPUT_NAME, OUTPUT_NAME, lexicon_findings  # noqa: E402
from hegui.moderation.lexicon import LexiconStore  # noqa: E402
from hegui.moderation.triton_backend import findings_batch  # noqa: E402


def _parameter(config: dict[str, Any], name: str) -> str:
    return str(config.get("parameters", {}).get(name, {}).get("string_value", ""))


class TritonPythonModel:
    store: LexiconStore

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        # The chart mounts the provider's lexicon ConfigMaps and names them in
        # HEGUI_LEXICON_DIR (triton.lexicon.configMaps); the parameter, when set, wins.
        folder = _parameter(config, "lexicon_dir") or os.environ.get("HEGUI_LEXICON_DIR", "")
        self.store = LexiconStore((Path(folder),) if folder else ())
        # A provider's lexicon update (a ConfigMap change) is picked up without a restart: the
        # new lexicon is built beside the old one and swapped in whole between two batches.
        self.store.watch(float(_parameter(config, "reload_seconds") or 10))

    def execute(self, requests: list[Any]) -> list[Any]:
        lexicon = self.store.lexicon  # one version for the whole batch
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
            OUTPUT_NAME,
            findings_batch(pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy(),
                           lambda text: lexicon_findings(lexicon, text)))]) for r in requests]

    def finalize(self) -> None:
        self.store.stop()
