"""The local control plane's certificates carry the identities RBAC expects."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hegui.localcluster import pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_client_certificates_name_user_and_groups(tmp_path: Path) -> None:
    files = pki.ClusterPki(tmp_path / "pki")
    files.ensure("https://127.0.0.1:16443")
    for identity in pki.CLIENTS:
        cert = _load(files.client_pair(identity)[0])
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert cn == identity.user
        assert tuple(orgs) == identity.groups
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
        cert.verify_directly_issued_by(_load(files.ca_cert))


def test_apiserver_certificate_covers_loopback_and_service_names(tmp_path: Path) -> None:
    files = pki.ClusterPki(tmp_path / "pki")
    files.ensure("https://127.0.0.1:16443")
    sans = _load(files.apiserver_cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert _load(files.apiserver_cert).not_valid_after_utc > dt.datetime.now(dt.UTC)


def test_keys_and_kubeconfigs_are_private_and_self_contained(tmp_path: Path) -> None:
    files = pki.ClusterPki(tmp_path / "pki")
    files.ensure("https://127.0.0.1:16443")
    assert files.ca_key.stat().st_mode & 0o077 == 0
    config = yaml.safe_load(files.kubeconfig(pki.ADMIN).read_text())
    assert files.kubeconfig(pki.ADMIN).stat().st_mode & 0o077 == 0
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:16443"
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    assert ca == files.ca_cert.read_bytes()


def test_existing_ca_is_kept_and_kubeconfigs_follow_the_port(tmp_path: Path) -> None:
    files = pki.ClusterPki(tmp_path / "pki")
    files.ensure("https://127.0.0.1:16443")
    ca_before = files.ca_cert.read_bytes()
    files.ensure("https://127.0.0.1:26443")
    assert files.ca_cert.read_bytes() == ca_before
    config = yaml.safe_load(files.kubeconfig(pki.ADMIN).read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:26443"
