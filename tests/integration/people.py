"""People for the integration tests that act as the regulated team, the compliance group and
hegui's own ServiceAccounts against the real apiserver (separation of duties), and the chart's
RBAC as it renders them.

Each person is a real identity: a client certificate (CN = user, O = groups) from the local
cluster's CA, or a ServiceAccount's TokenRequest token. The cluster is shared with other tests,
so the chart's admission policies are bound to the calling test's namespaces only (their
bindings get a namespaceSelector on `label`; the policies are the chart's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from hegui.localcluster import pki
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

#: `kubectl hegui`, as installed beside this interpreter.
PLUGIN = str(Path(sys.executable).parent / "kubectl-hegui")
#: The chart's templates that say who may do what (users, guards, the operator, its accounts).
RBAC_TEMPLATES = ("rbac-users.yaml", "rbac-guards.yaml", "rbac-operator.yaml",
                  "serviceaccounts.yaml")


@dataclass
class Person:
    user: str
    kubeconfig: Path
    cluster: LocalCluster

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.cluster.binary("kubectl")), "--kubeconfig",
                               str(self.kubeconfig), *args], input=stdin, capture_output=True,
                              text=True, timeout=120, check=False)

    def apply(self, obj: dict[str, Any], verb: str = "apply") -> subprocess.CompletedProcess[str]:
        return self.kubectl(verb, "-f", "-", stdin=json.dumps(obj))

    def hegui(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PLUGIN, "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})


def admin(cluster: LocalCluster) -> Person:
    """The cluster's admin (the platform, or whoever installs hegui)."""
    return Person("admin", cluster.kubeconfig, cluster)


def person(cluster: LocalCluster, directory: Path, user: str, *groups: str) -> Person:
    """A user with a client certificate in these groups."""
    ca = pki.CertificateAuthority.load(cluster.pki.ca_cert, cluster.pki.ca_key)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user),
                         *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups)])
    cert, key = ca.issue(subject, client=True)
    path = directory / f"{user}.kubeconfig"
    pki.write_kubeconfig(path, server=cluster.server_url, ca_pem=cluster.pki.ca_cert.read_bytes(),
                         cert_pem=cert, key_pem=key, user=user)
    return Person(user, path, cluster)


def service_account(cluster: LocalCluster, directory: Path, namespace: str,
                    account: str) -> Person:
    """A ServiceAccount, through a TokenRequest token (an hour)."""
    token = cluster.kubectl("create", "token", account, "-n", namespace,
                            "--duration=1h").stdout.strip()
    config = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o",
                                        "json").stdout)
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    path = directory / f"{account}.kubeconfig"
    path.write_text(json.dumps(config))
    return Person(f"system:serviceaccount:{namespace}:{account}", path, cluster)


def chart_rbac(cluster: LocalCluster, *, release: str, namespace: str, compliance_group: str,
               label: str, value: str) -> list[dict[str, Any]]:
    """The chart's roles, guards, ServiceAccounts and the operator's RBAC, as it renders them,
    its admission policies bound to namespaces labelled `label=value`."""
    rendered = subprocess.run(
        [str(cluster.binary("helm")), "template", release, str(_CHECKOUT / "charts" / "hegui"),
         "--namespace", namespace, "--kube-version", "1.36.0",
         "--set", f"rbac.complianceGroups[0]={compliance_group}",
         *(f"--show-only=templates/{t}" for t in RBAC_TEMPLATES)],
        capture_output=True, text=True, check=True, timeout=120).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    for obj in objects:
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            obj["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {label: value}}}
    return objects


def apply_all(cluster: LocalCluster, objects: list[dict[str, Any]], directory: Path) -> None:
    """Apply these objects as the admin, in one call."""
    path = directory / f"{uuid.uuid4().hex}.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    cluster.kubectl("apply", "-f", str(path))
