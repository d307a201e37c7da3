"""`hegui webhook serve`: the validating admission webhook as a process."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from hegui.admission import cel_policies, configuration, server
from hegui.admission.check import InputError
from hegui.admission.informer import InformerSet, Resource
from hegui.admission.mutate import make_mutator
from hegui.admission.validate import make_validator
from hegui.api import kubeconfig as kube
from hegui.api.common import GROUP, VERSION
from hegui.api.policy import CompliancePolicy
from hegui.rules.index import ComplianceIndex, detection_of

#: What the rules read. DRA is optional: clusters before resource.k8s.io/v1 have none.
MIRRORED = (
    Resource(GROUP, VERSION, "generativeservices", "GenerativeService"),
    Resource(GROUP, VERSION, "compliancepolicies", "CompliancePolicy"),
    Resource(GROUP, VERSION, "complianceexceptions", "ComplianceException"),
    Resource(GROUP, VERSION, "safetyassessments", "SafetyAssessment"),
    Resource("", "v1", "namespaces", "Namespace"),
    Resource("resource.k8s.io", "v1", "resourceclaims", "ResourceClaim", required=False),
    Resource("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate",
             required=False),
    # DRA matches an accelerator by the driver its DeviceClass selects, whatever the name.
    Resource("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", required=False),
)


def add_parser(commands: Any) -> None:
    webhook = commands.add_parser("webhook", help="the admission webhook")
    sub = webhook.add_subparsers(dest="webhook_command", required=True)
    serve = sub.add_parser("serve", help="serve the validating webhook over HTTPS")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    serve.add_argument("--port", type=int, default=9443)
    serve.add_argument("--cert-file", type=Path, required=True,
                       help="serving certificate (PEM); reloaded when it changes")
    serve.add_argument("--key-file", type=Path, required=True, help="its private key (PEM)")
    serve.add_argument("--kubeconfig", default=None,
                       help="kubeconfig to watch hegui's objects with (default: in-cluster, "
                            "then $KUBECONFIG)")
    serve.set_defaults(run=_serve)
    show = sub.add_parser("configuration",
                          help="print the webhook configurations hegui ships (JSON List)")
    show.add_argument("--ca-file", type=Path, required=True, help="CA that signed the webhook")
    show.add_argument("--url", help="reach the webhook by URL (local development)")
    show.add_argument("--service", help="reach it by Service: NAMESPACE/NAME[:PORT]")
    show.add_argument("--own-namespace", default="hegui-system")
    show.add_argument("--policy", action="append", default=[], metavar="FILE",
                      help="CompliancePolicy files whose detection signals the filter must "
                           "include (repeatable)")
    show.set_defaults(run=_configuration)
    native = sub.add_parser(
        "cel-policies", help="print the ValidatingAdmissionPolicies (and, for the given "
                             "CompliancePolicy files, their bindings) that hold while the "
                             "webhook is down")
    native.add_argument("policies", nargs="*", help="files or directories with CompliancePolicies")
    native.set_defaults(run=_cel_policies)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    index = ComplianceIndex()

    def mirror(event: str, obj: Mapping[str, Any]) -> None:
        if event == "DELETED":
            index.delete(obj)
        elif event != "SYNCED":
            index.upsert(obj)

    informers = InformerSet(kube.api_client(args.kubeconfig), dict.fromkeys(MIRRORED, mirror))
    informers.start()
    registry = CollectorRegistry()
    try:
        server.run(make_validator(index, registry), mutator=make_mutator(index),
                   host=args.host, port=args.port, cert_file=args.cert_file,
                   key_file=args.key_file, ready=informers.synced, registry=registry)
    finally:
        informers.close()
    return 0


def _policies(paths: list[str]) -> list[CompliancePolicy]:
    from hegui.admission.check import documents

    return [CompliancePolicy.from_dict(d.obj) for d in documents(paths)
            if d.obj.get("kind") == "CompliancePolicy"] if paths else []


def _configuration(args: argparse.Namespace) -> int:
    try:
        detection = detection_of(_policies(args.policy))
    except (InputError, ValidationError) as error:
        print(f"hegui webhook configuration: {error}", file=sys.stderr)
        return 2
    service = None
    if args.service:
        namespace, _, rest = args.service.partition("/")
        name, _, port = rest.partition(":")
        service = {"namespace": namespace, "name": name, "path": "/validate",
                   "port": int(port or 443)}
    options = {"ca_bundle": args.ca_file.read_bytes(), "own_namespace": args.own_namespace,
               "url": args.url, "service": service, "detection": detection}
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        configuration.validating_webhook_configuration(**options),
        configuration.mutating_webhook_configuration(**options)]}, indent=2))
    return 0


def _cel_policies(args: argparse.Namespace) -> int:
    try:
        found = _policies(args.policies)
    except (InputError, ValidationError) as error:
        print(f"hegui webhook cel-policies: {error}", file=sys.stderr)
        return 2
    items = cel_policies.all_policies(detection_of(found))
    for policy in found:
        items.extend(cel_policies.bindings(policy))
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, ensure_ascii=False,
                     indent=2))
    return 0
