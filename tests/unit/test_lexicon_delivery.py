"""A provider's lexicon reaches the injected sidecars (issue 19; Art.4(1), Art.14; GB/T
45654-2025 关键词库): the compliance group's ConfigMaps in hegui's namespace, named by the
CompliancePolicy (spec.sidecar.lexicon), are rendered whole, gzip-compressed, into each service's
sidecar ConfigMap; the sidecar is started on it (--lexicon) and reloads it as the kubelet updates
the volume; a list that does not fit is not rendered, the sidecars keep theirs, and the status
says so with the size, the limit, the article and the fix."""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
from pathlib import Path
from typing import Any

import kopf
import pytest
from test_chart import by_kind, objects, template  # type: ignore[import-not-found]
from test_operator_reconcile import (  # type: ignore[import-not-found]
    NS,
    _operator,
    _pass,
    _policy,
    _service,
)

from hegui.admission.injection import sidecar_container
from hegui.api.generativeservice import GenerativeService
from hegui.api.policy import Sidecar
from hegui.dossier.build import build
from hegui.dossier.render import markdown
from hegui.moderation.categories import KEYWORD_RISKS
from hegui.moderation.lexicon import DEFAULT_LEXICON_DIR, LexiconStore, load_lexicon
from hegui.operator.cluster import CONFIG_MAP
from hegui.operator.provider_lexicon import CONFIG_MAP_LIMIT, INFO_KEY

OWN = "hegui-system"  # OperatorSettings.own_namespace's default
WEEK_1 = "# version: 2026-w48\nsubversion\t颠覆国家政权\nterrorismExtremism\t制作炸弹\t0.9\n"
WEEK_2 = "# version: 2026-w49\nsubversion\t颠覆国家政权\nterrorismExtremism\t制作炸弹\t0.9\n" \
         "terrorismExtremism\t自制雷管\n"


def _provider(name: str = "provider-lexicon", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": OWN}, "data": data}


def _rendered_files(config_map: dict[str, Any], into: Path) -> Path:
    """The sidecar ConfigMap's files as the kubelet writes its volume."""
    into.mkdir(parents=True, exist_ok=True)
    for key, value in (config_map.get("data") or {}).items():
        (into / key).write_text(value, encoding="utf-8")
    for key, value in (config_map.get("binaryData") or {}).items():
        (into / key).write_bytes(base64.b64decode(value))
    return into


def _findings(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in status.get("findings") or [] if "exicon" in f["message"]]


def test_the_policys_lexicon_is_rendered_into_the_sidecar_config_and_follows_its_updates(
        tmp_path: Path) -> None:
    service = _service()
    lexicon = {"configMaps": ["provider-lexicon"]}
    op, cluster = _operator(_policy(lexicon=lexicon), service)
    cluster.put(CONFIG_MAP, _provider(**{"keywords.tsv": WEEK_1}))
    memo = kopf.Memo(operator=op)

    status = _pass(op, cluster, service, memo)
    config_map = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert config_map is not None
    assert set(config_map["binaryData"]) == {"keywords.tsv.gz"}
    assert gzip.decompress(base64.b64decode(config_map["binaryData"]["keywords.tsv.gz"])) \
        == WEEK_1.encode()
    # What the sidecar loads says the version the provider's plain file says.
    mounted = load_lexicon(_rendered_files(config_map, tmp_path / "w48"))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keywords.tsv").write_text(WEEK_1, encoding="utf-8")
    assert mounted.version == load_lexicon(plain).version
    assert mounted.version.startswith("2026-w48+sha256:")
    assert json.loads(config_map["data"][INFO_KEY])["version"] == mounted.version
    [finding] = _findings(status)
    assert finding["severity"] == "Warning" and mounted.version in finding["message"]
    assert "GB/T 45654-2025" in finding["message"] and "10000" in finding["message"]
    # The dossier says it too (its status and findings section).
    dossier = markdown(build(GenerativeService.from_dict(service), []))
    assert f"Lexicon {mounted.version}" in dossier

    # The provider's weekly update reaches the sidecar ConfigMap at the next pass (its cache
    # is read again after max_age, 0 here).
    op.lexicons.max_age = 0.0
    cluster.put(CONFIG_MAP, _provider(**{"keywords.tsv": WEEK_2}))
    _pass(op, cluster, service, memo)
    updated = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert updated is not None
    assert gzip.decompress(base64.b64decode(updated["binaryData"]["keywords.tsv.gz"])) \
        == WEEK_2.encode()
    assert json.loads(updated["data"][INFO_KEY])["version"].startswith("2026-w49+")


def test_a_lexicon_that_does_not_fit_a_configmap_is_not_rendered_and_the_status_says_so(
        ) -> None:
    service = _service()
    op, cluster = _operator(_policy(lexicon={"configMaps": ["provider-lexicon", "more"]}),
                            service)
    cluster.put(CONFIG_MAP, _provider(**{"keywords.tsv": WEEK_1}))
    cluster.put(CONFIG_MAP, _provider("more", **{"more.tsv": "terrorismExtremism\t自制雷管\n"}))
    memo = kopf.Memo(operator=op)
    _pass(op, cluster, service, memo)
    before = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert before is not None and set(before["binaryData"]) == {"keywords.tsv.gz",
                                                                "more.tsv.gz"}
    kept_version = json.loads(before["data"][INFO_KEY])["version"]

    # Random letters hardly compress: ~1.2 MiB gzip-compressed in a binaryData key.
    rng = random.Random(19)
    lines = "".join(f"{rng.choice(KEYWORD_RISKS)}\t"
                    + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(64))
                    + "\n" for _ in range(32_000))
    huge = base64.b64encode(gzip.compress(lines.encode(), mtime=0)).decode()
    cluster.put(CONFIG_MAP, {**_provider("more"), "data": {},
                             "binaryData": {"more.tsv.gz": huge}})
    op.lexicons.max_age = 0.0
    status = _pass(op, cluster, service, memo)
    after = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert after is not None
    # Never in part: the list the sidecars have stays, whole.
    assert after["binaryData"] == before["binaryData"]
    assert json.loads(after["data"][INFO_KEY])["version"] == kept_version
    [finding] = _findings(status)
    assert finding["severity"] == "Error" and finding["article"] == "Art.4(1),Art.14"
    message = finding["message"]
    assert f"over the {CONFIG_MAP_LIMIT} bytes" in message and "32002 keywords" in message
    assert f"keep version {kept_version}" in message
    assert "spec.sidecar.rules: Triton" in message and "Art.14" in message


def test_a_lexicon_configmap_missing_or_a_bad_line_is_reported_and_nothing_rendered() -> None:
    service = _service()
    op, cluster = _operator(_policy(lexicon={"configMaps": ["provider-lexicon"]}), service)
    memo = kopf.Memo(operator=op)
    status = _pass(op, cluster, service, memo)
    [finding] = _findings(status)
    assert "ConfigMap provider-lexicon is not in namespace hegui-system" in finding["message"]
    assert "binaryData" not in (cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat") or {})

    cluster.put(CONFIG_MAP, _provider(**{"keywords.tsv": "subversion\t颠覆\nnot-a-risk\tx\n"}))
    op.lexicons.max_age = 0.0
    status = _pass(op, cluster, service, memo)
    [finding] = _findings(status)
    assert "provider-lexicon/keywords.tsv:2: unknown category 'not-a-risk'" \
        in finding["message"]


def test_a_lexicon_that_cannot_be_read_leaves_the_sidecars_the_list_they_have() -> None:
    """The apiserver failing the reads (the provider's ConfigMap and the sidecar's): the
    ConfigMap is still written (a suspension notice must get through) with the list it had."""
    service = _service()
    op, cluster = _operator(_policy(lexicon={"configMaps": ["provider-lexicon"]}), service)
    cluster.put(CONFIG_MAP, _provider(**{"keywords.tsv": WEEK_1}))
    memo = kopf.Memo(operator=op)
    _pass(op, cluster, service, memo)
    before = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert before is not None and "keywords.tsv.gz" in before["binaryData"]

    op.lexicons.max_age = 0.0
    cluster.faults[("get", "configmaps")] = 500
    status = _pass(op, cluster, service, memo)
    after = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert after is not None and after["binaryData"] == before["binaryData"]
    [finding] = _findings(status)
    assert finding["severity"] == "Error" and "could not be read" in finding["message"]
    assert "keep version 2026-w48+sha256:" in finding["message"]

    # A restarted operator, which cannot read the sidecar's ConfigMap either, leaves it alone.
    restarted, _ = _operator(_policy(lexicon={"configMaps": ["provider-lexicon"]}), service)
    restarted.cluster = op.cluster
    with pytest.raises(kopf.TemporaryError, match="render the lexicon"):
        _pass(restarted, cluster, service, kopf.Memo(operator=restarted))
    assert cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat") == after


def test_a_team_configmap_of_the_same_name_in_its_namespace_is_not_read() -> None:
    service = _service()
    op, cluster = _operator(_policy(lexicon={"configMaps": ["provider-lexicon"]}), service)
    cluster.put(CONFIG_MAP, _provider(**{"keywords.tsv": WEEK_1}))
    shadow = _provider(**{"keywords.tsv": "subversion\tharmless\n"})
    shadow["metadata"]["namespace"] = NS
    cluster.put(CONFIG_MAP, shadow)
    _pass(op, cluster, service, kopf.Memo(operator=op))
    rendered = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert rendered is not None
    assert gzip.decompress(base64.b64decode(rendered["binaryData"]["keywords.tsv.gz"])) \
        == WEEK_1.encode()


def test_sidecars_that_run_the_rules_in_triton_get_no_lexicon_rendered() -> None:
    service = _service()
    op, cluster = _operator(_policy(rules="Triton", lexicon={"configMaps": ["provider-lexicon"]}),
                            service)
    _pass(op, cluster, service, kopf.Memo(operator=op))
    rendered = cluster.find(CONFIG_MAP, NS, "hegui-sidecar-chat")
    assert rendered is not None and "binaryData" not in rendered
    assert INFO_KEY not in rendered["data"]


@pytest.mark.parametrize(("sidecar", "lexicon_args"), [
    ({"lexicon": {"configMaps": ["provider-lexicon"]}}, ["--lexicon", "/etc/hegui"]),
    ({}, []),
    ({"rules": "Triton", "lexicon": {"configMaps": ["provider-lexicon"]}}, []),
])
def test_the_injected_sidecar_reads_the_lexicon_from_its_mounted_configmap(
        sidecar: dict[str, Any], lexicon_args: list[str]) -> None:
    container = sidecar_container(
        Sidecar.from_dict({"image": "registry.example.cn/hegui/sidecar:0.1.0", **sidecar}),
        service="chat", port_name="http", upstream_port=8000)
    args = container["args"]
    found = args[args.index("--lexicon"):args.index("--lexicon") + 2] if "--lexicon" in args \
        else []
    assert found == lexicon_args
    # Mounted whole (no subPath), so the kubelet's updates reach the running sidecar.
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/hegui"]
    assert "subPath" not in mount


def _kubelet_publish(volume: Path, files: dict[str, bytes], stamp: str) -> None:
    """Update a ConfigMap volume as the kubelet does (atomic_writer.go): the files into a new
    timestamped directory, then the `..data` link swapped to it in one rename; the keys are
    links through `..data`."""
    fresh = volume / f"..{stamp}"
    fresh.mkdir()
    for name, data in files.items():
        (fresh / name).write_bytes(data)
    (volume / "..data_tmp").symlink_to(fresh.name)
    os.replace(volume / "..data_tmp", volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(Path("..data") / name)


def test_a_sidecar_started_before_its_lexicon_arrives_runs_the_shipped_list_then_takes_it(
        tmp_path: Path) -> None:
    volume = tmp_path / "etc-hegui"
    volume.mkdir()
    _kubelet_publish(volume, {"service.yaml": b"kind: GenerativeService\n"}, "2026_12_01_1")
    store = LexiconStore(paths=(volume,))
    shipped = load_lexicon(DEFAULT_LEXICON_DIR)
    assert store.lexicon.version == shipped.version and store.lexicon.keywords

    _kubelet_publish(volume, {"service.yaml": b"kind: GenerativeService\n",
                              "keywords.tsv.gz": gzip.compress(WEEK_1.encode(), mtime=0)},
                     "2026_12_01_2")
    assert store.reload()
    assert store.lexicon.version.startswith("2026-w48+")
    assert [k.text for k in store.lexicon.keywords] == ["颠覆国家政权", "制作炸弹"]
    assert store.lexicon.scores("教我制作炸弹") == {"terrorismExtremism": 0.9}


def test_a_compressed_file_that_expands_without_bound_is_refused(tmp_path: Path) -> None:
    from hegui.moderation import lexicon

    (tmp_path / "bomb.tsv.gz").write_bytes(gzip.compress(b"#" * (lexicon.MAX_UNPACKED_BYTES + 1)))
    with pytest.raises(ValueError, match="expands beyond"):
        load_lexicon(tmp_path)


def test_the_charts_triton_mounts_the_provider_lexicon_whole_for_its_lexicon_model(
        tmp_path: Path) -> None:
    """rules: Triton uses the provider's list too: the same ConfigMaps, mounted whole (no
    subPath: the kubelet's updates reach the running model), named to the lexicon model."""
    docs = objects(template(tmp_path, {"triton": {"lexicon": {
        "configMaps": ["provider-lexicon", "provider-lexicon-extra"]}}}).stdout)
    [triton] = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("triton")]
    pod = triton["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "lexicon"]
    assert [s["configMap"]["name"] for s in volume["projected"]["sources"]] \
        == ["provider-lexicon", "provider-lexicon-extra"]
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "lexicon"]
    assert mount == {"name": "lexicon", "mountPath": "/etc/hegui/lexicon", "readOnly": True}
    assert {"name": "HEGUI_LEXICON_DIR", "value": "/etc/hegui/lexicon"} in container["env"]
    model = (Path(__file__).parents[2] / "sidecars" / "triton" / "models" / "lexicon" / "1"
             / "lexicon_model.py").read_text(encoding="utf-8")
    assert 'os.environ.get("HEGUI_LEXICON_DIR"' in model
    # The operator knows its own namespace, where it reads the lexicon from.
    [operator] = [d for d in by_kind(docs, "Deployment")
                  if d["metadata"]["name"].endswith("operator")]
    env = operator["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in env
    # Without the value: the image's list, no volume.
    plain = objects(template(tmp_path).stdout)
    [triton] = [d for d in by_kind(plain, "Deployment") if d["metadata"]["name"].endswith("triton")]
    assert "lexicon" not in {v["name"] for v in triton["spec"]["template"]["spec"]["volumes"]}


def test_the_assessment_judges_answers_by_the_list_the_sidecars_run() -> None:
    """A SafetyAssessment (Art.17) judges generated answers by the provider's lexicon the policy
    names, not by the image's 13 illustrative keywords; one it cannot read holds the run."""
    from hegui.moderation.lexicon import Keyword
    from hegui.operator.assessment import BankError, Plan
    from hegui.operator.assessment_handlers import _judge

    service = _service()
    op, cluster = _operator(_policy(lexicon={"configMaps": ["provider-lexicon"]}), service)
    plan = Plan((), (Keyword("自研暗语", "otherProhibited"),), "", {})
    with pytest.raises(BankError, match=r"spec\.sidecar\.lexicon"):
        _judge(op, NS, plan)
    cluster.put(CONFIG_MAP, _provider(**{"keywords.tsv": WEEK_2}))
    judge = _judge(op, NS, plan)
    assert judge.problems("答 可以这样自制雷管") == ["terrorismExtremism"]
    assert judge.problems("答 自研暗语") == ["otherProhibited"]  # the bank's keywords too
    shipped, _ = _operator(_policy(), service)
    assert _judge(shipped, NS, plan).problems("答 可以这样自制雷管") == []
