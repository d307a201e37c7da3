"""`kubectl hegui`: hegui at a glance for people at a terminal (a kubectl plugin).

    kubectl hegui status [-n NS | -A]        every service, its conditions and articles
    kubectl hegui explain RULE               what a rule checks, its article, how to fix it
    kubectl hegui suspend SERVICE --reason R [--authority A --reference REF --issuer-group G]
                                             suspend it now (Art.21: an order, an incident)
    kubectl hegui resume SERVICE --reason R  ask the operator to lift a suspension (Art.21)
    kubectl hegui records verify FILE        a sidecar's record chain (Art.11)
    kubectl hegui check FILE...              manifests judged as the webhook would (Art.17...)

kubectl finds the plugin as `kubectl-hegui` on PATH (installed with hegui). The same code serves
`hegui check` and `hegui records verify`: the plugin only adds the cluster-facing commands.

`suspend` and `resume` are deliberate, authorised acts: they create a `SuspensionOrder` or a
`ResumeRequest` next to the service (never an edit of the GenerativeService, which the team
writes), which RBAC grants to the compliance group (the chart's `hegui-compliance` role), the
apiserver stamps with its own time and admits only in the creator's own name and groups; the
operator acts on it once, records who did it in the service's status history, posts an Event and
writes the outcome into the request's status. A request older than the service's current state
is ignored, so a stale one never undoes a later suspension or resume. With `--authority` the
order is an authority's (责令暂停): only members of `--issuer-group` (one of yours) can lift it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from hegui.admission import check
from hegui.api import kubeconfig as kube
from hegui.api.articles import Rule
from hegui.api.common import GROUP, VERSION
from hegui.moderation import records
from hegui.rules.registry import definition

PLURAL = "generativeservices"

def _clients(kubeconfig: str | None) -> Any:
    from kubernetes import client

    return client, kube.api_client(kubeconfig, in_cluster_first=False)


def _services(kubeconfig: str | None, namespace: str | None) -> list[dict[str, Any]]:
    client, api_client = _clients(kubeconfig)
    custom = client.CustomObjectsApi(api_client)
    if namespace is None:
        listing = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    else:
        listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    items: list[dict[str, Any]] = listing.get("items") or []
    return items


def status_rows(services: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row per service: where it stands, and every condition that does not hold."""
    rows = [["NAMESPACE", "NAME", "COMPLIANT", "SUSPENDED", "UNINJECTED", "FINDINGS",
             "NOT HOLDING"]]
    for service in sorted(services, key=lambda s: (s["metadata"].get("namespace", ""),
                                                   s["metadata"]["name"])):
        status = service.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        compliant = conditions.get("Compliant", {}).get("status", "Unknown")
        suspension = status.get("suspension") or {}
        # Suspended is the one condition that is bad when True (Art.21).
        unmet = [f"{kind} ({c.get('article')})" for kind, c in conditions.items()
                 if kind != "Compliant"
                 and c.get("status") == ("True" if kind == "Suspended" else "False")]
        rows.append([service["metadata"].get("namespace", ""), service["metadata"]["name"],
                     compliant, "yes" if suspension.get("suspended") else "no",
                     str(status.get("uninjectedPods", "-")),
                     str(len(status.get("findings") or [])), ", ".join(unmet) or "-"])
    return rows


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def _status(args: argparse.Namespace) -> int:
    namespace = None if args.all_namespaces else (args.namespace or _current_namespace())
    services = _services(args.kubeconfig, namespace)
    if not services:
        print("no GenerativeServices" + (f" in namespace {namespace}" if namespace else ""))
        return 0
    _print_table(status_rows(services))
    if args.verbose:
        for service in services:
            for finding in (service.get("status") or {}).get("findings") or []:
                print(f"{service['metadata']['namespace']}/{service['metadata']['name']}: "
                      f"[{finding['rule']}, {finding['article']}] {finding['message']}")
    return 0


def _current_namespace() -> str:
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG"))
    except (config.ConfigException, TypeError):
        return "default"
    return str((context or {}).get("context", {}).get("namespace") or "default")


def explain(rule_name: str) -> str:
    try:
        rule = Rule(rule_name)
    except ValueError:
        known = ", ".join(r.value for r in Rule)
        raise SystemExit(f"kubectl hegui explain: unknown rule {rule_name!r}; rules: {known}"
                         ) from None
    found = definition(rule)  # the rule's own module says all of it
    lines = [f"RULE:     {rule.value}", f"ARTICLE:  {rule.article} of the Interim Measures for "
             "Generative AI Services (生成式人工智能服务管理暂行办法)",
             f"CHECKS:   {found.summary}", f"WHERE:    {found.enforced_by}",
             f"FIX:      {found.fix}"]
    lines.append("MODES:    set per rule in CompliancePolicy spec.rules (Enforce, Warn, Audit)")
    lines.append(f"WAIVE:    a ComplianceException naming rule {rule.value}, approved and "
                 "expiring (never a label or annotation on the workload)")
    return "\n".join(lines)


def whoami(kubeconfig: str | None) -> tuple[str, list[str]]:
    """The authenticated user and their groups, as the apiserver sees them
    (SelfSubjectReview)."""
    client, api_client = _clients(kubeconfig)
    review = client.AuthenticationV1Api(api_client).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    info = review.status.user_info
    return str(info.username), [str(g) for g in info.groups or []]


def _reason(reason: str) -> str:
    if len(reason.strip()) < 10:
        raise SystemExit("kubectl hegui: --reason must say why (10 characters at least); it is "
                         "kept in the service's suspension history (Art.21)")
    return reason.strip()[:500]


def request_object(command: str, service: str, namespace: str, reason: str, user: str,
                   groups: list[str], authority: str | None = None,
                   reference: str | None = None, issuer_group: str | None = None
                   ) -> dict[str, Any]:
    """The SuspensionOrder or ResumeRequest `kubectl hegui suspend|resume` creates: in the
    caller's own name and groups (the apiserver refuses anything else); its time is the
    apiserver's creationTimestamp."""
    spec: dict[str, Any] = {"serviceRef": {"name": service}, "reason": _reason(reason),
                            "requestedBy": user}
    if command == "suspend":
        kind = "SuspensionOrder"
        if authority:
            if not reference or not issuer_group:
                raise SystemExit("kubectl hegui suspend: an authority's order needs --reference "
                                 "(its case number) and --issuer-group (the group of yours "
                                 "that alone may lift it)")
            if issuer_group not in groups:
                raise SystemExit(f"kubectl hegui suspend: you ({user}) are not in group "
                                 f"{issuer_group}; yours: {', '.join(groups) or 'none'}")
            spec["authority"] = {"name": authority, "reference": reference}
            spec["issuerGroup"] = issuer_group
    else:
        kind = "ResumeRequest"
        spec["groups"] = sorted(g for g in set(groups) if g)[:32]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"generateName": f"{service[:40]}-{command}-", "namespace": namespace},
            "spec": spec}


def _request(args: argparse.Namespace) -> int:
    """`suspend` or `resume`: create the SuspensionOrder or ResumeRequest, as the caller."""
    client, api_client = _clients(args.kubeconfig)
    namespace = args.namespace or _current_namespace()
    custom = client.CustomObjectsApi(api_client)
    service = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                  args.service)
    suspension = (service.get("status") or {}).get("suspension") or {}
    suspending = args.command == "suspend"
    if bool(suspension.get("suspended")) == suspending and not getattr(args, "authority", None):
        print(f"{namespace}/{args.service} is "
              f"{'already suspended' if suspending else 'not suspended'}; nothing to do")
        return 1
    user, groups = whoami(args.kubeconfig)
    body = request_object(args.command, args.service, namespace, args.reason, user, groups,
                          getattr(args, "authority", None), getattr(args, "reference", None),
                          getattr(args, "issuer_group", None))
    plural = "suspensionorders" if suspending else "resumerequests"
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    print(f"{body['kind']} {namespace}/{created['metadata']['name']} created as {user}: "
          f"{body['spec']['reason']}; the operator acts on it within a reconcile "
          f"(kubectl get {plural} -n {namespace})")
    if not suspending:
        print(f"suspended since {suspension.get('since')}: {suspension.get('reason')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl hegui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="every service at a glance")
    status.add_argument("--namespace", "-n")
    status.add_argument("--all-namespaces", "-A", action="store_true")
    status.add_argument("--verbose", "-v", action="store_true", help="list findings too")
    status.set_defaults(run=_status)
    explain_cmd = commands.add_parser("explain", help="what a rule checks and its article")
    explain_cmd.add_argument("rule")
    explain_cmd.set_defaults(run=lambda args: print(explain(args.rule)) or 0)
    for verb, purpose, why in (
            ("suspend", "suspend a service now (Art.21: e.g. an authority's order)",
             "why: the order, the incident"),
            ("resume", "lift a suspension (Art.21), with a reason", "why it is safe to resume")):
        command = commands.add_parser(verb, help=purpose)
        command.add_argument("service")
        command.add_argument("--namespace", "-n")
        command.add_argument("--reason", required=True, help=why)
        if verb == "suspend":
            command.add_argument("--authority", help="an authority's order (责令暂停): its "
                                                     "name, e.g. 北京市互联网信息办公室")
            command.add_argument("--reference", help="the order's reference (case number)")
            command.add_argument("--issuer-group", help="the group (one of yours) whose "
                                                        "members alone may lift the order")
        command.set_defaults(run=_request)
    records.add_parser(commands)
    check.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from kubernetes.client.exceptions import ApiException

    try:
        code: int = args.run(args)
    except ApiException as error:
        print(f"kubectl hegui: the apiserver said {error.status} {error.reason}: "
              f"{(error.body or '')[:500]}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
