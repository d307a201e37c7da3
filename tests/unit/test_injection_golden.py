"""Golden files for sidecar injection (Art.14): the pod in, the pod out.

Each `tests/unit/golden/injection/<case>.in.yaml` holds what injection is given: the
CompliancePolicy (`policy`), the GenerativeService's name (`service`) and, where the case needs
it, the GenerativeService itself (`posture`: its Secrets, its open ports), and the incoming
`pod`. `<case>.out.yaml` holds what the webhook makes of it: the pod after the JSON patch, and
the warnings the team sees (`pod`, `warnings`), or the refusal (`conflict`). Every `.in.yaml`
is picked up: a new case is a new file.

Refresh the outputs after an intended change, then read the diff before committing it:

    HEGUI_REFRESH_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider \\
        tests/unit/test_injection_golden.py

(writes every `<case>.out.yaml` from what injection does now, and deletes outputs whose
input is gone). Without it, a difference fails the test.

Beyond the output itself, each case checks that the patch is the difference between the pod
and the rendered pod (`render`, `json_patch`), that injecting the output again changes nothing
(idempotence), and that injection leaves its input unchanged.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from hegui.admission.injection import (
    InjectionConflict,
    carries_sidecar,
    inject,
    json_patch,
    render,
)
from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import CompliancePolicy

GOLDEN = Path(__file__).parent / "golden" / "injection"
REFRESH = os.environ.get("HEGUI_REFRESH_GOLDEN", "") not in ("", "0")
CASES = sorted(path.name.removesuffix(".in.yaml") for path in GOLDEN.glob("*.in.yaml"))
HEADER = ("# The pod {case}.in.yaml becomes under injection (or its refusal). Written by\n"
          "# HEGUI_REFRESH_GOLDEN=1 pytest tests/unit/test_injection_golden.py: do not edit.\n")


def _load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{path}: a mapping"
    return loaded


def _outcome(given: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What injection makes of the case: the golden output's content, and the patch."""
    policy = CompliancePolicy.from_dict(given["policy"])
    posture = GenerativeService.from_dict(given["posture"]) if "posture" in given else None
    pod = given["pod"]
    try:
        injection = inject(pod, policy, given["service"], posture)
    except InjectionConflict as conflict:
        return {"conflict": str(conflict)}, []
    patched = jsonpatch.apply_patch(json.loads(json.dumps(pod)), injection.patch)
    return {"warnings": injection.warnings, "pod": patched}, injection.patch


@pytest.mark.parametrize("case", CASES)
def test_injection_renders_the_golden_pod(case: str) -> None:
    given = _load(GOLDEN / f"{case}.in.yaml")
    pristine = copy.deepcopy(given)
    got, patch = _outcome(given)
    assert given == pristine, "injection changed the pod it was given"
    out = GOLDEN / f"{case}.out.yaml"
    if REFRESH:
        plain = json.loads(json.dumps(got))  # no YAML anchors where the pod shares a value
        out.write_text(HEADER.format(case=case) + yaml.safe_dump(
            plain, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    assert out.exists(), (f"{out.name} is missing: write it with HEGUI_REFRESH_GOLDEN=1 and "
                          "review it")
    assert got == _load(out), (f"injection no longer renders {out.name}; if intended, refresh "
                               "with HEGUI_REFRESH_GOLDEN=1 and review the diff")
    if "conflict" in got:
        return
    policy = CompliancePolicy.from_dict(given["policy"])
    posture = GenerativeService.from_dict(given["posture"]) if "posture" in given else None
    # The patch is exactly the difference between the pod and the rendered one.
    rendered = render(given["pod"], policy, given["service"], posture)
    assert rendered.pod == got["pod"]
    assert json_patch(given["pod"], rendered.pod) == patch
    if got["pod"] == given["pod"]:
        assert patch == [], "a pod injection leaves as it is gets an empty patch"
    # Once is enough: the injected pod is left alone, without a word.
    again = inject(got["pod"], policy, given["service"], posture)
    assert again.patch == [] and again.warnings == []
    # And it is what the operator and the validating webhook count as carrying the sidecar:
    # the injector labels it fronted, and the webhook admits that label only on such a pod.
    assert policy.spec.sidecar is not None
    assert carries_sidecar(got["pod"], policy.spec.sidecar, given["service"], posture,
                           any_image=False)


def test_every_golden_output_has_its_input() -> None:
    stale = [path for path in GOLDEN.glob("*.out.yaml")
             if path.name.removesuffix(".out.yaml") not in CASES]
    if REFRESH:
        for path in stale:
            path.unlink()
        stale = []
    assert not stale, f"outputs without an input (delete them): {[p.name for p in stale]}"
    assert len(CASES) >= 10
