"""The Helm chart `charts/hegui` and the images: what a platform team installs.

Rendered with the real `helm` binary (built by dev/controlplane/build); skipped with the reason
when it is absent. The cluster side (install, uninstall, RBAC under the chart's service
accounts) is in tests/integration/test_chart_install.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from prometheus_client import CollectorRegistry

from hegui.admission import check, configuration, injection
from hegui.admission.server import Metrics
from hegui.localcluster.cluster import _CHECKOUT, LocalCluster
from hegui.operator.metrics import OperatorMetrics
from hegui.rules.workloads import BUILTIN

CHART = _CHECKOUT / "charts" / "hegui"
IMAGES = _CHECKOUT / "images"
NAMESPACE = "hegui-system"
KUBE_VERSION = "1.36.0"

#: Every documented option turned on at once (the defaults are the other rendering).
ALL_OPTIONS: dict[str, Any] = yaml.safe_load((CHART / "ci" / "all-values.yaml").read_text())


def _helm() -> Path:
    helm = LocalCluster.from_environment().binary("helm")
    if not helm.exists():
        pytest.skip(f"no helm binary at {helm}: run dev/controlplane/build (make bootstrap)")
    return helm


def helm(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None,
         check_rc: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(_helm()), *args]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values, allow_unicode=True))
        command += ["--values", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check_rc and result.returncode:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return result


def template(tmp: Path, values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE,
             check_rc: bool = True) -> subprocess.CompletedProcess[str]:
    return helm("template", "hegui", str(CHART), "--namespace", namespace,
                "--kube-version", KUBE_VERSION, values=values, tmp=tmp, check_rc=check_rc)


def objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def default_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    text = template(tmp_path_factory.mktemp("default")).stdout
    return text, objects(text)


@pytest.fixture(scope="module")
def full_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    text = template(tmp_path_factory.mktemp("full"), ALL_OPTIONS).stdout
    return text, objects(text)


@pytest.fixture(params=["default", "full"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = request.getfixturevalue(f"{request.param}_render")[1]
    return docs


# --- lint, render, and hegui's own rules ----------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_OPTIONS], ids=["defaults", "all-options"])
def test_helm_lint_is_clean(values: dict[str, Any] | None, tmp_path: Path) -> None:
    result = helm("lint", str(CHART), "--strict", "--namespace", NAMESPACE,
                  "--kube-version", KUBE_VERSION, values=values, tmp=tmp_path)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("which", ["default_render", "full_render"])
def test_rendered_manifests_pass_hegui_check(which: str, request: pytest.FixtureRequest,
                                             tmp_path: Path) -> None:
    """`hegui check` (the webhook's rules, Art.12/Art.17) refuses none of hegui's own objects and
    finds the sample CompliancePolicy valid."""
    text, _ = request.getfixturevalue(which)
    path = tmp_path / "rendered.yaml"
    path.write_text(text)
    judgement = check.judge(check.documents([str(path)]), NAMESPACE)
    assert not judgement.invalid
    refused = [j for j in judgement.judged if not j.verdict.allowed]
    assert not refused, [f.message for j in refused for f in j.findings]
    cli = subprocess.run([str(Path(sys.executable).parent / "hegui"), "check", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stdout + cli.stderr


def test_workloads_meet_the_restricted_pod_security_standard(
        rendered: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind(rendered, "Deployment")}
    assert set(deployments) == {"hegui-webhook", "hegui-operator", "hegui-triton"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsUser"] == 65532, name  # the images' USER
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"] and container["resources"]["limits"], name
            assert container["livenessProbe"] and container["readinessProbe"], name
        if name == "hegui-triton":  # calls no API: no token in the pod at all
            assert pod["automountServiceAccountToken"] is False
        else:
            assert pod["serviceAccountName"] != "default", name


def test_webhook_is_highly_available(rendered: list[dict[str, Any]]) -> None:
    """failurePolicy Fail is safe only with replicas, a PodDisruptionBudget and spreading."""
    webhook = next(d for d in by_kind(rendered, "Deployment")
                   if d["metadata"]["name"] == "hegui-webhook")
    spec = webhook["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = spec["template"]["metadata"]["labels"]
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    terms = (anti.get("requiredDuringSchedulingIgnoredDuringExecution")
             or [t["podAffinityTerm"]
                 for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]])
    assert terms[0]["labelSelector"]["matchLabels"].items() <= labels.items()
    pdbs = [p for p in by_kind(rendered, "PodDisruptionBudget")
            if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert len(pdbs) == 1 and pdbs[0]["spec"]["minAvailable"] >= 1
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Mounted as a directory: renewed certificates reach the process, which reloads them.
    assert all("subPath" not in m for m in container["volumeMounts"])


def test_operator_runs_two_replicas_with_leader_election(
        default_render: tuple[str, list[dict[str, Any]]]) -> None:
    docs = default_render[1]
    operator = next(d for d in by_kind(docs, "Deployment")
                    if d["metadata"]["name"] == "hegui-operator")
    assert operator["spec"]["replicas"] == 2
    pod = operator["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert "--leader-election" in args and f"--lease={NAMESPACE}/hegui-operator" in args
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    webhook = next(d for d in by_kind(docs, "Deployment")
                   if d["metadata"]["name"] == "hegui-webhook")
    # Separate identities: the webhook cannot act with the operator's write permissions.
    assert pod["serviceAccountName"] != webhook["spec"]["template"]["spec"]["serviceAccountName"]
    role = next(r for r in by_kind(docs, "Role")
                if r["metadata"]["name"].endswith("leader-election"))
    named = [r for r in role["rules"] if "resourceNames" in r]
    assert named[0]["resourceNames"] == ["hegui-operator"]


# --- RBAC ----------------------------------------------------------------------------------------


def test_rbac_is_least_privilege_and_every_rule_is_justified(
        default_render: tuple[str, list[dict[str, Any]]]) -> None:
    for template_file in ("rbac-operator.yaml", "rbac-webhook.yaml"):
        lines = (CHART / "templates" / template_file).read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[number - 1].strip().startswith("#"), (
                    f"{template_file}:{number + 1}: a rule without a comment justifying it")
    roles = [*by_kind(default_render[1], "ClusterRole"), *by_kind(default_render[1], "Role")]
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert "secrets" not in rule["resources"], "hegui reads no Secrets through the API"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    webhook = next(r for r in roles if r["metadata"]["name"] == "hegui-webhook")
    assert {v for rule in webhook["rules"] for v in rule["verbs"]} == {"list", "watch"}, (
        "the webhook only reads (sideEffects: None)")


# --- webhook configurations: one rule, one place --------------------------------------------------


def _configurations(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs
            if d["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")}


def _expected(rendered_hook: dict[str, Any], detection: Any) -> dict[str, dict[str, Any]]:
    client = rendered_hook["clientConfig"]
    options: dict[str, Any] = {
        "ca_bundle": base64.b64decode(client.get("caBundle", "")), "own_namespace": NAMESPACE,
        "service": {**client["service"], "path": "/validate"}, "detection": detection}
    return {"ValidatingWebhookConfiguration":
            configuration.validating_webhook_configuration(**options),
            "MutatingWebhookConfiguration":
            configuration.mutating_webhook_configuration(**options)}


def test_webhook_configurations_are_those_of_configuration_py(
        default_render: tuple[str, list[dict[str, Any]]]) -> None:
    """Rules, scoping, failure policies, matchConditions and timeouts are exactly what
    hegui.admission.configuration ships; the chart only names its Service and CA."""
    rendered = _configurations(default_render[1])
    hook = rendered["ValidatingWebhookConfiguration"]["webhooks"][0]
    assert hook["clientConfig"]["service"] == {"namespace": NAMESPACE, "name": "hegui-webhook",
                                               "path": "/validate", "port": 443}
    for kind, wanted in _expected(hook, BUILTIN).items():
        assert rendered[kind]["metadata"]["name"] == wanted["metadata"]["name"]
        assert rendered[kind]["webhooks"] == wanted["webhooks"], kind
    assert rendered["ValidatingWebhookConfiguration"]["webhooks"][0]["failurePolicy"] == "Fail"
    assert rendered["MutatingWebhookConfiguration"]["webhooks"][0]["failurePolicy"] == "Ignore"


def test_extra_detection_signals_reach_the_filter(
        full_render: tuple[str, list[dict[str, Any]]]) -> None:
    """webhook.detection and the sample policy's spec.detection extend the CEL filter exactly
    as configuration.py extends it for those CompliancePolicies."""
    rendered = _configurations(full_render[1])
    detection = BUILTIN.extended(
        resources=["amd.com/gpu", "vendor.example/npu-", "huawei.com/Ascend910"],
        runtime_classes=["ascend"], labels=["example.com/model"])
    hook = rendered["ValidatingWebhookConfiguration"]["webhooks"][0]
    for kind, wanted in _expected(hook, detection).items():
        got = rendered[kind]
        # cert-manager's cainjector fills the caBundle; the rest is configuration.py's.
        assert got["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/hegui-webhook")
        for hook_got, hook_wanted in zip(got["webhooks"], wanted["webhooks"], strict=True):
            assert "caBundle" not in hook_got["clientConfig"]
            hook_wanted["clientConfig"].pop("caBundle")
            assert hook_got == hook_wanted, kind
    condition = rendered["ValidatingWebhookConfiguration"]["webhooks"][0]["matchConditions"][0]
    assert "k.startsWith('vendor.example/npu-')" in condition["expression"]


def test_webhook_never_governs_its_own_namespace(tmp_path: Path) -> None:
    docs = objects(template(tmp_path, namespace="platform-ai").stdout)
    for config in _configurations(docs).values():
        excluded = config["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
        assert {"platform-ai", "kube-system", "hegui-system"} <= set(excluded)


def test_install_into_a_governed_namespace_is_refused(tmp_path: Path) -> None:
    result = template(tmp_path, namespace="default", check_rc=False)
    assert result.returncode != 0
    assert 'namespace "default"' in result.stderr and "Art.17" in result.stderr
    enforced = {"samplePolicy": {"enabled": True, "spec": {"namespaces": ["models"]}}}
    result = template(tmp_path, enforced, namespace="models", check_rc=False)
    assert result.returncode != 0
    assert 'enforced by CompliancePolicy "default"' in result.stderr


# --- certificates --------------------------------------------------------------------------------


def test_bootstrap_certificate_is_trusted_by_the_ca_bundle(
        default_render: tuple[str, list[dict[str, Any]]]) -> None:
    docs = default_render[1]
    secret = next(s for s in by_kind(docs, "Secret")
                  if s["metadata"]["name"] == "hegui-webhook-tls")
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    hook = _configurations(docs)["ValidatingWebhookConfiguration"]["webhooks"][0]
    [ca] = x509.load_pem_x509_certificates(base64.b64decode(hook["clientConfig"]["caBundle"]))
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hegui-webhook.hegui-system.svc" in names.get_values_for_type(x509.DNSName)
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    lifetime = serving.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=360) < lifetime <= dt.timedelta(days=366)
    # Its recorded expiry (what the next upgrade compares) is the certificate's own.
    recorded = int(secret["metadata"]["annotations"]["hegui.io/expires-unix"])
    assert abs(recorded - serving.not_valid_after_utc.timestamp()) < 120


def test_cert_manager_issues_and_injects(full_render: tuple[str, list[dict[str, Any]]]) -> None:
    docs = full_render[1]
    assert not [s for s in by_kind(docs, "Secret") if "tls" in s["metadata"]["name"]]
    certificates = {c["metadata"]["name"]: c for c in by_kind(docs, "Certificate")}
    serving = certificates["hegui-webhook"]["spec"]
    assert serving["secretName"] == "hegui-webhook-tls"
    assert "hegui-webhook.hegui-system.svc" in serving["dnsNames"]
    assert serving["duration"] == "720h" and serving["renewBefore"] == "240h"
    assert certificates["hegui-webhook-ca"]["spec"]["isCA"] is True
    assert {i["metadata"]["name"] for i in by_kind(docs, "Issuer")} == {
        "hegui-webhook-selfsigned", "hegui-webhook-ca"}


# --- CRDs ----------------------------------------------------------------------------------------


def test_chart_files_are_in_step_with_their_sources() -> None:
    """charts/sync.py --check: the CRD copies and files/webhooks.json match crds/ and
    configuration.py (run `.venv/bin/python charts/sync.py` after changing either)."""
    result = subprocess.run([sys.executable, str(_CHECKOUT / "charts" / "sync.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sync_detects_and_repairs_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A field added to a CRD in crds/ (by `hegui crds generate`) makes the check fail, naming
    the file, until sync.py copies it into the chart."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("chart_sync", _CHECKOUT / "charts" / "sync.py")
    assert spec and spec.loader
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    shutil.copytree(_CHECKOUT / "crds", tmp_path / "crds", ignore=shutil.ignore_patterns("hegui"))
    shutil.copytree(CHART / "files", tmp_path / "charts" / "hegui" / "files")
    monkeypatch.setattr(sync, "ROOT", tmp_path)
    monkeypatch.setattr(sync, "CHART", tmp_path / "charts" / "hegui")
    monkeypatch.setattr(sync, "CRDS", tmp_path / "crds")
    assert sync.main(["--check"]) == 0
    crd = tmp_path / "crds" / "hegui.io_generativeservices.yaml"
    crd.write_text(crd.read_text().replace("description:", "description: (new)", 1))
    assert sync.main(["--check"]) == 1
    assert "charts/hegui/files/crds/hegui.io_generativeservices.yaml" in capsys.readouterr().err
    assert sync.main([]) == 0
    assert sync.main(["--check"]) == 0


def test_rendered_crds_are_those_in_crds(
        default_render: tuple[str, list[dict[str, Any]]]) -> None:
    rendered = {c["metadata"]["name"]: c for c in by_kind(default_render[1],
                                                          "CustomResourceDefinition")}
    sources = {}
    for path in sorted((_CHECKOUT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        sources[crd["metadata"]["name"]] = crd
    assert set(rendered) == set(sources)
    for name, crd in rendered.items():
        assert crd["spec"] == sources[name]["spec"], f"{name} drifted from crds/"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_can_be_left_out(tmp_path: Path) -> None:
    docs = objects(template(tmp_path, {"crds": {"enabled": False}}).stdout)
    assert not by_kind(docs, "CustomResourceDefinition")


# --- values: documented and validated ------------------------------------------------------------


@pytest.mark.parametrize(("values", "field", "message"), [
    ({"webhook": {"replica": 3}}, "/webhook", "additional properties 'replica' not allowed"),
    ({"webhook": {"replicas": 0}}, "/webhook/replicas", "minimum"),
    ({"webhook": {"antiAffinity": "sometimes"}}, "/webhook/antiAffinity", "soft"),
    ({"image": {"tag": "latest"}}, "/image/tag", ""),
    ({"operator": {"reconcileSeconds": "often"}}, "/operator/reconcileSeconds", "number"),
    ({"webhook": {"detection": {"gpuResources": ["not a resource"]}}},
     "/webhook/detection/gpuResources/0", "pattern"),
    ({"certManager": {"issuerRef": {"kind": "Vault"}}}, "/certManager/issuerRef/kind", ""),
    ({"networkPolicy": {"apiServerPorts": []}}, "/networkPolicy/apiServerPorts", ""),
])
def test_schema_refuses_bad_values_naming_the_field(values: dict[str, Any], field: str,
                                                    message: str, tmp_path: Path) -> None:
    result = template(tmp_path, values, check_rc=False)
    assert result.returncode != 0
    assert f"at '{field}'" in result.stderr and message in result.stderr, result.stderr


def _leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and not path.endswith(
                ("resources", "samplePolicy.spec", "labels")):
            yield from _leaves(value, path)
        else:
            yield path


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = text.splitlines()
    for path in _leaves(values):
        node = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), f"{path} is not in values.schema.json"
            node = node["properties"][part]
            assert node.get("description"), f"{path}: no description in the schema"
        key = path.split(".")[-1]
        # The key's line in values.yaml is preceded by a comment documenting it.
        index = next(i for i, line in enumerate(lines)
                     if re.match(rf"^\s*{re.escape(key)}:", line))
        assert lines[index - 1].strip().startswith("#"), f"{path}: undocumented in values.yaml"


# --- monitoring: alerts and dashboard name metrics hegui exports ----------------------------------


def _exported_metrics() -> set[str]:
    names: set[str] = set()
    registries = [OperatorMetrics().registry]
    admission = CollectorRegistry()
    Metrics(admission)
    registries.append(admission)
    for registry in registries:
        for family in registry.collect():
            names.add(family.name)
            names.update({f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count",
                          f"{family.name}_sum"})
    return names


#: Not hegui's: the scrape health and the apiserver's webhook metrics.
EXTERNAL = {"up", "apiserver_admission_webhook_rejection_count",
            "apiserver_admission_webhook_fail_open_count"}


def _metric_names(expression: str) -> set[str]:
    stripped = re.sub(r"\{[^}]*\}|\"[^\"]*\"|\[[^\]]*\]", "", expression)
    words = set(re.findall(r"[a-z_][a-z0-9_]*", stripped))
    return {w for w in words if w.startswith(("hegui_", "apiserver_")) or w == "up"}


def test_alerts_cover_hegui_states_and_name_real_metrics(
        full_render: tuple[str, list[dict[str, Any]]]) -> None:
    [rule] = by_kind(full_render[1], "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert re.search(r"hegui_service_state\{[^}]*\}\) == 1$", alerts["HeguiServiceNonCompliant"])
    assert re.search(r"hegui_service_state\{[^}]*\}\) == 2$", alerts["HeguiServiceSuspended"])
    assert re.search(r"hegui_injection_gaps\{[^}]*\}\) > 0$", alerts["HeguiInjectionGaps"])
    assert "apiserver_admission_webhook_rejection_count" in alerts["HeguiWebhookCallErrors"]
    exported = _exported_metrics() | EXTERNAL
    for name, expression in alerts.items():
        unknown = _metric_names(expression) - exported
        assert not unknown, f"{name} uses metrics hegui does not export: {unknown}"
    annotations = [r["annotations"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert all("{{ $labels" not in a.get("summary", "x") or "}}" in a["summary"]
               for a in annotations)


def test_dashboard_is_grafana_json_on_real_metrics(
        full_render: tuple[str, list[dict[str, Any]]]) -> None:
    [config_map] = [c for c in by_kind(full_render[1], "ConfigMap")
                    if c["metadata"]["name"] == "hegui-dashboard"]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["hegui.json"])
    exported = _exported_metrics() | EXTERNAL
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any("hegui_service_state" in e for e in expressions)
    for expression in expressions:
        assert not _metric_names(expression) - exported, expression


def test_service_monitor_scrapes_both_components(
        full_render: tuple[str, list[dict[str, Any]]]) -> None:
    [monitor] = by_kind(full_render[1], "ServiceMonitor")
    ports = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    services = {s["metadata"]["name"]: s for s in by_kind(full_render[1], "Service")}
    declared = {p["name"] for s in services.values() for p in s["spec"]["ports"]}
    assert set(ports) <= declared
    assert ports["https"]["tlsConfig"]["serverName"] == "hegui-webhook.hegui-system.svc"
    # The service's own namespace/service labels must survive the scrape.
    assert ports["metrics"]["honorLabels"] is True


def test_network_policies_select_hegui_pods(
        full_render: tuple[str, list[dict[str, Any]]]) -> None:
    docs = full_render[1]
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind(docs, "Deployment")]
    policies = by_kind(docs, "NetworkPolicy")
    assert len(policies) == 3  # webhook, operator, triton
    for policy in policies:
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert sum(selector.items() <= labels.items() for labels in pods) == 1
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # The operator asks the sidecars of the services' pods (SafetyAssessment, Art.17): an
    # enforcing network plugin would otherwise cut every assessment run.
    [operator] = [p for p in policies if p["metadata"]["name"] == "hegui-operator"]
    assert {"to": [{"namespaceSelector": {}, "podSelector": {
        "matchLabels": {"hegui.io/fronted": "true"}}}]} in operator["spec"]["egress"]


# --- images (images/NAME.toml; tests/unit/test_image_definitions.py checks the Dockerfiles) ------


def _definition(name: str) -> dict[str, Any]:
    definition: dict[str, Any] = tomllib.loads((IMAGES / f"{name}.toml").read_text())
    return definition


def test_hegui_image_runs_what_the_chart_runs(
        default_render: tuple[str, list[dict[str, Any]]]) -> None:
    assert _definition("hegui")["entrypoint"] == ["/usr/bin/python3.11", "-m", "hegui.cli"]
    for deployment in by_kind(default_render[1], "Deployment"):
        if deployment["metadata"]["name"] == "hegui-triton":
            continue  # the Triton image's (test_triton_runs_the_triton_image)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "command" not in container  # the image's entrypoint, with the chart's args
        # The command line parses: `hegui <args> --help` answers for each component.
        words = [a for a in container["args"] if not a.startswith("--")]
        result = subprocess.run([str(Path(sys.executable).parent / "hegui"), *words, "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        for flag in (a.split("=")[0] for a in container["args"] if a.startswith("--")):
            assert flag in result.stdout, f"hegui {' '.join(words)} has no {flag}"


def test_sidecar_image_speaks_the_injected_command_line() -> None:
    """The webhook injects only args; the image's entrypoint must accept every one."""
    assert _definition("sidecar")["entrypoint"] == ["/usr/bin/python3.11", "-m", "hegui.sidecar"]
    from hegui.api.policy import Sidecar

    container = injection.sidecar_container(
        Sidecar(image="registry.example.cn/hegui/sidecar:0.1.0"), service="chat",
        port_name="http", upstream_port=8000)
    assert "command" not in container
    result = subprocess.run([sys.executable, "-m", "hegui.sidecar", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in (a for a in container["args"] if a.startswith("--")):
        assert flag in result.stdout, f"python -m hegui.sidecar has no {flag}"
    # The Triton image carries the model repository and the code its Python models import.
    triton = _definition("triton")
    assert triton["files"]["sidecars/triton/models"] == "/models"
    assert (_CHECKOUT / "sidecars/triton/models/moderation/config.pbtxt").exists()
    assert triton["env"]["HEGUI_TRITON_PYTHONPATH"] == "/opt/hegui/lib"


# --- Triton: the moderation endpoint the sidecars dial ----------------------------------------


def test_sample_policy_sends_sidecars_to_the_charts_triton(tmp_path: Path) -> None:
    """A fresh install must give sidecars a Triton to reach: they fail closed, so without one
    every request is answered 503 (Art.14)."""
    docs = objects(template(tmp_path, {"samplePolicy": {"enabled": True}}).stdout)
    [policy] = by_kind(docs, "CompliancePolicy")
    [service] = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "triton"]
    [deployment] = [d for d in by_kind(docs, "Deployment")
                    if d["metadata"]["name"] == "hegui-triton"]
    endpoint = policy["spec"]["defaults"]["triton"]
    host, port = endpoint["address"].rsplit(":", 1)
    assert host == f"triton.{NAMESPACE}.svc" == f"{service['metadata']['name']}.{NAMESPACE}.svc"
    assert (endpoint["protocol"], endpoint["model"]) == ("grpc", "moderation")
    [grpc] = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    assert grpc["name"] == "grpc"
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert grpc["targetPort"] in {p["name"] for p in container["ports"]}
    # The CRD's model reads it as the default endpoint.
    from hegui.api.policy import CompliancePolicy

    parsed = CompliancePolicy.model_validate_json(json.dumps(policy))
    assert parsed.spec.defaults.triton is not None
    assert parsed.spec.defaults.triton.address == f"triton.{NAMESPACE}.svc:8001"


def test_a_policy_naming_its_own_triton_keeps_it(tmp_path: Path) -> None:
    own = {"address": "scorer.moderation.svc:8001", "model": "moderation"}
    docs = objects(template(tmp_path, {"samplePolicy": {"enabled": True, "spec": {
        "defaults": {"triton": own}}}}).stdout)
    [policy] = by_kind(docs, "CompliancePolicy")
    assert policy["spec"]["defaults"]["triton"] == own


def test_triton_runs_the_triton_image_on_cpu_unless_gpus_are_asked(tmp_path: Path) -> None:
    definition = _definition("triton")
    cpu = objects(template(tmp_path).stdout)
    [deployment] = [d for d in by_kind(cpu, "Deployment")
                    if d["metadata"]["name"] == "hegui-triton"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container and "args" not in container  # the image's own
    assert {p["containerPort"] for p in container["ports"]} == set(definition["ports"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    gpu = objects(template(tmp_path, {"triton": {"gpus": 1, "extraArgs": ["--log-verbose=1"]}})
                  .stdout)
    [deployment] = [d for d in by_kind(gpu, "Deployment")
                    if d["metadata"]["name"] == "hegui-triton"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["args"] == ["--model-repository=/models", "--log-verbose=1"]
    off = objects(template(tmp_path, {"triton": {"enabled": False},
                                      "samplePolicy": {"enabled": True}}).stdout)
    assert not [d for d in off if "triton" in d["metadata"]["name"]]
    [policy] = by_kind(off, "CompliancePolicy")
    assert "triton" not in policy["spec"].get("defaults", {})
