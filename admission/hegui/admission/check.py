"""`hegui check PATH...`: the admission rules over manifests, for GitOps pipelines.

It reads YAML or JSON files, directories (recursively) and multi-document streams such as
`helm template` output (`-` reads standard input), resolves the GenerativeServices, policies,
exceptions and assessments found in the same input, and judges every workload exactly as the
webhook would, with the same rule engine. When the input holds no CompliancePolicy, it judges as
if every namespace were enforced in Enforce mode, since a pipeline asks "would this be admitted
where hegui enforces?".

Exit codes: 0 nothing refused, 1 a workload would be refused (an Enforce-mode finding), 2 a usage
or parse error.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from hegui.api.articles import Rule
from hegui.api.common import API_VERSION
from hegui.rules import engine
from hegui.rules.index import ComplianceIndex, ObjectKey, detection_of
from hegui.rules.registry import DEFINITIONS

HEGUI_KINDS = frozenset({"GenerativeService", "CompliancePolicy", "ComplianceException",
                         "SafetyAssessment", "Namespace", "ResourceClaim",
                         "ResourceClaimTemplate", "DeviceClass"})
ASSUMED_POLICY = {"apiVersion": API_VERSION, "kind": "CompliancePolicy",
                  "metadata": {"name": "hegui-check-assumed"},
                  "spec": {"namespaceSelector": {}, "defaultMode": "Enforce"}}
MAX_FILE_BYTES = 16 * 1024 * 1024


class InputError(Exception):
    """A file that cannot be read or parsed; exit code 2."""


@dataclass(frozen=True)
class Document:
    obj: Mapping[str, Any]
    source: str
    line: int


@dataclass(frozen=True)
class Judged:
    document: Document
    workload: engine.Workload
    findings: list[engine.Finding]

    @property
    def verdict(self) -> engine.Verdict:
        return engine.Verdict.of(self.findings)


def _files(paths: list[str]) -> Iterator[tuple[str, str]]:
    for raw in paths:
        if raw == "-":
            yield "<stdin>", sys.stdin.read()
            continue
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*")
                                if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
        elif path.is_file():
            candidates = [path]
        else:
            raise InputError(f"{raw}: no such file or directory")
        for candidate in candidates:
            if candidate.stat().st_size > MAX_FILE_BYTES:
                raise InputError(f"{candidate}: larger than {MAX_FILE_BYTES} bytes")
            try:
                yield str(candidate), candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise InputError(f"{candidate}: {error}") from None


def documents(paths: list[str]) -> list[Document]:
    found: list[Document] = []
    for source, text in _files(paths):
        loader = yaml.SafeLoader(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                line = node.start_mark.line + 1 if node is not None else 1
                data = loader.construct_document(node)
                items = data.get("items") if isinstance(data, dict) and str(
                    data.get("kind", "")).endswith("List") else [data]
                for item in items or []:
                    if isinstance(item, dict) and item.get("kind"):
                        found.append(Document(item, source, line))
        except yaml.YAMLError as error:
            raise InputError(f"{source}: not YAML: {error}") from None
        finally:
            loader.dispose()
    return found


@dataclass(frozen=True)
class Judgement:
    judged: list[Judged]
    #: No CompliancePolicy was in the input, so one enforcing everywhere was assumed.
    assumed_policy: bool
    #: "<Kind> <namespace>/<name>: <field>: <error>" for hegui objects that failed validation.
    invalid: list[str]


def judge(docs: list[Document], namespace: str) -> Judgement:
    """Every workload's findings, and the hegui objects that are not valid."""
    def with_namespace(obj: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        assert isinstance(meta, Mapping)
        if meta.get("namespace") or obj.get("kind") in ("CompliancePolicy", "Namespace"):
            return obj
        return {**obj, "metadata": {**meta, "namespace": namespace}}

    hegui_objects = [with_namespace(d.obj) for d in docs if d.obj.get("kind") in HEGUI_KINDS]
    assumed = not any(o.get("kind") == "CompliancePolicy" for o in hegui_objects)
    index = ComplianceIndex.from_objects(
        [*hegui_objects, ASSUMED_POLICY] if assumed else hegui_objects)
    judged = []
    detection = detection_of(index.policies.values())
    for doc in docs:
        if detection.is_workload_kind(doc.obj.get("kind")):
            obj = with_namespace(doc.obj)
            judged.append(Judged(doc, engine.Workload.of(obj),
                                 engine.evaluate(obj, index, namespace=namespace)))
        elif doc.obj.get("kind") == "GenerativeService":
            # Its apply-time rules (the policy's moderation floor), as the webhook judges it.
            obj = with_namespace(doc.obj)
            if ("GenerativeService", ObjectKey(*_key_of(obj))) in index.invalid:
                continue  # reported as invalid below
            judged.append(Judged(doc, engine.Workload.of(obj), engine.evaluate_service_object(
                obj, index, namespace=namespace)))
    invalid = [f"{kind} {key.namespace + '/' if key.namespace else ''}{key.name}: {error}"
               for (kind, key), errors in sorted(index.invalid.items()) for error in errors]
    return Judgement(judged, assumed, invalid)


def _key_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


# --- output ------------------------------------------------------------------------------------

def _human(judged: list[Judged], assumed: bool, out: TextIO) -> None:
    if assumed:
        print("no CompliancePolicy in the input: judging as if every namespace were enforced "
              "(Enforce)\n", file=out)
    for item in judged:
        verdict = item.verdict
        mark = "REFUSED" if not verdict.allowed else ("WARN" if verdict.warned else "ok")
        print(f"{mark:<8} {item.workload}  ({item.document.source}:{item.document.line})",
              file=out)
        for finding in item.findings:
            mode = (f"exempted by {finding.exempted_by}" if finding.exempted_by
                    else finding.mode.value)
            print(f"         {finding.render()} ({mode})", file=out)
    refused = sum(not i.verdict.allowed for i in judged)
    print(f"\n{len(judged)} workloads checked, {refused} would be refused", file=out)


def _finding_json(finding: engine.Finding) -> dict[str, Any]:
    return {"rule": finding.rule.value, "article": finding.article,
            "mode": finding.mode.value, "location": finding.location,
            "message": finding.message, "fix": finding.fix, "exemptedBy": finding.exempted_by,
            "generativeBecause": finding.because}


def _json(judged: list[Judged], assumed: bool, out: TextIO) -> None:
    json.dump({"assumedPolicy": assumed, "workloads": [{
        "workload": str(item.workload), "source": item.document.source,
        "line": item.document.line, "allowed": item.verdict.allowed,
        "findings": [_finding_json(f) for f in item.findings]} for item in judged]},
        out, ensure_ascii=False, indent=2)
    out.write("\n")


def _junit(judged: list[Judged], assumed: bool, out: TextIO) -> None:
    suite = ET.Element("testsuite", name="hegui check", tests=str(len(judged)),
                       failures=str(sum(not i.verdict.allowed for i in judged)))
    for item in judged:
        case = ET.SubElement(suite, "testcase", classname=item.document.source,
                             name=str(item.workload))
        if not item.verdict.allowed:
            failure = ET.SubElement(case, "failure", message="refused under the Interim Measures")
            failure.text = "\n".join(f.render() for f in item.verdict.denied)
        notes = item.verdict.warned + item.verdict.audited
        if notes:
            ET.SubElement(case, "system-out").text = "\n".join(
                f"{f.mode.value}: {f.render()}" for f in notes)
    out.write(ET.tostring(suite, encoding="unicode"))
    out.write("\n")


_SARIF_LEVEL = {"Enforce": "error", "Warn": "warning", "Audit": "note"}


def _sarif(judged: list[Judged], assumed: bool, out: TextIO) -> None:
    rules = [{"id": rule.value, "name": rule.name.title().replace("_", ""),
              "shortDescription": {"text": f"{DEFINITIONS[rule].summary} ({rule.article})"},
              "properties": {"article": rule.article}} for rule in Rule]
    results = [{
        "ruleId": finding.rule.value,
        "level": "note" if finding.exempted_by else _SARIF_LEVEL[finding.mode.value],
        "message": {"text": finding.render()},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": item.document.source},
            "region": {"startLine": item.document.line}}}],
        "properties": {"article": finding.article, "workload": str(item.workload)},
    } for item in judged for finding in item.findings]
    json.dump({"version": "2.1.0",
               "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
               "runs": [{"tool": {"driver": {"name": "hegui", "rules": rules}},
                         "results": results}]}, out, ensure_ascii=False, indent=2)
    out.write("\n")


WRITERS = {"human": _human, "json": _json, "junit": _junit, "sarif": _sarif}


def add_parser(commands: Any) -> None:
    check = commands.add_parser(
        "check", help="judge manifests as the admission webhook would (exit 1 if refused)")
    check.add_argument("paths", nargs="+", help="files, directories, or - for standard input")
    check.add_argument("--output", "-o", choices=sorted(WRITERS), default="human")
    check.add_argument("--namespace", "-n", default="default",
                       help="namespace of objects that name none (default: default)")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        judgement = judge(documents(args.paths), args.namespace)
    except InputError as error:
        print(f"hegui check: {error}", file=sys.stderr)
        return 2
    WRITERS[args.output](judgement.judged, judgement.assumed_policy, sys.stdout)
    if judgement.invalid:
        # The apiserver would refuse these objects; a pipeline must not push them.
        print("hegui check: invalid hegui objects:\n  " + "\n  ".join(judgement.invalid),
              file=sys.stderr)
        return 2
    return 1 if any(not item.verdict.allowed for item in judgement.judged) else 0
