"""hegui.api refuses each object of samples/compliance/invalid/cases.yaml, naming the field.

tests/integration/test_crds.py holds the apiserver to the same cases, so the models and the CRDs
refuse the same objects.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hegui.api import KINDS, field_errors
from hegui.api.testing import InvalidCase, invalid_cases

CASES = invalid_cases()


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 15
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_models_refuse_naming_the_field(case: InvalidCase) -> None:
    model = KINDS[case.document["kind"]]
    with pytest.raises(ValidationError) as raised:
        model.from_dict(case.document)
    errors = field_errors(raised.value)
    assert any(error.path.startswith(case.field) for error in errors), (
        f"no error names {case.field}: {[str(e) for e in errors]}")
