"""hegui's API (group hegui.io, version v1alpha1): pydantic models from which the CRDs in crds/
are generated (`hegui crds generate`), and which the admission webhook, the operator and the CLI
use to read the same objects.

Read objects with `Kind.from_dict(data)` (a dict from YAML or the apiserver), write them with
`obj.to_dict()`. Validation is as strict as the apiserver's: types are not coerced ("1" is not an
integer), unknown fields are rejected, and the cross-field rules are the CRDs' CEL rules.
"""

from hegui.api.articles import Rule
from hegui.api.assessment import SafetyAssessment
from hegui.api.common import API_VERSION, GROUP, VERSION, ApiObject, FieldError, field_errors
from hegui.api.exception import ComplianceException
from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import CompliancePolicy, EnforcementMode
from hegui.api.suspension import ResumeRequest, SuspensionOrder

KINDS: dict[str, type[ApiObject]] = {
    model.model_fields["kind"].default: model
    for model in (GenerativeService, CompliancePolicy, ComplianceException, SafetyAssessment,
                  SuspensionOrder, ResumeRequest)
}

__all__ = [
    "API_VERSION", "GROUP", "KINDS", "VERSION", "ApiObject", "ComplianceException",
    "CompliancePolicy", "EnforcementMode", "FieldError", "GenerativeService", "ResumeRequest",
    "Rule", "SafetyAssessment", "SuspensionOrder", "field_errors",
]
