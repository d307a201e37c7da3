"""Certificates and kubeconfigs for the local control plane.

Everything is made with `cryptography` (ECDSA P-256): one cluster CA signs the apiserver's serving
certificate and a client certificate per component. Kubernetes takes identity from the client
certificate (CN = user, O = groups), so each component gets the identity its real counterpart uses
and RBAC applies to it as it would in a real cluster.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: the user name and groups the apiserver will see."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


# Who talks to the apiserver, and as whom.
ADMIN = ClientIdentity("admin", "hegui-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")
# kwok plays every kubelet at once; the node authorizer would confine it to a single node, so it
# gets the admin group, as kwok's own clusters do.
KWOK = ClientIdentity("kwok", "kwok-controller", ("system:masters",))
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK)


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> (
    x509.CertificateBuilder
):
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        key = _new_key()
        name = _name(common_name)
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: expected an ECDSA key")
        return cls(cert, key)

    def issue(
        self,
        subject: x509.Name,
        *,
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
        client: bool = False,
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key, both PEM."""
        key = _new_key()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server_names or server_ips:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            _builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server_names or server_ips:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, _key_pem(self.key))


def write_serving_pair(
    ca: CertificateAuthority,
    directory: Path,
    stem: str,
    *,
    names: tuple[str, ...],
    ips: tuple[str, ...],
) -> tuple[Path, Path]:
    """A serving certificate for `names`/`ips`, written as `<stem>.crt` and `<stem>.key`."""
    cert_pem, key_pem = ca.issue(_name(names[0] if names else ips[0]), server_names=names,
                                 server_ips=ips)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert_pem)
    _write_private(key_path, key_pem)
    return cert_path, key_path


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> None:
    """A kubeconfig with the credentials embedded, so it can be copied anywhere."""
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "hegui-local", "cluster": {
            "server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "hegui-local", "context": {"cluster": "hegui-local", "user": user}}],
        "current-context": "hegui-local",
    }
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())


@dataclass(frozen=True)
class ClusterPki:
    """Paths of everything the control plane's TLS needs, under one directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "service-account.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "service-account.pub"

    def kubeconfig(self, identity: ClientIdentity) -> Path:
        return self.directory / f"{identity.file_stem}.kubeconfig"

    def client_pair(self, identity: ClientIdentity) -> tuple[Path, Path]:
        return (self.directory / f"{identity.file_stem}.crt",
                self.directory / f"{identity.file_stem}.key")

    def ensure(self, server_url: str) -> None:
        """Create whatever is missing; an existing CA is kept so old kubeconfigs stay valid.

        Kubeconfigs are rewritten every time because the server URL depends on the ports.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if self.ca_cert.exists() and self.ca_key.exists():
            ca = CertificateAuthority.load(self.ca_cert, self.ca_key)
        else:
            ca = CertificateAuthority.create("hegui-local-ca")
            ca.write(self.ca_cert, self.ca_key)
            for stale in (self.apiserver_cert, self.service_account_key):
                stale.unlink(missing_ok=True)
        if not self.apiserver_cert.exists():
            write_serving_pair(
                ca, self.directory, "apiserver",
                names=("localhost", "kubernetes", "kubernetes.default",
                       "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
                ips=("127.0.0.1", "10.96.0.1"),
            )
        if not self.service_account_key.exists():
            sa_key = _new_key()
            _write_private(self.service_account_key, _key_pem(sa_key))
            self.service_account_pub.write_bytes(sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        ca_pem = self.ca_cert.read_bytes()
        for identity in CLIENTS:
            cert_path, key_path = self.client_pair(identity)
            if not cert_path.exists():
                cert_pem, key_pem = ca.issue(_name(identity.user, identity.groups), client=True)
                cert_path.write_bytes(cert_pem)
                _write_private(key_path, key_pem)
            write_kubeconfig(
                self.kubeconfig(identity), server=server_url, ca_pem=ca_pem,
                cert_pem=cert_path.read_bytes(), key_pem=key_path.read_bytes(),
                user=identity.user,
            )
