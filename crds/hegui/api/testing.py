"""Test support for code that uses hegui's API: valid objects at random, and invalid ones.

* `objects(Kind)`: a hypothesis strategy of valid objects of a kind, built from the models' JSON
  schema (so every field, type and bound is exercised) and made to satisfy the cross-field rules.
  The rule engine's property tests can draw services from it too.
* `invalid_cases()`: the objects the API must refuse, from samples/compliance/invalid/cases.yaml.

Needs hypothesis (the `dev` extra); not imported by hegui at run time.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml
from hypothesis import strategies as st

from hegui.api.common import DURATION, ApiObject, parse_duration
from hegui.api.policy import MAX_EXCEPTION_DURATION

#: samples/ of the checkout (this file is crds/hegui/api/testing.py).
SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "compliance"
INVALID_CASES = SAMPLES / "invalid" / "cases.yaml"

_O = TypeVar("_O", bound=ApiObject)
_Repair = Callable[[dict[str, Any]], dict[str, Any]]

# --- samples and invalid cases -------------------------------------------------------------------


def load_samples() -> dict[str, dict[str, Any]]:
    """samples/compliance/*.yaml by file name (one object per file)."""
    return {path.name: yaml.safe_load(path.read_text())
            for path in sorted(SAMPLES.glob("*.yaml"))}


_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path(text: str) -> list[str | int]:
    return [int(index) if index else name for name, index in _TOKEN.findall(text)]


def _parent(document: Any, path: list[str | int]) -> Any:
    node = document
    for part in path[:-1]:
        node = node[part]
    return node


@dataclass(frozen=True)
class InvalidCase:
    """An object both the apiserver and hegui.api must refuse; the error must name `field`."""

    name: str
    sample: str
    field: str
    document: dict[str, Any]


def invalid_cases() -> list[InvalidCase]:
    samples = load_samples()
    cases = []
    for entry in yaml.safe_load(INVALID_CASES.read_text()):
        document = copy.deepcopy(samples[entry["sample"]])
        for path_text, value in (entry.get("set") or {}).items():
            path = _path(path_text)
            _parent(document, path)[path[-1]] = value
        for path_text in entry.get("delete") or []:
            path = _path(path_text)
            del _parent(document, path)[path[-1]]
        for path_text, times in (entry.get("repeat") or {}).items():
            path = _path(path_text)
            parent = _parent(document, path)
            parent[path[-1]] = _grow(parent[path[-1]], times)
        cases.append(InvalidCase(entry["name"], entry["sample"], entry["field"], document))
    return cases


def _grow(value: Any, times: int) -> Any:
    if isinstance(value, str):
        return value * times
    # Copies of the first item, renamed so that only the bound is broken, not uniqueness.
    grown = []
    for index in range(times):
        item = copy.deepcopy(value[0])
        if isinstance(item, dict) and "name" in item:
            item["name"] = f"{item['name']}{index}"
        grown.append(item)
    return grown


# --- strategies ----------------------------------------------------------------------------------

_TEXT = st.characters(exclude_categories=("Cs", "Cc"))
_UTC_TIMES = st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2099, 12, 31),
                          timezones=st.just(UTC)).map(lambda t: t.replace(microsecond=0))
_CEL_MATCH = re.compile(r"^self\.matches\('(\^.*\$)'\)$")


def _bounded_text(pattern: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(
        lambda text: min_size <= len(text) <= max_size)


class _Builder:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def build(self, node: dict[str, Any], name: str | None = None) -> st.SearchStrategy[Any]:
        if "$ref" in node:
            ref = node["$ref"].rsplit("/", 1)[-1]
            inner = self.build({**self.defs[ref], **{k: v for k, v in node.items()
                                                      if k not in ("$ref", "default")}}, ref)
            return inner.map(REPAIRS[ref]) if ref in REPAIRS else inner
        if node.get("x-kubernetes-int-or-string"):
            return st.one_of(st.integers(0, 10**9), _bounded_text(node["pattern"], 1, 64))
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            assert len(options) == 1, node
            rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
            return self.build({**rest, **options[0]})
        if "enum" in node:
            return st.sampled_from(node["enum"])
        if "const" in node:
            return st.just(node["const"])
        kind = node.get("type")
        if kind == "boolean":
            return st.booleans()
        if kind == "integer":
            low = node.get("minimum", node.get("exclusiveMinimum", -(2**31)))
            high = node.get("maximum", 2**31)
            return st.integers(low + ("exclusiveMinimum" in node), high)
        if kind == "number":
            return st.floats(min_value=node.get("minimum", node.get("exclusiveMinimum", -1e6)),
                             max_value=node.get("maximum", node.get("exclusiveMaximum", 1e6)),
                             exclude_min="exclusiveMinimum" in node,
                             exclude_max="exclusiveMaximum" in node,
                             allow_nan=False, allow_infinity=False)
        if kind == "string":
            return self._string(node)
        if kind == "array":
            items = self.build(node["items"])
            keys = node.get("x-kubernetes-list-map-keys")
            unique_by: Callable[[Any], Any] | None = None
            if keys:
                unique_by = lambda item: tuple(item[key] for key in keys)  # noqa: E731
            elif node.get("x-kubernetes-list-type") == "set":
                unique_by = lambda item: item  # noqa: E731
            return st.lists(items, min_size=node.get("minItems", 0),
                            max_size=min(node.get("maxItems", 3), max(3, node.get("minItems", 0))),
                            unique_by=unique_by)
        if kind == "object":
            if "patternProperties" in node:
                ((pattern, values),) = node["patternProperties"].items()
                limit = node.get("propertyNames", {}).get("maxLength", 63)
                return st.dictionaries(_bounded_text(pattern, 1, limit), self.build(values),
                                       max_size=3)
            required = set(node.get("required", []))
            properties = node.get("properties", {})
            return st.fixed_dictionaries(
                {key: self.build(sub) for key, sub in properties.items() if key in required},
                optional={key: self.build(sub) for key, sub in properties.items()
                          if key not in required})
        raise AssertionError(f"no strategy for {name or node}")

    def _string(self, node: dict[str, Any]) -> st.SearchStrategy[str]:
        if node.get("format") == "date":
            return st.dates(date(2023, 8, 15), date(2099, 12, 31)).map(date.isoformat)
        if node.get("format") == "date-time":
            return _UTC_TIMES.map(lambda t: t.isoformat().replace("+00:00", "Z"))
        low, high = node.get("minLength", 0), node.get("maxLength", 64)
        for rule in node.get("x-kubernetes-validations", []):
            if match := _CEL_MATCH.match(rule["rule"]):
                return _bounded_text(match.group(1), low, high)
        if node.get("pattern") == DURATION:
            return st.from_regex(DURATION, fullmatch=True).filter(lambda t: len(t) >= 2)
        if "pattern" in node:
            return _bounded_text(node["pattern"], low, high)
        return st.text(_TEXT, min_size=low, max_size=min(high, 40))


def _spec_strategy(model: type[ApiObject]) -> st.SearchStrategy[dict[str, Any]]:
    schema = model.model_json_schema(by_alias=True)
    builder = _Builder(schema.get("$defs", {}))
    spec: st.SearchStrategy[dict[str, Any]] = builder.build(schema["properties"]["spec"])
    return spec


_NAMES = st.from_regex(r"^[a-z][a-z0-9]{0,20}$", fullmatch=True)


def documents(model: type[ApiObject],
              namespace: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Valid objects of `model` as dicts (what YAML or the apiserver holds)."""
    kind = model.model_fields["kind"].default

    def assemble(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        metadata = {"name": name} | ({"namespace": namespace} if namespace else {})
        return {"apiVersion": "hegui.io/v1alpha1", "kind": kind, "metadata": metadata,
                "spec": spec}

    return st.builds(assemble, _NAMES, _spec_strategy(model))


def objects(model: type[_O], namespace: str | None = None) -> st.SearchStrategy[_O]:
    """Valid objects of `model`."""
    return documents(model, namespace).map(model.from_dict)


# --- repairs: make a schema-valid object satisfy the cross-field (CEL) rules ----------------------

def _seconds(text: str) -> float:
    return parse_duration(text).total_seconds()


def _requirement(d: dict[str, Any]) -> dict[str, Any]:
    if d["operator"] in ("In", "NotIn"):
        return d if d.get("values") else {**d, "values": ["v"]}
    return {**d, "values": []}


def _spec(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    selector = d["selector"]
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        d["selector"] = {**selector, "matchLabels": {"app": "model"}}
    filing = d["filing"]
    if filing["publicOpinion"] and ("algorithm" not in filing or "assessment" not in d):
        d["filing"] = {**filing, "publicOpinion": False}
    suspension = d.get("suspension")
    if suspension and suspension.get("mode", "Manual") == "Auto" and "slo" not in d:
        d["suspension"] = {**suspension, "mode": "Manual"}
    return d


def _assessment(d: dict[str, Any]) -> dict[str, Any]:
    if "safetyAssessmentRef" in d and "external" in d:
        return {"safetyAssessmentRef": d["safetyAssessmentRef"]}
    if "safetyAssessmentRef" not in d and "external" not in d:
        return {"safetyAssessmentRef": {"name": "assessment"}}
    return d


def _external(d: dict[str, Any]) -> dict[str, Any]:
    if d["expiresOn"] <= d["assessedOn"]:
        later = date.fromisoformat(d["assessedOn"]) + timedelta(days=365)
        return {**d, "expiresOn": later.isoformat()}
    return d


def _watermark(d: dict[str, Any]) -> dict[str, Any]:
    if d.get("enabled") and "keySecretRef" not in d:
        return {**d, "keySecretRef": {"name": "watermark", "key": "key"}}
    return d


def _moderation(d: dict[str, Any]) -> dict[str, Any]:
    sides = [d.get("input", {}).get("enabled", True), d.get("output", {}).get("enabled", True)]
    if not any(sides):
        return {**d, "input": {**d["input"], "enabled": True}}
    return d


def _slo(d: dict[str, Any]) -> dict[str, Any]:
    if "availability" not in d and "latency" not in d:
        return {**d, "availability": {"objective": 0.99}}
    return d


def _burn_rate(d: dict[str, Any]) -> dict[str, Any]:
    if _seconds(d["shortWindow"]) >= _seconds(d["longWindow"]):
        return {**d, "shortWindow": "5m", "longWindow": "1h"}
    return d


def _user_measures(d: dict[str, Any]) -> dict[str, Any]:
    warn, limit, suspend = d.get("warnAt", 1), d.get("limitAt", 3), d.get("suspendAt", 5)
    if warn <= limit <= suspend:
        return d
    warn, limit, suspend = sorted((warn, limit, suspend))
    return {**d, "warnAt": warn, "limitAt": limit, "suspendAt": suspend}


def _minors(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "dailyLimit": "1h"} if d["allowed"] and "dailyLimit" not in d else d


def _data_protection(d: dict[str, Any]) -> dict[str, Any]:
    if (d.get("pseudonymise", True) and d["retentionDays"] and
            "pseudonymisationKeyRef" not in d):
        return {**d, "pseudonymisationKeyRef": {"name": "pseudonymisation", "key": "key"}}
    return d


def _complaints(d: dict[str, Any]) -> dict[str, Any]:
    if not {"url", "email", "phone"} & d.keys():
        return {**d, "email": "report@example.cn"}
    return d


def _data_source(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "licence": "contract"} if d["kind"] == "Licensed" and "licence" not in d else d


def _policy_spec(d: dict[str, Any]) -> dict[str, Any]:
    if "namespaceSelector" not in d and not d.get("namespaces"):
        return {**d, "namespaces": ["hegui-demo"]}
    return d


def _limits(d: dict[str, Any]) -> dict[str, Any]:
    if "maxDuration" in d and _seconds(d["maxDuration"]) > _seconds(MAX_EXCEPTION_DURATION):
        return {**d, "maxDuration": "720h"}
    return d


def _exception_spec(d: dict[str, Any]) -> dict[str, Any]:
    if not 0 < _seconds(d["duration"]) <= _seconds(MAX_EXCEPTION_DURATION):
        return {**d, "duration": "336h"}
    return d


def _assessment_spec(d: dict[str, Any]) -> dict[str, Any]:
    banks = list(d["questionBanks"])
    kinds = {bank["kind"] for bank in banks}
    for kind in ("ShouldRefuse", "ShouldAnswer"):
        if kind not in kinds:
            banks.append({"name": f"bank-{kind.lower()}", "kind": kind,
                          "configMapRef": {"name": "banks", "key": f"{kind}.txt"}})
    names = [bank["name"] for bank in banks]
    if len(set(names)) != len(names):  # the appended names may collide with drawn ones
        banks = [{**bank, "name": f"b{index}"} for index, bank in enumerate(banks)]
    return {**d, "questionBanks": banks}


def _order_spec(d: dict[str, Any]) -> dict[str, Any]:
    if "authority" in d and "issuerGroup" not in d:
        return {**d, "issuerGroup": "issuer"}
    return d


def _evidence(d: dict[str, Any]) -> dict[str, Any]:
    if "anchorInterval" in d and _seconds(d["anchorInterval"]) < 60:
        return {**d, "anchorInterval": "10m"}
    return d


def _user_identity(d: dict[str, Any]) -> dict[str, Any]:
    if d.get("source") == "JWT" and "jwtKeySecretRef" not in d:
        return {**d, "jwtKeySecretRef": {"name": "identity", "key": "key.pem"}}
    return d


def _open_port(d: dict[str, Any]) -> dict[str, Any]:
    if "endPort" in d and d["endPort"] < d["port"]:
        return {**d, "endPort": d["port"]}
    return d


def _egress_destination(d: dict[str, Any]) -> dict[str, Any]:
    if ("cidr" in d) == ("namespace" in d):
        return {**{k: v for k, v in d.items() if k != "namespace"}, "cidr": "10.0.0.0/8"}
    return d


#: Repairs by the model (JSON schema definition) they apply to.
REPAIRS: dict[str, _Repair] = {
    "LabelSelectorRequirement": _requirement,
    "GenerativeServiceSpec": _spec,
    "Assessment": _assessment,
    "ExternalAssessment": _external,
    "Watermark": _watermark,
    "Moderation": _moderation,
    "Slo": _slo,
    "BurnRateAlert": _burn_rate,
    "Minors": _minors,
    "UserMeasures": _user_measures,
    "DataProtection": _data_protection,
    "Complaints": _complaints,
    "DataSource": _data_source,
    "CompliancePolicySpec": _policy_spec,
    "ExceptionLimits": _limits,
    "ComplianceExceptionSpec": _exception_spec,
    "SafetyAssessmentSpec": _assessment_spec,
    "SuspensionOrderSpec": _order_spec,
    "Evidence": _evidence,
    "OpenPort": _open_port,
    "EgressPort": _open_port,
    "EgressDestination": _egress_destination,
    "UserIdentity": _user_identity,
}

