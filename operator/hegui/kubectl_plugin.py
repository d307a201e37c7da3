"""`kubectl hegui`: hegui at a glance for people at a terminal (a kubectl plugin).

    kubectl hegui status [-n NS | -A]        every service, its conditions and articles
    kubectl hegui explain RULE               what a rule checks, its article, how to fix it
    kubectl hegui suspend SERVICE --reason R suspend it now (Art.21: an order, an incident)
    kubectl hegui resume SERVICE --reason R  ask the operator to lift a suspension (Art.21)
    kubectl hegui records verify FILE        a sidecar's record chain (Art.11)
    kubectl hegui check FILE...              manifests judged as the webhook would (Art.17...)

kubectl finds the plugin as `kubectl-hegui` on PATH (installed with hegui). The same code serves
`hegui check` and `hegui records verify`: the plugin only adds the cluster-facing commands.

`suspend` and `resume` are deliberate, authorised acts: they write the annotation
`hegui.io/suspend` or `hegui.io/resume` (who, why, when) on the GenerativeService, which RBAC
must allow (patch on generativeservices), the apiserver's audit log records, and the webhook
admits only from the user it names; the operator then acts, records who did it in the service's
status history and posts an Event. A request older than the service's current state is ignored,
so a stale annotation never undoes a later suspension or resume.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from hegui.admission import check
from hegui.api.articles import Rule
from hegui.api.generativeservice import RESUME_ANNOTATION, SUSPEND_ANNOTATION
from hegui.moderation import records

GROUP, VERSION, PLURAL = "hegui.io", "v1alpha1", "generativeservices"

#: What each rule asks of a team, and how to fix or waive it (for `explain`).
_FIXES: dict[Rule, str] = {
    Rule.COVERAGE: "declare a GenerativeService whose selector matches the workload's pod labels",
    Rule.FILING: "set spec.filing.algorithm.number (算法备案号) or the service filing/registration",
    Rule.ASSESSMENT: "reference a passing, unexpired SafetyAssessment or an external assessment "
                     "report in spec.assessment",
    Rule.LABELING: "declare spec.labeling: modalities, explicit label text and implicit metadata",
    Rule.MODERATION: "declare spec.moderation for input and output with a Triton endpoint",
    Rule.INJECTION: "let hegui's webhook inject the sidecar: recreate pods that lack it, serve "
                    "through the serving port's name, never by number",
    Rule.STABILITY: "declare spec.slo and meet it; the operator reads it from Prometheus",
    Rule.SUSPENSION: "fix the cause, then `kubectl hegui resume SERVICE --reason ...`",
}


def _clients(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig)
    except config.ConfigException:
        config.load_incluster_config()
        api_client = client.ApiClient()
    return client, api_client


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
    lines = [f"RULE:     {rule.value}", f"ARTICLE:  {rule.article} of the Interim Measures for "
             "Generative AI Services (生成式人工智能服务管理暂行办法)",
             f"CHECKS:   {rule.summary}"]
    if fix := _FIXES.get(rule):
        lines.append(f"FIX:      {fix}")
    lines.append("MODES:    set per rule in CompliancePolicy spec.rules (Enforce, Warn, Audit)")
    lines.append(f"WAIVE:    a ComplianceException naming rule {rule.value}, approved and "
                 "expiring (never a label or annotation on the workload)")
    return "\n".join(lines)


def whoami(kubeconfig: str | None) -> str:
    """The authenticated user, as the apiserver sees it (SelfSubjectReview)."""
    client, api_client = _clients(kubeconfig)
    review = client.AuthenticationV1Api(api_client).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return str(review.status.user_info.username)


def deliberate_request(by: str, reason: str, now: dt.datetime) -> dict[str, str]:
    if len(reason.strip()) < 10:
        raise SystemExit("kubectl hegui: --reason must say why (10 characters at least); it is "
                         "kept in the service's suspension history (Art.21)")
    return {"by": by, "reason": reason.strip()[:500],
            "at": now.astimezone(dt.UTC).replace(microsecond=0).isoformat()
            .replace("+00:00", "Z")}


def _request(args: argparse.Namespace) -> int:
    """`suspend` or `resume`: write the request annotation, as the authenticated user."""
    client, api_client = _clients(args.kubeconfig)
    namespace = args.namespace or _current_namespace()
    custom = client.CustomObjectsApi(api_client)
    service = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                  args.service)
    suspension = (service.get("status") or {}).get("suspension") or {}
    suspending = args.command == "suspend"
    if bool(suspension.get("suspended")) == suspending:
        print(f"{namespace}/{args.service} is "
              f"{'already suspended' if suspending else 'not suspended'}; nothing to do")
        return 1
    request = deliberate_request(whoami(args.kubeconfig), args.reason, dt.datetime.now(dt.UTC))
    annotation = SUSPEND_ANNOTATION if suspending else RESUME_ANNOTATION
    patch = {"metadata": {"annotations": {annotation: json.dumps(
        request, ensure_ascii=False, separators=(",", ":"))}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, args.service,
                                          patch)
    print(f"asked the operator to {args.command} {namespace}/{args.service} as "
          f"{request['by']}: {request['reason']}")
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
