"""What a dossier is built from: the GenerativeService and its SafetyAssessments, read from
files (`--from-file`) or from the cluster, and the records directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from hegui.admission.check import Document, InputError, documents
from hegui.api import kubeconfig as kube
from hegui.api.assessment import SafetyAssessment
from hegui.api.common import GROUP, VERSION, field_errors
from hegui.api.generativeservice import GenerativeService

_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_T = TypeVar("_T", GenerativeService, SafetyAssessment)


class DossierInputError(Exception):
    """A service or assessment that cannot be read, naming the file (or object) and field."""


@dataclass(frozen=True)
class Inputs:
    service: GenerativeService
    assessments: list[SafetyAssessment]
    source: str  # where the objects came from, for the report


def split_ref(ref: str, namespace: str | None) -> tuple[str | None, str]:
    """`name` or `namespace/name`."""
    if ref.count("/") > 1 or not ref.strip("/"):
        raise DossierInputError(f"{ref!r} is not a service name or namespace/name")
    if "/" in ref:
        ns, name = ref.split("/")
        return ns or namespace, name
    return namespace, ref


def _validated(kind: type[_T], obj: Mapping[str, Any], where: str) -> _T:
    try:
        return kind.from_dict(obj)
    except ValidationError as error:
        problems = "; ".join(str(e) for e in field_errors(error))
        raise DossierInputError(f"{where}: {problems}") from None


def _where(doc: Document) -> str:
    meta = doc.obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f"{doc.source}:{doc.line}: {doc.obj.get('kind')} {name or '(no metadata.name)'}"


def _meta(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None, None
    ns, name = meta.get("namespace"), meta.get("name")
    return (ns if isinstance(ns, str) else None, name if isinstance(name, str) else None)


def from_files(paths: Sequence[str], ref: str, namespace: str | None = None) -> Inputs:
    """The service named `ref` and the assessments of it, from YAML or JSON files."""
    want_ns, want = split_ref(ref, namespace)
    try:
        docs = documents(list(paths))
    except InputError as error:
        raise DossierInputError(str(error)) from None
    services = [d for d in docs if d.obj.get("kind") == "GenerativeService"]
    if not services:
        raise DossierInputError(f"{', '.join(paths)}: no GenerativeService (kind: "
                                "GenerativeService) in the input")
    matching = [d for d in services if _meta(d.obj)[1] == want
                and (want_ns is None or _meta(d.obj)[0] in (want_ns, None))]
    if not matching:
        found = ", ".join(sorted(f"{_meta(d.obj)[0] or '-'}/{_meta(d.obj)[1]}" for d in services))
        raise DossierInputError(f"{', '.join(paths)}: no GenerativeService named {ref} "
                                f"(metadata.name); found {found}")
    if len(matching) > 1:
        raise DossierInputError(f"{ref}: several GenerativeServices match "
                                f"({', '.join(_where(d) for d in matching)}); give namespace/name")
    doc = matching[0]
    service = _validated(GenerativeService, doc.obj, _where(doc))
    ns = service.namespace or want_ns
    assessments = []
    for candidate in docs:
        if candidate.obj.get("kind") != "SafetyAssessment":
            continue
        spec = candidate.obj.get("spec")
        target = spec.get("serviceRef") if isinstance(spec, Mapping) else None
        if not isinstance(target, Mapping) or target.get("name") != service.name:
            continue
        if _meta(candidate.obj)[0] not in (ns, None):
            continue
        assessments.append(_validated(SafetyAssessment, candidate.obj, _where(candidate)))
    return Inputs(service, assessments, ", ".join(paths))


def from_cluster(ref: str, namespace: str | None, kubeconfig: str | None) -> Inputs:
    """The service and its assessments from the apiserver (standard kubeconfig rules)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    want_ns, name = split_ref(ref, namespace)
    try:
        access = kube.load(kubeconfig)
        if want_ns is None and access.in_cluster:
            want_ns = Path(_SA_NAMESPACE).read_text(encoding="utf-8").strip()
        elif want_ns is None:  # the current context's namespace, as kubectl does
            context = config.list_kube_config_contexts(config_file=kubeconfig)[1]
            want_ns = context["context"].get("namespace")
    except (ConfigException, OSError, KeyError, TypeError) as error:
        raise DossierInputError(f"no cluster to read {ref} from: {error}; give --from-file "
                                "FILE or --kubeconfig") from None
    ns = want_ns or "default"
    api = client.CustomObjectsApi(access.api_client())
    where = f"GenerativeService {ns}/{name}"
    try:
        raw = api.get_namespaced_custom_object(GROUP, VERSION, ns, "generativeservices", name)
        listed = api.list_namespaced_custom_object(GROUP, VERSION, ns, "safetyassessments")
    except ApiException as error:
        reason = "not found" if error.status == 404 else f"{error.status} {error.reason}"
        raise DossierInputError(f"{where}: {reason}") from None
    except (HTTPError, OSError) as error:
        raise DossierInputError(f"{where}: the apiserver cannot be reached: {error}") from None
    service = _validated(GenerativeService, raw, where)
    assessments = [
        _validated(SafetyAssessment, item,
                   f"SafetyAssessment {ns}/{item.get('metadata', {}).get('name')}")
        for item in listed.get("items", [])
        if (item.get("spec") or {}).get("serviceRef", {}).get("name") == name]
    return Inputs(service, assessments, f"cluster, namespace {ns}")


def records_dir(path: Path | None) -> Path | None:
    if path is not None and not path.exists():
        raise DossierInputError(f"{path}: no such records directory (--records)")
    return path
