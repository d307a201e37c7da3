"""One way to find the apiserver (hegui.api.kubeconfig): components try the pod's service account
first, commands a person runs try the kubeconfig first, and an explicit file always wins."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes.config import ConfigException, incluster_config, kube_config

from hegui.api import kubeconfig as kube


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files and variables a pod's service account gives (paths moved into tmp_path)."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))


@pytest.fixture
def default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = _kubeconfig(tmp_path / "default-kubeconfig", "https://from-default:6443")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


def test_an_explicit_file_wins_even_in_a_pod(pod: None, default_file: Path,
                                             tmp_path: Path) -> None:
    explicit = _kubeconfig(tmp_path / "explicit", "https://explicit:6443")
    access = kube.load(str(explicit))
    assert access.configuration.host == "https://explicit:6443" and not access.in_cluster


def test_components_take_the_service_account_before_the_kubeconfig(pod: None,
                                                                   default_file: Path) -> None:
    access = kube.load(None)
    assert access.in_cluster and access.configuration.host == "https://10.0.0.1:443"


def test_commands_take_the_kubeconfig_before_the_service_account(pod: None,
                                                                 default_file: Path) -> None:
    access = kube.load(None, in_cluster_first=False)
    assert not access.in_cluster and access.configuration.host == "https://from-default:6443"


def test_outside_a_pod_both_fall_back_to_the_kubeconfig(default_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for in_cluster_first in (True, False):
        access = kube.load(None, in_cluster_first=in_cluster_first)
        assert access.configuration.host == "https://from-default:6443"


def test_neither_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "absent"))
    with pytest.raises(ConfigException):
        kube.load(None)


def test_the_process_wide_default_is_left_alone(pod: None, default_file: Path) -> None:
    from kubernetes import client

    before = client.Configuration.get_default_copy().host
    kube.load(None)
    kube.load(None, in_cluster_first=False)
    assert client.Configuration.get_default_copy().host == before
