"""The regulated team cannot undo enforcement; the compliance group can suspend and resume
(Art.14, Art.21). Issue 15, against the real apiserver.

Three people, each a real client certificate (CN = user, O = groups), with RBAC exactly as the
chart installs it (`helm template` of its rbac-* templates): a team member holding only the
namespace `edit` ClusterRole, and two members of a compliance group bound to the chart's
compliance ClusterRole, one of them also in the group of an authority. The operator runs under
the chart's operator ServiceAccount (a TokenRequest token), the webhook as a local process. Each
attack the issue lists is tried as the team would, and is refused or has no effect, and says why.

The cluster is shared with other tests, so what is cluster-wide here is made unique (release
name, groups, policy name) and the chart's admission policies are bound to this test's
namespaces only (their bindings get a namespaceSelector; the policies are the chart's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from people import (  # type: ignore[import-not-found]
    Person,
    admin,
    apply_all,
    chart_rbac,
    person,
    service_account,
)

from hegui.admission import configuration
from hegui.admission.local import LocalWebhook, free_port
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

pytestmark = pytest.mark.cluster

ID = uuid.uuid4().hex[:6]
RELEASE = f"sod-{ID}"
FULLNAME = f"{RELEASE}-hegui"
HEGUI_NS = f"sod-hegui-{ID}"
TEAM_NS = f"sod-team-{ID}"
COMPLIANCE = f"hegui:compliance-{ID}"
AUTHORITY = f"cac:beijing-{ID}"
LABEL = "hegui.io/separation-test"


@dataclass
class World:
    cluster: LocalCluster
    team: Person
    wang: Person  # compliance, and in the authority's group
    li: Person  # compliance only
    operator: Person  # the chart's operator ServiceAccount
    admin: Person


def _register_network_policy_guard(cluster: LocalCluster, webhook: LocalWebhook,
                                   directory: Path) -> str:
    """The chart's NetworkPolicy webhook, under a name of this test's, for its namespaces."""
    config = configuration.validating_webhook_configuration(
        ca_bundle=cluster.pki.ca_cert.read_bytes(), own_namespace=HEGUI_NS,
        url=f"{webhook.url}/validate")
    [hook] = [h for h in config["webhooks"]
              if h["name"] == configuration.NETWORK_POLICY_WEBHOOK_NAME]
    hook["namespaceSelector"] = {"matchLabels": {LABEL: ID}}
    config["metadata"]["name"] = f"hegui-separation-{ID}"
    config["webhooks"] = [hook]
    apply_all(cluster, [config], directory)
    return str(config["metadata"]["name"])


@pytest.fixture(scope="module")
def world(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    cluster = local_cluster
    if not cluster.binary("helm").exists():
        pytest.skip(f"no helm binary at {cluster.binary('helm')}: run dev/controlplane/build")
    directory = tmp_path_factory.mktemp("separation")
    cluster.kubectl("apply", "--server-side", "-f", str(_CHECKOUT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    for namespace in (HEGUI_NS, TEAM_NS):
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("label", "namespace", namespace, f"{LABEL}={ID}")
    rbac = chart_rbac(cluster, release=RELEASE, namespace=HEGUI_NS,
                      compliance_group=COMPLIANCE, label=LABEL, value=ID)
    apply_all(cluster, rbac, directory)
    cluster.kubectl("-n", TEAM_NS, "create", "rolebinding", "team-edit", "--clusterrole=edit",
                    f"--user=team-alice-{ID}")
    policy = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
              "metadata": {"name": f"separation-{ID}"},
              "spec": {"namespaces": [TEAM_NS], "defaultMode": "Audit",
                       "sidecar": {"image": "registry.example.cn/hegui/sidecar:0.1.0",
                                   "port": 8443}}}
    apply_all(cluster, [policy], directory)
    webhook = LocalWebhook(cluster, directory)
    webhook.start()
    hook = _register_network_policy_guard(cluster, webhook, directory)
    operator = service_account(cluster, directory, HEGUI_NS, f"{FULLNAME}-operator")
    log = (directory / "operator.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "hegui"), "operator", "run",
         "--kubeconfig", str(operator.kubeconfig), "--namespace", TEAM_NS,
         "--metrics-address", f"127.0.0.1:{free_port()}",
         "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HEGUI_RECONCILE_SECONDS": "1", "HEGUI_AUDIT_SECONDS": "5"})
    try:
        yield World(cluster,
                    person(cluster, directory, f"team-alice-{ID}", f"team-{ID}"),
                    person(cluster, directory, f"officer-wang-{ID}", COMPLIANCE, AUTHORITY),
                    person(cluster, directory, f"officer-li-{ID}", COMPLIANCE),
                    operator, admin(cluster))
    finally:
        # The policy first, while the operator still runs to take its timer's finalizer off.
        cluster.kubectl("delete", "compliancepolicy", f"separation-{ID}", "--ignore-not-found",
                        "--timeout=60s", check=False)
        process.terminate()
        process.wait(20)
        log.close()
        webhook.stop()
        cluster.kubectl("delete", "validatingwebhookconfiguration", hook, "--ignore-not-found",
                        check=False)
        for obj in rbac:
            if not obj["metadata"].get("namespace"):
                cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"],
                                "--ignore-not-found", check=False)
        for namespace in (TEAM_NS, HEGUI_NS):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _until(check: Callable[[], Any], timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def _service(world: World) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(world.admin.kubectl(
        "-n", TEAM_NS, "get", "gsvc", "chat", "-o", "json").stdout)
    return found


def _suspension(world: World) -> dict[str, Any]:
    found: dict[str, Any] = (_service(world).get("status") or {}).get("suspension") or {}
    return found


def _requests(world: World, plural: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(world.admin.kubectl(
        "-n", TEAM_NS, "get", plural, "-o", "json").stdout)["items"]
    return sorted(items, key=lambda r: r["metadata"]["creationTimestamp"])


SERVICE: dict[str, Any] = {
    "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
    "metadata": {"name": "chat", "namespace": TEAM_NS},
    "spec": {"selector": {"matchLabels": {"app": "chat"}},
             "filing": {"publicOpinion": False,
                        "algorithm": {"number": "网信算备110108823483901230011号"}},
             "labeling": {"modalities": ["text"],
                          "implicit": {"contentProducer": "Example AI Co."}},
             "suspension": {"mode": "Manual", "action": "IsolateNetwork"}}}


def test_the_team_declares_its_service_but_holds_nothing_that_suspends_or_resumes(
        world: World) -> None:
    created = world.team.apply(SERVICE)  # hegui-edit is aggregated into edit
    assert created.returncode == 0, created.stderr
    assert _until(lambda: _service(world).get("status", {}).get("conditions"))
    for verb, resource, allowed in (("create", "generativeservices", "yes"),
                                    ("create", "suspensionorders", "no"),
                                    ("create", "resumerequests", "no"),
                                    ("patch", "generativeservices --subresource=status", "no"),
                                    ("get", "suspensionorders", "yes")):
        answer = world.team.kubectl("-n", TEAM_NS, "auth", "can-i", verb, *resource.split())
        assert answer.stdout.strip() == allowed, (verb, resource, answer.stdout)
    refused = world.team.hegui("suspend", "chat", "-n", TEAM_NS, "--reason",
                               "we would rather decide this ourselves")
    assert refused.returncode != 0
    assert "403" in refused.stderr and "suspensionorders" in refused.stderr
    order = {"apiVersion": "hegui.io/v1alpha1", "kind": "ResumeRequest",
             "metadata": {"name": "team-resume", "namespace": TEAM_NS},
             "spec": {"serviceRef": {"name": "chat"}, "reason": "we would like to serve",
                      "requestedBy": f"team-alice-{ID}"}}
    forbidden = world.team.apply(order, "create")
    assert forbidden.returncode != 0 and "forbidden" in forbidden.stderr.lower()


def test_the_team_cannot_let_its_model_dial_around_the_sidecar(world: World) -> None:
    """Egress (Art.14): the sidecar sees only what comes in, so a model that dials out (a
    reverse tunnel, a queue it pulls prompts from) serves around it. hegui's NetworkPolicy,
    accepted by the real apiserver, lets the pods dial only cluster DNS and hegui's namespace
    here; the team's own policy letting them dial anywhere is refused; narrowing is not."""
    policy = _until(lambda: json.loads(world.admin.kubectl(
        "-n", TEAM_NS, "get", "networkpolicy", "hegui-chat", "-o", "json").stdout or "{}"))
    assert policy, "the operator never wrote hegui-chat"
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["to"] for rule in policy["spec"]["egress"]] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "hegui-system"}}}]]
    dial_out = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "dial-out", "namespace": TEAM_NS},
                "spec": {"podSelector": {"matchLabels": {"app": "chat"}},
                         "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}
    refused = world.team.apply(dial_out, "create")
    assert refused.returncode != 0
    assert "[injection, Art.14]" in refused.stderr and "spec.sidecar.egress" in refused.stderr
    assert "GenerativeService chat" in refused.stderr
    # Kubernetes' own defaulting is no way around it: policyTypes absent, egress rules present.
    sneaky = {**dial_out, "metadata": {"name": "sneaky", "namespace": TEAM_NS},
              "spec": {"podSelector": {}, "ingress": [],
                       "egress": [{"ports": [{"port": 443}]}]}}
    assert world.team.apply(sneaky, "create").returncode != 0
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-egress", "namespace": TEAM_NS},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}
    narrowed = world.team.apply(deny, "create")
    assert narrowed.returncode == 0, narrowed.stderr  # narrowing is always allowed
    assert world.team.kubectl("-n", TEAM_NS, "delete", "networkpolicy",
                              "deny-egress").returncode == 0


def test_the_compliance_group_suspends_on_an_authoritys_order_in_its_own_name(
        world: World) -> None:
    forged = {"apiVersion": "hegui.io/v1alpha1", "kind": "SuspensionOrder",
              "metadata": {"name": "forged", "namespace": TEAM_NS},
              "spec": {"serviceRef": {"name": "chat"}, "reason": "in somebody else's name",
                       "requestedBy": f"officer-wang-{ID}"}}
    refused = world.li.apply(forged, "create")
    assert refused.returncode != 0
    assert "spec.requestedBy names" in refused.stderr and "Art.21" in refused.stderr
    stolen = world.li.hegui("suspend", "chat", "-n", TEAM_NS, "--reason", "an order, case 117",
                            "--authority", "北京市互联网信息办公室", "--reference", "117",
                            "--issuer-group", AUTHORITY)
    assert stolen.returncode != 0 and "not in group" in stolen.stderr  # not li's group

    ordered = world.wang.hegui("suspend", "chat", "-n", TEAM_NS, "--reason",
                               "生成内容违规 责令暂停 (case 2026-117)", "--authority",
                               "北京市互联网信息办公室", "--reference", "京网信 2026-117 号",
                               "--issuer-group", AUTHORITY)
    assert ordered.returncode == 0, ordered.stderr
    suspension = _until(lambda: (s := _suspension(world)).get("suspended") and s)
    assert suspension, _service(world)
    record = suspension["history"][0]
    assert record["trigger"] == "Order" and record["issuerGroup"] == AUTHORITY
    assert record["suspendedBy"] == f"officer-wang-{ID}"
    assert "京网信 2026-117 号" in record["authority"]
    [order] = _requests(world, "suspensionorders")
    assert order["metadata"]["uid"] in suspension["consumedRequests"]
    assert _until(lambda: _requests(world, "suspensionorders")[0].get("status"))["phase"] \
        == "Applied"
    # IsolateNetwork: hegui's NetworkPolicy admits nothing now.
    policy = _until(lambda: json.loads(world.admin.kubectl(
        "-n", TEAM_NS, "get", "networkpolicy", "hegui-chat", "-o", "json").stdout or "{}"))
    assert policy["spec"].get("ingress", []) == [], policy  # the apiserver drops an empty list
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]  # dialling out closed too
    notice = json.loads(world.admin.kubectl("-n", TEAM_NS, "get", "configmap",
                                            "hegui-sidecar-chat", "-o", "json").stdout)
    assert "suspended: true" in notice["data"]["suspension.yaml"]


def test_the_team_cannot_lift_the_suspension_with_anything_it_may_write(world: World) -> None:
    team = world.team
    # An annotation dated 2099 in an officer's name: the apiserver stores it, hegui ignores it.
    forged = json.dumps({"by": f"officer-wang-{ID}", "reason": "resume now please",
                         "at": "2099-01-01T00:00:00Z"})
    assert team.kubectl("-n", TEAM_NS, "annotate", "gsvc", "chat",
                        f"hegui.io/resume={forged}").returncode == 0
    # The sidecars' configuration: not to be edited, deleted or recreated by the team.
    edited = team.kubectl("-n", TEAM_NS, "patch", "configmap", "hegui-sidecar-chat",
                          "--type=merge", "-p",
                          json.dumps({"data": {"suspension.yaml": "suspended: false\n"}}))
    assert edited.returncode != 0
    assert "[suspension, Art.21] ConfigMap" in edited.stderr and "only hegui" in edited.stderr
    deleted = team.kubectl("-n", TEAM_NS, "delete", "configmap", "hegui-sidecar-chat")
    assert deleted.returncode != 0 and "may not delete it" in deleted.stderr
    # The service itself: not deleted (state and history would go), not re-selected.
    gone = team.kubectl("-n", TEAM_NS, "delete", "gsvc", "chat", "--wait=false")
    assert gone.returncode != 0
    assert "is suspended" in gone.stderr and "ResumeRequest" in gone.stderr
    moved = team.kubectl("-n", TEAM_NS, "patch", "gsvc", "chat", "--type=merge", "-p",
                         json.dumps({"spec": {"selector": {"matchLabels": {"app": "none"}}}}))
    assert moved.returncode != 0 and "spec.selector" in moved.stderr
    # Its own NetworkPolicy re-opening the pods hegui isolates: refused by the webhook.
    opener = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "allow-all-to-chat", "namespace": TEAM_NS},
              "spec": {"podSelector": {}, "ingress": [{}]}}
    widened = team.apply(opener, "create")
    assert widened.returncode != 0
    assert "[suspension, Art.21]" in widened.stderr and "GenerativeService chat" in widened.stderr
    dialler = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "dial-out-while-suspended", "namespace": TEAM_NS},
               "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    dialled = team.apply(dialler, "create")
    assert dialled.returncode != 0 and "[suspension, Art.21]" in dialled.stderr
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": TEAM_NS},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    narrowed = team.apply(deny, "create")
    assert narrowed.returncode == 0, narrowed.stderr  # narrowing is always allowed
    time.sleep(3)  # several reconciles
    suspension = _suspension(world)
    assert suspension["suspended"] is True and len(suspension["history"]) == 1
    config = json.loads(world.admin.kubectl("-n", TEAM_NS, "get", "configmap",
                                            "hegui-sidecar-chat", "-o", "json").stdout)
    assert "suspended: true" in config["data"]["suspension.yaml"]


def test_an_authoritys_order_is_lifted_only_by_its_issuer_group(world: World) -> None:
    asked = world.li.hegui("resume", "chat", "-n", TEAM_NS, "--reason",
                           "the model was retrained, please resume")
    assert asked.returncode == 0, asked.stderr  # li may ask, as compliance
    request = _until(lambda: (r := _requests(world, "resumerequests")) and r[-1].get("status")
                     and r[-1])
    assert request["status"]["phase"] == "Ignored", request
    assert AUTHORITY in request["status"]["message"]
    assert _suspension(world)["suspended"] is True

    lifted = world.wang.hegui("resume", "chat", "-n", TEAM_NS, "--reason",
                              "the office lifted its order on 2026-11-30")
    assert lifted.returncode == 0, lifted.stderr
    suspension = _until(lambda: (s := _suspension(world)).get("suspended") is False and s)
    assert suspension, _service(world)
    assert suspension["history"][0]["resumedBy"] == f"officer-wang-{ID}"
    policy = _until(lambda: (p := json.loads(world.admin.kubectl(
        "-n", TEAM_NS, "get", "networkpolicy", "hegui-chat", "-o", "json").stdout))
        ["spec"].get("ingress") and p)
    # Every TCP port reaches the sidecar again (capture Redirect, no port declared open).
    assert policy["spec"]["ingress"] == [
        {"ports": [{"port": 1, "endPort": 65535, "protocol": "TCP"}]}]
    # Not suspended: the team may delete its service again (and its state goes with it).


def test_the_team_cannot_hand_its_sidecars_an_evidence_store_of_its_own(world: World) -> None:
    """The Secret hegui-evidence-<service> says where and as whom a service's records are
    shipped (Art.11): a team that could write it first, or rewrite it, would point its
    sidecars at a store or a sealing key of its own."""
    data = {"access-key": "mine", "secret-key": "mine", "evidence.key": "a key the team chose",
            "evidence.yaml": "store: http://team-store.example:9000/b\n"}
    forged: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hegui-evidence-chat", "namespace": TEAM_NS}, "stringData": data}
    created = world.team.apply(forged, "create")
    assert created.returncode != 0
    assert "[dataProtection, Art.11] Secret" in created.stderr, created.stderr
    assert "only the operator writes it" in created.stderr
    # Other Secrets of the team's are the team's own business.
    own = world.team.apply({**forged, "metadata": {"name": "team-own", "namespace": TEAM_NS}},
                           "create")
    assert own.returncode == 0, own.stderr
    # Once the operator has written it (here the platform, as system:masters), the team can
    # neither rewrite it nor delete it to have it recreated.
    kept = {**forged, "stringData": {**data, "evidence.key": "the operator's"}}
    assert world.admin.apply(kept, "create").returncode == 0
    for verb in ("replace", "apply"):
        rewritten = world.team.apply(forged, verb)
        assert rewritten.returncode != 0, (verb, rewritten.stdout)
        assert "[dataProtection, Art.11] Secret" in rewritten.stderr, rewritten.stderr
        assert "may not update it" in rewritten.stderr, rewritten.stderr
    deleted = world.team.kubectl("-n", TEAM_NS, "delete", "secret", "hegui-evidence-chat")
    assert deleted.returncode != 0 and "may not delete it" in deleted.stderr, deleted.stderr
    # Deleting the whole collection (kubectl's one by one, and the API's DELETECOLLECTION,
    # admitted object by object): the guard holds there too.
    swept = world.team.kubectl("-n", TEAM_NS, "delete", "secrets", "--all")
    assert "may not delete it" in swept.stderr, (swept.stdout, swept.stderr)
    collection = world.team.kubectl("delete", "--raw",
                                    f"/api/v1/namespaces/{TEAM_NS}/secrets")
    assert collection.returncode != 0, collection.stdout
    still = json.loads(world.admin.kubectl("-n", TEAM_NS, "get", "secret",
                                           "hegui-evidence-chat", "-o", "json").stdout)
    assert still["data"]["evidence.key"] == "dGhlIG9wZXJhdG9yJ3M="  # "the operator's"
    # The anchors the operator keeps of the store's heads live in hegui's namespace, where the
    # team holds nothing: it can neither delete them nor write its own there.
    anchors = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "hegui-evidence-anchors", "namespace": HEGUI_NS},
               "data": {"20261201T000000000000Z-operator.json": "{}"}}
    assert world.admin.apply(anchors, "create").returncode == 0
    for attempt in (world.team.kubectl("-n", HEGUI_NS, "delete", "configmap",
                                       "hegui-evidence-anchors"),
                    world.team.apply({**anchors, "data": {}}, "replace")):
        assert attempt.returncode != 0 and "forbidden" in attempt.stderr.lower(), \
            attempt.stderr


def test_the_operator_writes_only_what_hegui_owns(world: World) -> None:
    admin, operator = world.admin, world.operator
    admin.kubectl("-n", TEAM_NS, "create", "configmap", "team-settings", "--from-literal=a=1")
    admin.kubectl("-n", TEAM_NS, "create", "-f", "-", stdin=json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "team-egress", "namespace": TEAM_NS},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}))
    assert operator.kubectl("-n", TEAM_NS, "auth", "can-i", "update",
                            "configmaps").stdout.strip() == "yes"  # RBAC alone would allow
    settings = json.loads(admin.kubectl("-n", TEAM_NS, "get", "configmap", "team-settings",
                                        "-o", "json").stdout)
    settings["data"]["a"] = "2"
    touched = operator.kubectl("replace", "-f", "-", stdin=json.dumps(settings))  # update
    assert touched.returncode != 0 and "writes only its own objects" in touched.stderr
    removed = operator.kubectl("-n", TEAM_NS, "delete", "networkpolicy", "team-egress")
    assert removed.returncode != 0 and "writes only its own objects" in removed.stderr


def test_a_configmap_made_immutable_is_recreated_and_reconcile_goes_on(world: World) -> None:
    """Someone who may (here the platform) replaces the sidecars' ConfigMap with an immutable
    one saying 'not suspended': the operator deletes and recreates it; nothing else stops."""
    admin = world.admin
    frozen = admin.kubectl("-n", TEAM_NS, "replace", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
        "metadata": {"name": "hegui-sidecar-chat", "namespace": TEAM_NS},
        "data": {"suspension.yaml": "suspended: false\n"}}))
    assert frozen.returncode == 0, frozen.stderr

    def rendered() -> dict[str, Any] | None:
        found = json.loads(admin.kubectl("-n", TEAM_NS, "get", "configmap",
                                         "hegui-sidecar-chat", "-o", "json").stdout or "{}")
        return found if "service.yaml" in found.get("data", {}) else None

    config = _until(rendered)
    assert config is not None and not config.get("immutable")
    assert config["metadata"]["ownerReferences"][0]["name"] == "chat"


def test_a_policy_written_before_the_service_is_reported_on_it(world: World) -> None:
    """A team's NetworkPolicy that admits ingress to pods before any GenerativeService selects
    them is admitted (nothing to protect yet); once the service exists it would reopen the
    model's port around the sidecar, so the operator reports it on the service, naming the pod,
    and the team cannot add another (Art.14; Art.21 while suspended)."""
    team = world.team
    opener = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "search-open", "namespace": TEAM_NS},
              "spec": {"podSelector": {"matchLabels": {"app": "search"}},
                       "ingress": [{"ports": [{"port": 8000}]}]}}
    early = team.apply(opener, "create")
    assert early.returncode == 0, early.stderr
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "search-0", "namespace": TEAM_NS, "labels": {"app": "search"}},
           "spec": {"containers": [{"name": "model", "image": "llm:1",
                                    "ports": [{"containerPort": 8000}]}]}}
    assert team.apply(pod, "create").returncode == 0
    service = json.loads(json.dumps(SERVICE).replace('"chat"', '"search"'))
    service["metadata"]["name"] = "search"
    created = team.apply(service, "create")
    assert created.returncode == 0, created.stderr

    def reported() -> dict[str, Any] | None:
        status = json.loads(world.admin.kubectl("-n", TEAM_NS, "get", "gsvc", "search", "-o",
                                                "json").stdout).get("status") or {}
        return next((f for f in status.get("findings") or []
                     if "NetworkPolicy search-open" in f.get("message", "")), None)

    finding = _until(reported)
    assert finding is not None, "the operator never reported the team's NetworkPolicy"
    assert finding["rule"] == "injection" and finding["article"] == "Art.14"
    assert "search-0" in finding["message"] and "widens hegui-search" in finding["message"]
    again = dict(opener, metadata={"name": "search-open-2", "namespace": TEAM_NS})
    refused = team.apply(again, "create")
    assert refused.returncode != 0 and "GenerativeService search" in refused.stderr
