"""A provider's keyword lexicon reaches the sidecars of every covered service, and a team cannot
change or shadow it (issue 19; Art.4(1), Art.14; GB/T 45654-2025 关键词库). Against the real
apiserver, with RBAC and admission policies exactly as the chart renders them.

The compliance group (a real client certificate in the chart's rbac.complianceGroups) keeps the
lexicon as a ConfigMap in hegui's namespace; the CompliancePolicy names it; the operator runs
under the chart's operator ServiceAccount (a TokenRequest token) with POD_NAMESPACE as the chart
sets it; the team holds `edit` in its own namespace only. The shared cluster makes names unique
and binds the chart's admission policies to this test's namespaces only.
"""

from __future__ import annotations

import base64
import gzip
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

from hegui.admission.local import free_port
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster

pytestmark = pytest.mark.cluster

ID = uuid.uuid4().hex[:6]
RELEASE = f"lex-{ID}"
FULLNAME = f"{RELEASE}-hegui"
HEGUI_NS = f"lex-hegui-{ID}"
TEAM_NS = f"lex-team-{ID}"
COMPLIANCE = f"hegui:compliance-{ID}"
LABEL = "hegui.io/lexicon-test"
LEXICON = "provider-lexicon"
WEEK_48 = "# version: 2026-w48\nsubversion\t颠覆国家政权\nterrorismExtremism\t制作炸弹\t0.9\n"
WEEK_49 = WEEK_48.replace("2026-w48", "2026-w49") + "terrorismExtremism\t自制雷管\n"


@dataclass
class World:
    cluster: LocalCluster
    team: Person
    officer: Person  # the compliance group
    admin: Person


def _lexicon(text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": LEXICON, "namespace": HEGUI_NS},
            "data": {"keywords.tsv": text}}


@pytest.fixture(scope="module")
def world(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    cluster = local_cluster
    if not cluster.binary("helm").exists():
        pytest.skip(f"no helm binary at {cluster.binary('helm')}: run dev/controlplane/build")
    directory = tmp_path_factory.mktemp("lexicon")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(_CHECKOUT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    for namespace in (HEGUI_NS, TEAM_NS):
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("label", "namespace", namespace, f"{LABEL}={ID}")
    rbac = chart_rbac(cluster, release=RELEASE, namespace=HEGUI_NS,
                      compliance_group=COMPLIANCE, label=LABEL, value=ID)
    apply_all(cluster, rbac, directory)
    cluster.kubectl("-n", TEAM_NS, "create", "rolebinding", "team-edit", "--clusterrole=edit",
                    f"--user=team-alice-{ID}")
    world = World(cluster, person(cluster, directory, f"team-alice-{ID}", f"team-{ID}"),
                  person(cluster, directory, f"officer-wang-{ID}", COMPLIANCE),
                  admin(cluster))
    created = world.officer.apply(_lexicon(WEEK_48), "create")
    assert created.returncode == 0, created.stderr
    policy = {"apiVersion": "hegui.io/v1alpha1", "kind": "CompliancePolicy",
              "metadata": {"name": f"lexicon-{ID}"},
              "spec": {"namespaces": [TEAM_NS], "defaultMode": "Audit",
                       "sidecar": {"image": "registry.example.cn/hegui/sidecar:0.1.0",
                                   "port": 8443, "lexicon": {"configMaps": [LEXICON]}}}}
    apply_all(cluster, [policy], directory)
    kubeconfig = service_account(cluster, directory, HEGUI_NS,
                                 f"{FULLNAME}-operator").kubeconfig
    log = (directory / "operator.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "hegui"), "operator", "run",
         "--kubeconfig", str(kubeconfig), "--namespace", TEAM_NS,
         "--metrics-address", f"127.0.0.1:{free_port()}",
         "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HEGUI_RECONCILE_SECONDS": "1", "HEGUI_AUDIT_SECONDS": "5",
             "POD_NAMESPACE": HEGUI_NS})
    try:
        yield world
    finally:
        cluster.kubectl("delete", "compliancepolicy", f"lexicon-{ID}", "--ignore-not-found",
                        "--timeout=60s", check=False)
        process.terminate()
        process.wait(20)
        log.close()
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


def _sidecar_config(world: World) -> dict[str, Any]:
    found = world.admin.kubectl("-n", TEAM_NS, "get", "configmap", "hegui-sidecar-chat", "-o",
                                "json")
    return json.loads(found.stdout) if found.returncode == 0 else {}


def _rendered(world: World) -> str:
    """The keyword file the sidecars mount, as they read it."""
    packed = (_sidecar_config(world).get("binaryData") or {}).get("keywords.tsv.gz")
    return gzip.decompress(base64.b64decode(packed)).decode() if packed else ""


SERVICE: dict[str, Any] = {
    "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
    "metadata": {"name": "chat", "namespace": TEAM_NS},
    "spec": {"selector": {"matchLabels": {"app": "chat"}},
             "filing": {"publicOpinion": False,
                        "algorithm": {"number": "网信算备110108823483901230011号"}},
             "labeling": {"modalities": ["text"],
                          "implicit": {"contentProducer": "Example AI Co."}}}}


def test_the_policys_lexicon_reaches_the_sidecar_config_and_its_weekly_update_follows(
        world: World) -> None:
    created = world.team.apply(SERVICE)
    assert created.returncode == 0, created.stderr
    assert _until(lambda: _rendered(world) == WEEK_48), _sidecar_config(world)
    info = json.loads(_sidecar_config(world)["data"]["lexicon.json"])
    assert info["version"].startswith("2026-w48+sha256:") and info["keywords"] == 2
    # The service's status says which list its sidecars run and how it stands to the standard.
    status = _until(lambda: [f for f in json.loads(world.admin.kubectl(
        "-n", TEAM_NS, "get", "gsvc", "chat", "-o", "json").stdout).get("status", {}).get(
        "findings", []) if "Lexicon" in f["message"]])
    assert status and info["version"] in status[0]["message"]
    assert "GB/T 45654-2025" in status[0]["message"]

    updated = world.officer.apply(_lexicon(WEEK_49))
    assert updated.returncode == 0, updated.stderr
    assert _until(lambda: _rendered(world) == WEEK_49), _sidecar_config(world)


def test_a_team_with_edit_can_neither_change_nor_shadow_the_lexicon(world: World) -> None:
    assert _until(lambda: _rendered(world))
    before = _sidecar_config(world)
    team = world.team
    # The rendered lexicon in its own namespace: only the operator writes it.
    forged = base64.b64encode(gzip.compress(b"subversion\tharmless\n")).decode()
    edited = team.kubectl("-n", TEAM_NS, "patch", "configmap", "hegui-sidecar-chat",
                          "--type=merge", "-p",
                          json.dumps({"binaryData": {"keywords.tsv.gz": forged}}))
    assert edited.returncode != 0
    assert "only hegui" in edited.stderr and "Art.14" in edited.stderr
    deleted = team.kubectl("-n", TEAM_NS, "delete", "configmap", "hegui-sidecar-chat")
    assert deleted.returncode != 0 and "may not delete it" in deleted.stderr
    # The provider's ConfigMap in hegui's namespace: no rights there at all.
    for verb in ("update", "patch", "delete", "create"):
        answer = team.kubectl("-n", HEGUI_NS, "auth", "can-i", verb, "configmaps")
        assert answer.stdout.strip() == "no", (verb, answer.stdout)
    refused = team.apply(_lexicon("subversion\tharmless\n"))
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    # A ConfigMap of the same name in its own namespace is its to write, and hegui never reads it.
    shadow = {**_lexicon("subversion\tharmless\n"),
              "metadata": {"name": LEXICON, "namespace": TEAM_NS}}
    assert team.apply(shadow, "create").returncode == 0
    time.sleep(3)  # three reconcile intervals
    after = _sidecar_config(world)
    assert after["binaryData"] == before["binaryData"]
    assert after["data"]["lexicon.json"] == before["data"]["lexicon.json"]
    # The compliance group may.
    answer = world.officer.kubectl("-n", HEGUI_NS, "auth", "can-i", "update", "configmaps")
    assert answer.stdout.strip() == "yes"
