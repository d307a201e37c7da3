"""The Helm chart on the real local control plane: install, RBAC, certificates, uninstall.

The chart is installed with the real `helm` into a namespace that enforces the restricted Pod
Security Standard; kwok runs its pods. hegui's components are then run as processes beside the
cluster with the chart's own ServiceAccount tokens (TokenRequest API), so a missing verb shows
up as a 403 in their logs, not as an assumption. Tests run in file order and share one release.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from hegui.admission.configuration import POSTURE_WEBHOOK_NAME
from hegui.admission.local import free_port
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

pytestmark = pytest.mark.cluster

CHART = _CHECKOUT / "charts" / "hegui"
RELEASE = "hegui"
#: Fresh per run: a namespace of an earlier run may still be terminating.
NAMESPACE = f"hegui-chart-{uuid.uuid4().hex[:6]}"
HEGUI = str(Path(sys.executable).parent / "hegui")


@dataclass
class Release:
    cluster: LocalCluster
    notes: str
    workdir: Path

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.cluster.binary("helm")), "--kubeconfig", str(self.cluster.kubeconfig),
             *args], capture_output=True, text=True, timeout=300)
        if check and result.returncode:
            raise AssertionError(f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}")
        return result

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def apply(self, *objects: dict[str, Any]) -> None:
        path = self.workdir / f"{uuid.uuid4().hex}.yaml"
        path.write_text(yaml.safe_dump_all(objects, allow_unicode=True))
        result = self.kubectl("apply", "-f", str(path), check=False)
        assert result.returncode == 0, result.stderr

    def service_account_kubeconfig(self, name: str) -> Path:
        """A kubeconfig holding a fresh token of the chart's ServiceAccount `name`."""
        token = self.kubectl("create", "token", name, "-n", NAMESPACE,
                             "--duration=1h").stdout.strip()
        admin = json.loads(self.kubectl("config", "view", "--raw", "--minify",
                                        "-o", "json").stdout)
        admin["users"] = [{"name": name, "user": {"token": token}}]
        admin["contexts"][0]["context"]["user"] = name
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(json.dumps(admin))
        return path


@pytest.fixture(scope="module")
def release(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Release]:
    if not local_cluster.binary("helm").exists():
        pytest.skip(f"no helm binary at {local_cluster.binary('helm')}: run dev/controlplane/build")
    workdir = tmp_path_factory.mktemp("chart")
    leftover = local_cluster.kubectl(
        "get", "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        "hegui-validating", "hegui-mutating", "--ignore-not-found", "-o", "name").stdout
    assert not leftover.strip(), f"webhook configurations of another run are in the way: {leftover}"
    local_cluster.kubectl("create", "namespace", NAMESPACE)
    # The restricted Pod Security Standard: the apiserver refuses pods that run as root, keep
    # capabilities or lack seccomp, so the install itself proves the chart's pods meet it.
    local_cluster.kubectl("label", "namespace", NAMESPACE,
                          "pod-security.kubernetes.io/enforce=restricted")
    installed = Release(local_cluster, "", workdir)
    try:
        _adopt_existing_crds(local_cluster)
        result = installed.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                                "--wait", "--timeout", "180s")
        installed.notes = result.stdout
        yield installed
    finally:
        installed.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
        local_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _adopt_existing_crds(cluster: LocalCluster) -> None:
    """hegui's CRDs may be there already: applied by other tests, or kept (resource-policy keep)
    by an earlier release. Helm adopts objects that carry its ownership metadata: the step the
    chart's README gives for taking over existing CRDs."""
    names = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    for name in (n for n in names if n.endswith(".hegui.io")):
        cluster.kubectl("label", "--overwrite", name, "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl("annotate", "--overwrite", name, f"meta.helm.sh/release-name={RELEASE}",
                        f"meta.helm.sh/release-namespace={NAMESPACE}")


def test_chart_installs_and_its_pods_run(release: Release) -> None:
    pods = release.get("pods", "-n", NAMESPACE)["items"]
    components = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods)
    # Triton too: the sidecars' default moderation endpoint exists on a fresh install.
    assert components == ["operator", "operator", "triton", "webhook", "webhook"]
    assert all(p["status"]["phase"] == "Running" for p in pods)
    # The two webhook replicas landed on different nodes (anti-affinity; kwok has three).
    nodes = {p["spec"]["nodeName"] for p in pods
             if p["metadata"]["labels"]["app.kubernetes.io/component"] == "webhook"}
    assert len(nodes) == 2
    assert "rollout status deploy/hegui-webhook deploy/hegui-operator" in release.notes
    assert "Nothing is enforced yet" in release.notes


def test_every_documented_option_is_accepted_server_side(release: Release) -> None:
    """The all-options rendering passes the apiserver's own validation (schemas, CEL rules of
    hegui's CRDs, RBAC objects) in a server-side dry run. ServiceMonitor, PrometheusRule and
    cert-manager's kinds are left out: this cluster does not serve their APIs."""
    values = yaml.safe_load((CHART / "ci" / "all-values.yaml").read_text())
    values["monitoring"]["dashboard"]["namespace"] = ""
    path = release.workdir / "all-values.yaml"
    path.write_text(yaml.safe_dump(values))
    rendered = release.helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                            "--kube-version", "1.36.0", "--values", str(path)).stdout
    served = [d for d in yaml.safe_load_all(rendered) if d and not d["apiVersion"].startswith(
        ("monitoring.coreos.com/", "cert-manager.io/"))]
    manifest = release.workdir / "all.yaml"
    manifest.write_text(yaml.safe_dump_all(served, allow_unicode=True))
    result = release.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts",
                             "-f", str(manifest), check=False)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in served}
    assert {"Deployment", "ValidatingWebhookConfiguration", "CompliancePolicy",
            "NetworkPolicy", "ConfigMap"} <= kinds


# --- RBAC: sufficient, and no wider than needed --------------------------------------------------

OPERATOR_CALLS = [
    ("get", "generativeservices.hegui.io"), ("list", "generativeservices.hegui.io"),
    ("watch", "generativeservices.hegui.io"), ("patch", "generativeservices.hegui.io"),
    ("patch", "generativeservices.hegui.io", "status"),
    ("list", "compliancepolicies.hegui.io"), ("patch", "compliancepolicies.hegui.io"),
    ("watch", "complianceexceptions.hegui.io"), ("list", "daemonsets.apps"),
    ("list", "cronjobs.batch"), ("get", "policyreports.wgpolicyk8s.io"),
    ("create", "policyreports.wgpolicyk8s.io"), ("update", "policyreports.wgpolicyk8s.io"),
    ("list", "safetyassessments.hegui.io"), ("patch", "compliancepolicies.hegui.io", "status"),
    ("patch", "safetyassessments.hegui.io"), ("patch", "safetyassessments.hegui.io", "status"),
    ("watch", "namespaces"), ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "configmaps"), ("create", "configmaps"), ("update", "configmaps"),
    # delete: to recreate a sidecar ConfigMap someone made immutable; the chart's
    # <release>-operator-scope admission policy holds every ConfigMap write to hegui-sidecar-*.
    ("delete", "configmaps"),
    ("list", "suspensionorders.hegui.io"), ("patch", "resumerequests.hegui.io", "status"),
    ("list", "replicasets.apps"), ("patch", "leaderworkersets.leaderworkerset.x-k8s.io", "scale"),
    ("create", "networkpolicies.networking.k8s.io"),
    ("update", "networkpolicies.networking.k8s.io"),
    ("delete", "networkpolicies.networking.k8s.io"),
    ("list", "pods"), ("list", "services"), ("list", "deployments.apps"),
    ("list", "statefulsets.apps"), ("list", "jobs.batch"),
    ("create", "pods", "eviction"), ("create", "events"),
    ("get", "deployments.apps", "scale"), ("patch", "deployments.apps", "scale"),
    ("patch", "statefulsets.apps", "scale"),
]
OPERATOR_REFUSED = [
    ("get", "secrets"), ("create", "pods"), ("patch", "deployments.apps"),
    ("update", "deployments.apps"), ("delete", "generativeservices.hegui.io"),
    ("create", "compliancepolicies.hegui.io"), ("delete", "compliancepolicies.hegui.io"),
    ("create", "suspensionorders.hegui.io"), ("create", "resumerequests.hegui.io"),
    ("create", "daemonsets.apps"), ("delete", "pods"),
    ("watch", "pods"),
    ("update", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
]
WEBHOOK_CALLS = [
    ("list", "generativeservices.hegui.io"), ("watch", "compliancepolicies.hegui.io"),
    ("list", "complianceexceptions.hegui.io"), ("watch", "safetyassessments.hegui.io"),
    ("list", "namespaces"), ("watch", "resourceclaims.resource.k8s.io"),
    ("list", "resourceclaimtemplates.resource.k8s.io"),
]
WEBHOOK_REFUSED = [
    ("get", "secrets"), ("patch", "generativeservices.hegui.io"), ("create", "configmaps"),
    ("create", "events"), ("list", "pods"),
]


def _can(release: Release, account: str, verb: str, resource: str,
         subresource: str | None = None, namespace: str = "models") -> bool:
    """What the apiserver's authorizer answers for the ServiceAccount (a SubjectAccessReview,
    which also works for APIs this cluster does not serve, e.g. PolicyReports)."""
    resource, _, name = resource.partition("/")
    plural, _, group = resource.partition(".")
    attributes = {"verb": verb, "group": group, "resource": plural, "namespace": namespace,
                  "subresource": subresource or "", "name": name}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": f"system:serviceaccount:{NAMESPACE}:{account}",
                       "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}",
                                  "system:authenticated"],
                       "resourceAttributes": attributes}}
    path = release.workdir / f"review-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(review))
    answer = json.loads(release.kubectl("create", "-f", str(path), "-o", "json").stdout)
    return bool(answer["status"].get("allowed"))


@pytest.mark.parametrize(("account", "allowed", "refused"), [
    ("hegui-operator", OPERATOR_CALLS, OPERATOR_REFUSED),
    ("hegui-webhook", WEBHOOK_CALLS, WEBHOOK_REFUSED),
], ids=["operator", "webhook"])
def test_service_accounts_may_make_their_calls_and_no_more(
        release: Release, account: str, allowed: list[tuple[str, ...]],
        refused: list[tuple[str, ...]]) -> None:
    missing = [call for call in allowed if not _can(release, account, *call)]
    assert not missing, f"{account} lacks {missing}"
    wider = [call for call in refused if _can(release, account, *call)]
    assert not wider, f"{account} may also {wider}"


def test_operator_leader_election_is_limited_to_its_lease(release: Release) -> None:
    account = "hegui-operator"
    assert _can(release, account, "create", "leases.coordination.k8s.io", namespace=NAMESPACE)
    assert _can(release, account, "update", "leases.coordination.k8s.io/hegui-operator",
                namespace=NAMESPACE)
    assert not _can(release, account, "update", "leases.coordination.k8s.io/kube-scheduler",
                    namespace="kube-system")
    assert not _can(release, account, "update", "leases.coordination.k8s.io/other",
                    namespace=NAMESPACE)


def _samples(namespace: str, *names: str) -> list[dict[str, Any]]:
    """hegui's sample compliance objects, moved into `namespace`."""
    found = []
    for name in names:
        for obj in yaml.safe_load_all((_CHECKOUT / "samples" / "compliance" / name).read_text()):
            if obj:
                obj["metadata"]["namespace"] = namespace
                found.append(obj)
    return found


def _forbidden(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "403" in line or "orbidden" in line or "Not enough permissions" in line]


def _without_posture_webhook(release: Release) -> None:
    """kwok runs no webhook pod, so the chart's posture webhook (GenerativeServices against the
    policy floor, failing closed) cannot answer here, and its Service's ClusterIP must not be
    dialled from this machine. It is taken out of the chart's configuration for the tests that
    write hegui's objects; the posture rule itself is tested against a running webhook in
    test_team_cannot_undo_admission.py."""
    hooks = release.get("validatingwebhookconfiguration", "hegui-validating")["webhooks"]
    names = [hook["name"] for hook in hooks]
    if POSTURE_WEBHOOK_NAME not in names:
        return
    index = names.index(POSTURE_WEBHOOK_NAME)
    release.kubectl("patch", "validatingwebhookconfiguration", "hegui-validating", "--type=json",
                    "-p", json.dumps([
                        {"op": "test", "path": f"/webhooks/{index}/name",
                         "value": POSTURE_WEBHOOK_NAME},
                        {"op": "remove", "path": f"/webhooks/{index}"}]))


def test_operator_reconciles_under_its_service_account(release: Release) -> None:
    """`hegui operator run` with the chart's operator token: the service's status, its sidecar
    ConfigMap and NetworkPolicy are written, and no call is refused."""
    namespace = f"chart-{uuid.uuid4().hex[:6]}"
    release.kubectl("create", "namespace", namespace)
    policy = f"chart-it-{namespace}"
    cleanup = [("compliancepolicy", policy), ("namespace", namespace)]
    _without_posture_webhook(release)
    try:
        release.apply(
            {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
             "metadata": {"name": policy},
             "spec": {"namespaces": [namespace], "defaultMode": "Enforce",
                      "sidecar": {"image": "registry.example.cn/hegui/sidecar:0.1.0"}}},
            *_samples(namespace, "chat-service.yaml", "safety-assessment.yaml"))
    except AssertionError:
        for kind, name in cleanup:
            release.kubectl("delete", kind, name, "--wait=false", check=False)
        raise
    kubeconfig = release.service_account_kubeconfig("hegui-operator")
    log_path = release.workdir / "operator.log"
    # A ServiceAccount token kubeconfig, as --kubeconfig (kopf must get the bearer token too).
    env = {**os.environ, "HEGUI_RECONCILE_SECONDS": "1",
           "HEGUI_AUDIT_SECONDS": "1", "POD_NAME": "chart-it-operator"}
    with log_path.open("wb") as sink:
        # With leader election on the chart's Lease, as the chart runs it (kwok's pods do not
        # really run, so this process takes the Lease).
        process = subprocess.Popen(
            [HEGUI, "operator", "run", "--kubeconfig", str(kubeconfig),
             "--metrics-address", f"127.0.0.1:{free_port()}",
             "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
             "--leader-election", f"--lease={NAMESPACE}/hegui-operator"],
            stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            status: dict[str, Any] = {}
            made = False
            while time.monotonic() < deadline:
                status = release.get("gsvc", "chat", "-n", namespace).get("status") or {}
                made = release.kubectl("get", "configmap/hegui-sidecar-chat",
                                       "networkpolicy/hegui-chat", "-n", namespace,
                                       check=False).returncode == 0
                if status.get("conditions") and made:
                    break
                time.sleep(1)
            # A posture change: the ConfigMap is replaced (update) by the operator.
            release.kubectl("patch", "gsvc", "chat", "-n", namespace, "--type=merge", "-p",
                            json.dumps({"spec": {"displayName": "AI生成"}}, ensure_ascii=False))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                data = release.get("configmap", "hegui-sidecar-chat", "-n", namespace)["data"]
                if "AI生成" in data["service.yaml"]:
                    break
                time.sleep(1)
            time.sleep(3)  # a few timer rounds: list pods/workloads, status patches
        finally:
            process.terminate()
            process.wait(30)
            for kind, name in cleanup:
                release.kubectl("delete", kind, name, "--wait=false", check=False)
    log = log_path.read_text(errors="replace")
    holder = release.get("lease", "hegui-operator", "-n", NAMESPACE)["spec"]["holderIdentity"]
    assert holder == "chart-it-operator"
    assert status.get("conditions"), f"no status written:\n{log[-3000:]}"
    assert status.get("observedGeneration") == 1
    assert made, f"the sidecar ConfigMap or the NetworkPolicy was not written:\n{log[-3000:]}"
    assert "AI生成" in data["service.yaml"], log[-3000:]
    assert not _forbidden(log), "\n".join(_forbidden(log)[:5])


def test_webhook_syncs_under_its_service_account_with_the_charts_certificate(
        release: Release) -> None:
    """`hegui webhook serve` with the chart's webhook token and the chart's serving certificate:
    ready means every mirrored resource was listed and watched; the certificate it serves is
    valid for the webhook Service's name and chains to the configurations' caBundle."""
    secret = release.get("secret", "hegui-webhook-tls", "-n", NAMESPACE)["data"]
    cert, key = release.workdir / "tls.crt", release.workdir / "tls.key"
    cert.write_bytes(base64.b64decode(secret["tls.crt"]))
    key.write_bytes(base64.b64decode(secret["tls.key"]))
    key.chmod(0o600)
    hook = release.get("validatingwebhookconfiguration", "hegui-validating")["webhooks"][0]
    ca_bundle = base64.b64decode(hook["clientConfig"]["caBundle"]).decode()
    assert hook["clientConfig"]["service"] == {"namespace": NAMESPACE, "name": "hegui-webhook",
                                               "path": "/validate", "port": 443}
    kubeconfig = release.service_account_kubeconfig("hegui-webhook")
    port = free_port()
    log_path = release.workdir / "webhook.log"
    with log_path.open("wb") as sink:
        process = subprocess.Popen(
            [HEGUI, "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--cert-file", str(cert), "--key-file", str(key), "--kubeconfig", str(kubeconfig)],
            stdout=sink, stderr=subprocess.STDOUT)
        try:
            context = ssl.create_default_context(cadata=ca_bundle)
            answer, served = b"", b""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and b" 200 " not in answer.split(b"\r\n")[0]:
                time.sleep(0.5)
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                            context.wrap_socket(
                                raw, server_hostname=f"hegui-webhook.{NAMESPACE}.svc") as tls:
                        tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: hegui-webhook\r\n"
                                    b"Connection: close\r\n\r\n")
                        answer = tls.recv(4096)
                        served = tls.getpeercert(binary_form=True) or b""
                except OSError:
                    continue
        finally:
            process.terminate()
            process.wait(30)
    log = log_path.read_text(errors="replace")
    assert b" 200 " in answer.split(b"\r\n")[0], f"never ready:\n{log[-3000:]}"
    assert served == x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        Encoding.DER)
    assert not _forbidden(log), "\n".join(_forbidden(log)[:5])


# --- certificates across upgrades ----------------------------------------------------------------


def _certificates(release: Release) -> tuple[bytes, bytes, bytes]:
    tls = release.get("secret", "hegui-webhook-tls", "-n", NAMESPACE)["data"]
    ca = release.get("secret", "hegui-webhook-ca", "-n", NAMESPACE)["data"]
    hook = release.get("validatingwebhookconfiguration", "hegui-validating")["webhooks"][0]
    return (base64.b64decode(tls["tls.crt"]), base64.b64decode(ca["tls.crt"]),
            base64.b64decode(hook["clientConfig"]["caBundle"]))


def test_upgrade_keeps_certificates_and_renews_them_near_expiry(release: Release) -> None:
    serving, ca, bundle = _certificates(release)
    assert bundle == ca
    release.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values")
    assert _certificates(release) == (serving, ca, bundle), "a plain upgrade rotated the certs"

    # The serving certificate is within renewBeforeDays of expiry: renewed, CA kept.
    release.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
                 "--set", "bootstrapCerts.renewBeforeDays=400")
    renewed, same_ca, same_bundle = _certificates(release)
    assert renewed != serving and (same_ca, same_bundle) == (ca, bundle)
    x509.load_pem_x509_certificate(renewed).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca))

    # The CA too: a new CA signs a new certificate, and the caBundle trusts the old CA as well
    # while pods still serve the old pair.
    release.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
                 "--set", "bootstrapCerts.renewBeforeDays=4000")
    newest, new_ca, new_bundle = _certificates(release)
    assert new_ca != ca
    trusted = x509.load_pem_x509_certificates(new_bundle)
    assert {c.public_bytes(Encoding.DER) for c in trusted} == {
        x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        for pem in (ca, new_ca)}
    x509.load_pem_x509_certificate(newest).verify_directly_issued_by(
        x509.load_pem_x509_certificate(new_ca))
    release.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
                 "--set", "bootstrapCerts.renewBeforeDays=30")


def test_install_into_an_enforced_namespace_is_refused(release: Release) -> None:
    namespace = f"models-{uuid.uuid4().hex[:6]}"
    policy = f"chart-it-{namespace}"
    release.kubectl("create", "namespace", namespace)
    release.apply({"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
                   "metadata": {"name": policy},
                   "spec": {"namespaces": [namespace], "defaultMode": "Enforce"}})
    try:
        result = release.helm("install", "hegui-two", str(CHART), "--namespace", namespace,
                              "--dry-run=server", check=False)
    finally:
        release.kubectl("delete", "compliancepolicy", policy, check=False)
        release.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    assert result.returncode != 0
    assert f'enforced by CompliancePolicy "{policy}"' in result.stderr, result.stderr
    assert "Art.17" in result.stderr


def test_uninstall_leaves_no_webhook_configuration(release: Release) -> None:
    release.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    left = release.kubectl("get", "validatingwebhookconfiguration,mutatingwebhookconfiguration",
                           "-o", "name").stdout.split()
    assert not [name for name in left if "hegui" in name], left
    # The CRDs stay (helm.sh/resource-policy: keep), and with them every GenerativeService.
    crds = release.kubectl("get", "crd", "-o", "name").stdout
    assert "generativeservices.hegui.io" in crds
    assert not release.get("clusterrole", "-l", "app.kubernetes.io/instance=hegui")["items"]
