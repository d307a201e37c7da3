"""The CRDs in crds/ are what the models generate, and are structural and bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field

from hegui import cli
from hegui.api import crdgen
from hegui.api.common import API_VERSION, ApiModel, ApiObject

# What apiextensions.k8s.io/v1 JSONSchemaProps may hold in a structural schema (no $ref, no
# patternProperties, no propertyNames, no uniqueItems: they are refused or quadratic).
ALLOWED_KEYS = {
    "description", "type", "format", "properties", "required", "items", "additionalProperties",
    "enum", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties",
    "maxProperties", "nullable", "anyOf", "x-kubernetes-int-or-string",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type", "x-kubernetes-preserve-unknown-fields",
}
ETCD_REQUEST_LIMIT = 1536 * 1024  # etcd's default --max-request-bytes


def _committed() -> dict[str, dict[str, Any]]:
    return {path.name: yaml.safe_load(path.read_text())
            for path in sorted(crdgen.DEFAULT_OUTPUT.glob("hegui.io_*.yaml"))}


def test_committed_crds_match_the_models() -> None:
    stale = crdgen.stale_files(crdgen.DEFAULT_OUTPUT)
    assert stale == [], f"stale CRDs {stale}: run `hegui crds generate`"


def test_check_command_passes_on_the_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crds", "generate", "--check"]) == 0
    assert f"{len(crdgen.KINDS)} CRDs" in capsys.readouterr().out


def test_generate_writes_checks_and_removes_stale_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["crds", "generate", "--output-dir", str(tmp_path)]
    assert cli.main([*out, "--check"]) == 1  # nothing there yet
    assert cli.main(out) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(k.filename for k in crdgen.KINDS)
    assert cli.main([*out, "--check"]) == 0

    edited = tmp_path / "hegui.io_generativeservices.yaml"
    edited.write_text(edited.read_text().replace("maxLength: 64", "maxLength: 65", 1))
    (tmp_path / "hegui.io_oldkinds.yaml").write_text("kind: CustomResourceDefinition\n")
    capsys.readouterr()
    assert cli.main([*out, "--check", "--diff"]) == 1
    err = capsys.readouterr().err
    assert "stale: " in err and "hegui.io_generativeservices.yaml" in err
    assert "hegui.io_oldkinds.yaml" in err
    assert any(line.startswith("-") and line.endswith("maxLength: 65")
               for line in err.splitlines()), err
    assert cli.main(out) == 0
    assert not (tmp_path / "hegui.io_oldkinds.yaml").exists()
    assert crdgen.stale_files(tmp_path) == []


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}.*")
    return found


@pytest.mark.parametrize("filename", [kind.filename for kind in crdgen.KINDS])
def test_schema_is_structural_bounded_and_described(filename: str) -> None:
    crd = _committed()[filename]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec") + _walk(
            schema["properties"]["status"], "status"):
        assert set(node) <= ALLOWED_KEYS, f"{path}: {set(node) - ALLOWED_KEYS}"
        if not path.endswith(("[*]", ".*")):  # fields, which kubectl explain shows
            assert node.get("description"), f"{path} has no description"
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "anyOf" not in node and "type" in node, path
        assert node.get("default", "") is not None, f"{path}: null default"
        assert node.get("additionalProperties") is not False, path
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        if node.get("type") == "string" or node.get("x-kubernetes-int-or-string"):
            assert "maxLength" in node, f"{path}: unbounded string"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: unbounded list"
        if isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, f"{path}: unbounded map"
            assert any("size(k) <=" in r["rule"] for r in node["x-kubernetes-validations"]), (
                f"{path}: unbounded map keys")
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], f"{path}: a CEL rule without a message"
    assert schema["properties"]["metadata"] == {"type": "object"}


def _worst_case_bytes(node: dict[str, Any]) -> int:
    # Every character may need 6 bytes in JSON (\uXXXX) and every list and map is full.
    if node.get("type") == "string" or node.get("x-kubernetes-int-or-string"):
        return 6 * int(node["maxLength"]) + 2
    if node.get("type") in ("integer", "number"):
        return 24
    if node.get("type") == "boolean":
        return 5
    if node.get("type") == "array":
        return int(node["maxItems"]) * (_worst_case_bytes(node["items"]) + 1) + 2
    if isinstance(node.get("additionalProperties"), dict):
        key = 6 * 317 + 3
        return int(node["maxProperties"]) * (key + _worst_case_bytes(node["additionalProperties"]))
    return 2 + sum(len(name) + 4 + _worst_case_bytes(sub)
                   for name, sub in node.get("properties", {}).items())


@pytest.mark.parametrize("filename", [kind.filename for kind in crdgen.KINDS])
def test_no_object_can_approach_etcds_limit(filename: str) -> None:
    schema = _committed()[filename]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    worst = sum(_worst_case_bytes(schema["properties"][part]) for part in ("spec", "status"))
    # metadata (labels, annotations, managedFields) needs room of its own below the limit.
    assert worst < ETCD_REQUEST_LIMIT * 0.75, f"{filename}: worst case {worst} bytes"


def test_names_categories_subresource_and_columns() -> None:
    crds = {crd["spec"]["names"]["kind"]: crd for crd in _committed().values()}
    assert set(crds) == {"GenerativeService", "CompliancePolicy", "ComplianceException",
                         "SafetyAssessment", "SuspensionOrder", "ResumeRequest"}
    for crd in crds.values():
        assert crd["spec"]["group"] == "hegui.io"
        assert crd["spec"]["names"]["categories"] == ["hegui"]
        version = crd["spec"]["versions"][0]
        assert (version["name"], version["served"], version["storage"]) == (
            "v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}
    gsvc = crds["GenerativeService"]
    assert gsvc["spec"]["names"]["shortNames"] == ["gsvc"]
    assert gsvc["spec"]["scope"] == "Namespaced"
    assert crds["CompliancePolicy"]["spec"]["scope"] == "Cluster"
    columns = [c["name"] for c in gsvc["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:2] == ["Compliant", "Suspended"] and "Filing" in columns
    assert "Assessment-Expiry" in columns and columns[-1] == "Age"


def test_cel_rules_carry_the_article_they_enforce() -> None:
    for crd in _committed().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema["properties"]["spec"], "spec"):
            for rule in node.get("x-kubernetes-validations", []):
                generic = ("keys must be label keys", "values must be non-empty",
                           "resource quantity")
                if not any(text in rule["message"] for text in generic):
                    assert "Art." in rule["message"], f"{path}: {rule['message']}"


# --- the generator refuses what the apiserver would -------------------------------------------

class _Spec(ApiModel):
    """A spec."""

    text: str = Field(max_length=10, description="A string.")


class _Undescribed(ApiModel):
    """A spec."""

    text: str = Field(max_length=10)


class _Unbounded(ApiModel):
    """A spec."""

    text: str = Field(description="A string without a bound.")


class _Union(ApiModel):
    """A spec."""

    value: int | bool = Field(description="Either.")


class _Bad(ApiObject):
    """A kind."""

    api_version: Literal["hegui.io/v1alpha1"] = Field(default=API_VERSION, description="v")
    kind: Literal["Bad"] = Field(default="Bad", description="k")
    spec: _Spec = Field(description="The spec.")
    status: _Spec | None = Field(default=None, description="The status.")


@pytest.mark.parametrize(("spec", "message"), [
    (_Undescribed, "spec.text: every field needs a description"),
    (_Unbounded, "spec.text: a string needs maxLength"),
    (_Union, "spec.value: a union of types cannot be a structural schema"),
])
def test_generator_refuses_what_the_apiserver_would(spec: type[ApiModel], message: str) -> None:
    model = type("Broken", (_Bad,), {"__annotations__": {"spec": spec}, "__doc__": "A kind.",
                                     "spec": Field(description="The spec.")})
    kind = crdgen.Kind(model, "bads", (), "Namespaced", ())
    with pytest.raises(crdgen.GeneratorError, match=message.replace("(", r"\(")):
        crdgen.openapi_schema(kind)
    assert crdgen.openapi_schema(crdgen.Kind(_Bad, "bads", (), "Namespaced", ()))


def test_an_installed_hegui_asks_where_to_write(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(crdgen, "IN_CHECKOUT", False)
    assert cli.main(["crds", "generate"]) == 2
    assert "--output-dir" in capsys.readouterr().err
