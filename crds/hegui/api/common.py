"""Building blocks shared by hegui's kinds: the base model, cross-field rules, bounded types.

Unknown fields are **rejected**, not pruned. Every model forbids extra fields (`extra="forbid"`),
and the apiserver, which prunes unknown fields from a structural schema when a client does not ask
otherwise, rejects them whenever the client asks for strict field validation, which `kubectl`
does by default (`--validate=strict`): a misspelt `publicOpnion: true` must fail loudly, never be
dropped silently and leave a service outside Art.17 scope. Clients that send objects with the
default `fieldValidation=Warn` get the apiserver's pruning plus a warning, which is why clients
that must not lose a field (hegui's operator and CLI) should send `Strict`. Nulls are the one
exception, on both sides: the apiserver prunes a `null` field before defaulting, and
`ApiModel.from_dict` drops `None` values the same way before validating, so `field: null` means
"absent" everywhere.

Cross-field rules are declared once, with `@cel_rule`, as a CEL expression for the apiserver
(`x-kubernetes-validations`) next to its Python twin, so both sides refuse the same objects with
the same message; the tests hold them to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

from hegui.api.articles import ARTICLE_PATTERN

GROUP: Final = "hegui.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "hegui.io/v1alpha1"  # a literal, so that mypy sees the Literal type
assert f"{GROUP}/{VERSION}" == API_VERSION

# --- cross-field rules -------------------------------------------------------------------------

CelReason = Literal["FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden",
                    "FieldValueDuplicate"]


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry. `field_path` (e.g. `.filing.algorithm`) makes the
    apiserver report the error on that field instead of on the object that holds the rule."""

    rule: str
    message: str
    field_path: str | None = None
    reason: CelReason | None = None

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


@dataclass(frozen=True)
class Violation:
    """A broken rule: `field` is relative to the object that checked it (`algorithm`, or `` for
    the object itself)."""

    field: str
    message: str


class RuleViolation(ValueError):
    """Raised by a model whose cross-field rules fail; carries every failed rule, not just one."""

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations = tuple(violations)
        super().__init__("; ".join(
            f"{v.field}: {v.message}" if v.field else v.message for v in self.violations))


_M = TypeVar("_M", bound="ApiModel")
_Check = Callable[[_M], bool]


def cel_rule(rule: str, message: str, *, field_path: str | None = None,
             reason: CelReason | None = None) -> Callable[[_Check[_M]], _Check[_M]]:
    """Declare a cross-field rule: the decorated method is its Python twin and returns whether
    the object satisfies it; `rule` is the same check in CEL for the apiserver."""

    def mark(check: _Check[_M]) -> _Check[_M]:
        check.__hegui_cel__ = CelRule(rule, message, field_path, reason)  # type: ignore[attr-defined]
        return check

    return mark


class ApiModel(BaseModel):
    """Base of every hegui API object: camelCase in YAML, snake_case in Python, unknown fields
    rejected, `None` meaning absent, cross-field rules checked on both sides."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        protected_namespaces=(),
    )

    #: Rules the apiserver checks with CEL and Python checks with the marked methods.
    __cel_checks__: ClassVar[tuple[tuple[CelRule, Callable[[Any], bool]], ...]] = ()
    #: Rules only the apiserver can check: transition rules that compare with the old object.
    __transition_rules__: ClassVar[tuple[CelRule, ...]] = ()
    #: Lists the apiserver keeps unique (x-kubernetes-list-type set or map): (field, alias, keys).
    __unique_lists__: ClassVar[tuple[tuple[str, str, tuple[str, ...]], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        checks: list[tuple[CelRule, Callable[[Any], bool]]] = []
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                rule = getattr(value, "__hegui_cel__", None)
                if isinstance(rule, CelRule):
                    checks.append((rule, value))
        cls.__cel_checks__ = tuple(checks)
        unique: list[tuple[str, str, tuple[str, ...]]] = []
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            list_type = extra.get("x-kubernetes-list-type")
            if list_type in ("set", "map"):
                keys = extra.get("x-kubernetes-list-map-keys", [])
                unique.append((name, info.alias or name,
                               tuple(str(k) for k in keys) if isinstance(keys, list) else ()))
        cls.__unique_lists__ = tuple(unique)

    @classmethod
    def cel_rules(cls) -> list[CelRule]:
        return [rule for rule, _ in cls.__cel_checks__] + list(cls.__transition_rules__)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: cs.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        target = handler.resolve_ref_schema(json_schema)
        rules = cls.cel_rules()
        if rules:
            target["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]
        return json_schema

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        failed = [Violation(rule.field_path.lstrip(".") if rule.field_path else "", rule.message)
                  for rule, check in type(self).__cel_checks__ if not check(self)]
        failed.extend(self._duplicates())
        if failed:
            raise RuleViolation(failed)
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Validate a dict from YAML or the apiserver as the apiserver would: through JSON, so
        that dates are strings and nothing is coerced ("1" is not an integer)."""
        return cls.model_validate_json(json.dumps(_drop_nulls(data), default=_json_default))

    def _duplicates(self) -> list[Violation]:
        # The apiserver refuses duplicates in set and map lists itself ("Duplicate value").
        found: list[Violation] = []
        for name, alias, keys in type(self).__unique_lists__:
            seen: set[object] = set()
            for index, item in enumerate(getattr(self, name)):
                if keys:
                    dumped = item.model_dump(mode="json", by_alias=True)
                    identity: object = tuple(dumped.get(key) for key in keys)
                    shown = ", ".join(f"{key}={dumped.get(key)}" for key in keys)
                else:
                    identity, shown = item, str(item)
                if identity in seen:
                    found.append(Violation(f"{alias}[{index}]", f"duplicate value: {shown}"))
                seen.add(identity)
        return found

    def to_dict(self) -> dict[str, Any]:
        """The object as the apiserver and YAML see it: camelCase keys, absent fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _drop_nulls(value: Any) -> Any:
    # The apiserver prunes null fields before defaulting; so does from_dict.
    if isinstance(value, Mapping):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_nulls(item) for item in value]
    return value


def rfc3339(moment: datetime, *, whole_seconds: bool = False) -> str:
    """A time as Kubernetes writes it (RFC 3339, UTC as "Z"); `whole_seconds` drops the
    fraction, as metav1.Time does (conditions, processedAt)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    if whole_seconds:
        moment = moment.replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _json_default(value: object) -> str:
    # YAML loads unquoted dates as date objects; kubectl sends them to the apiserver as strings.
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


# --- errors, as the apiserver would name them ----------------------------------------------------

@dataclass(frozen=True)
class FieldError:
    """One validation failure, with the field's path written as kubectl writes it
    (`spec.moderation.categories[0].threshold`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten a pydantic `ValidationError` into field paths and messages."""
    found: list[FieldError] = []
    for item in error.errors():
        path = prefix
        for part in item["loc"]:
            path = _join(path, part)
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolation):
            for violation in cause.violations:
                found.append(FieldError(_join(path, violation.field) if violation.field else path,
                                        violation.message))
            continue
        message = item["msg"].removeprefix("Value error, ")
        found.append(FieldError(path, message))
    return found


# --- bounded scalar types ------------------------------------------------------------------------
# Every string carries maxLength and every list maxItems: nothing can approach etcd's object size
# limit, and the apiserver's CEL cost estimator accepts rules over them.

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
CAMEL_NAME = r"^[a-z][A-Za-z0-9]*$"
# No \s: it means Unicode spaces to Python and Rust, ASCII ones to the apiserver's Go (RE2).
# Control characters (C0, DEL, C1) never belong in these; YAML even turns U+0085 into a line break.
URL = r"^https?://[^\x00-\x20\x7f-\x9f]+$"
EMAIL = r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+\.[^@\x00-\x20\x7f-\x9f]+$"
QUANTITY = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][0-9]+))?$"
DURATION = r"^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?([0-9]{1,5}ms)?$"
IMAGE = r"^[^\x00-\x20\x7f-\x9f]+$"

DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
ShortText = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(min_length=1, max_length=2048)]
Url = Annotated[str, Field(min_length=8, max_length=2048, pattern=URL)]
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=EMAIL)]
CamelName = Annotated[str, Field(min_length=1, max_length=63, pattern=CAMEL_NAME)]
Image = Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE)]
Article = Annotated[str, Field(min_length=5, max_length=128,
                               pattern=rf"^{ARTICLE_PATTERN}(,{ARTICLE_PATTERN}){{0,15}}$")]
#: A fraction in 0..1: thresholds, objectives, pass rates.
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
#: A timestamp as Kubernetes writes it (RFC 3339, UTC, seconds).
Timestamp = AwareDatetime


_DURATION_RE = re.compile(DURATION)
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> timedelta:
    """`1h30m` → timedelta; the Go/CEL duration syntax, restricted to h, m, s and ms."""
    match = _DURATION_RE.fullmatch(text)
    if not match or not text:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 1h30m or 720h")
    seconds = 0.0
    for group in match.groups():
        if group:
            unit = "ms" if group.endswith("ms") else group[-1]
            seconds += float(group[: -len(unit)]) * _DURATION_UNITS[unit]
    return timedelta(seconds=seconds)


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def cel_bad_duration(field: str) -> str:
    """CEL that is true when `self.<field>` is not a Duration: rules that compare durations start
    with `<this> || ...`, so a malformed value gets the pattern's error, not a conversion error."""
    return f"!self.{field}.matches('{DURATION}')"


#: A duration in Go syntax (`90s`, `15m`, `1h30m`, `720h`), as CEL's duration() reads it.
Duration = Annotated[str, Field(min_length=2, max_length=32, pattern=DURATION),
                     AfterValidator(_check_duration)]


def _non_negative(value: int | str) -> int | str:
    if isinstance(value, int) and value < 0:
        raise ValueError("a resource quantity must not be negative")
    return value


#: A resource quantity (`500m`, `128Mi`, `2`), as in a container's requests and limits.
Quantity = Annotated[
    int | Annotated[str, Field(min_length=1, max_length=64, pattern=QUANTITY)],
    AfterValidator(_non_negative),
    WithJsonSchema({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
        "pattern": QUANTITY,
        "maxLength": 64,
        "x-kubernetes-validations": [{
            "rule": "type(self) != int || self >= 0",
            "message": "a resource quantity must not be negative",
        }],
    }),
]


# --- label selectors -----------------------------------------------------------------------------

class SelectorOperator(StrEnum):
    """How a label selector requirement compares a label with its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector, as in Kubernetes' own `matchExpressions`."""

    key: LabelKey = Field(description="The label key the requirement applies to.")
    operator: SelectorOperator = Field(
        description="In and NotIn compare the label's value with `values`; Exists and "
                    "DoesNotExist only test the key.")
    values: list[LabelValue] = Field(
        default_factory=list, max_length=16,
        description="The values for In and NotIn; must be empty for Exists and DoesNotExist.")

    @cel_rule("self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) "
              ": (!has(self.values) || size(self.values) == 0)",
              "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
              field_path=".values")
    def _values_match_operator(self) -> bool:
        wants_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        return bool(self.values) == wants_values

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator is SelectorOperator.EXISTS:
            return present
        if self.operator is SelectorOperator.DOES_NOT_EXIST:
            return not present
        if self.operator is SelectorOperator.IN:
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


class LabelSelector(ApiModel):
    """A Kubernetes label selector: every `matchLabels` entry and every `matchExpressions`
    requirement must hold."""

    match_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=16,
        description="Labels that must be present with exactly these values.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=8,
        description="Requirements on labels, all of which must hold.")

    @property
    def is_empty(self) -> bool:
        """An empty selector selects everything."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (all(labels.get(key) == value for key, value in self.match_labels.items())
                and all(requirement.matches(labels) for requirement in self.match_expressions))


# --- references ----------------------------------------------------------------------------------

class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: DnsSubdomain = Field(description="The object's name, in the referring object's "
                                           "namespace.")


class SecretKeyReference(ApiModel):
    """A key of a Secret in the same namespace."""

    name: DnsSubdomain = Field(description="The Secret's name, in the referring object's "
                                           "namespace.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="The key within the Secret's data.")


class ConfigMapKeyReference(ApiModel):
    """A key of a ConfigMap in the same namespace."""

    name: DnsSubdomain = Field(description="The ConfigMap's name, in the referring object's "
                                           "namespace.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="The key within the ConfigMap's data.")


class WorkloadKind(StrEnum):
    """A kind of workload that can run a generative model."""

    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    POD = "Pod"
    INFERENCE_SERVICE = "InferenceService"


class WorkloadReference(ApiModel):
    """A workload in the same namespace, named by kind and name."""

    kind: WorkloadKind = Field(description="The workload's kind (InferenceService is KServe's).")
    name: DnsSubdomain = Field(description="The workload's name.")

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.name}"


# --- status building blocks ----------------------------------------------------------------------

class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A standard Kubernetes condition (as `metav1.Condition`), plus the article it rests on."""

    type: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Z][A-Za-z0-9]*$")] = (
        Field(description="The condition's type, in CamelCase (e.g. Filed, Compliant)."))
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The `.metadata.generation` the condition was computed for.")
    last_transition_time: Timestamp = Field(
        description="When the status last changed, in RFC 3339.")
    reason: Annotated[str, Field(min_length=1, max_length=128,
                                 pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")] = Field(
        description="A CamelCase, machine-readable reason for the last transition.")
    message: Annotated[str, Field(max_length=1024)] = Field(
        default="", description="A human-readable explanation; names the rule and the fix.")
    article: Article = Field(
        description="The article(s) of the Interim Measures the condition rests on, e.g. Art.17.")


class ObjectMeta(BaseModel):
    """The part of `metadata` hegui reads. The apiserver owns the rest (managedFields, owner
    references, ...), which is kept as it is, not rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectMeta:
        """Validate metadata as `ApiModel.from_dict` validates it within a whole object."""
        return cls.model_validate_json(json.dumps(_drop_nulls(data), default=_json_default))

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {key: value for key, value in data.items() if value not in ({}, [])}


class ApiObject(ApiModel):
    """A whole hegui object as the apiserver serves it: apiVersion, kind, metadata, spec,
    status. Each kind narrows apiVersion and kind to its own."""

    api_version: str = Field(description="hegui.io/v1alpha1")
    kind: str = Field(description="The kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard metadata.")

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["metadata"] = self.metadata.to_dict()
        order = ("apiVersion", "kind", "metadata", "spec", "status")
        return {key: data[key] for key in order if key in data}
