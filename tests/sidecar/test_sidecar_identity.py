"""Who is struck (Art.14): the identity source the posture names, a verified JWT claim beating any
header, through the real sidecar app with its strike book. Tokens are signed here with real keys
(HS256 secret, ES256 and RS256 key pairs from `cryptography`), as a gateway or identity provider
would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hegui.moderation.strikes import StrikeBook
from hegui.sidecar import identity
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import POSTURE, FakeModel, LocalModerator, posture, sidecar_client

SECRET = b"gateway-signing-secret-0123456789"
CLEAN = {"model": "fake", "messages": [{"role": "user", "content": "say:你好"}]}
BAD = {"model": "fake", "messages": [{"role": "user", "content": "教我制作炸弹"}]}
JWT_POSTURE = {"identity": {"source": "JWT", "jwtClaim": "uid", "jwtIssuer": "https://idp",
                            "jwtKeySecretRef": {"name": "gateway", "key": "jwt.key"}}}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(claims: dict[str, Any], *, key: Any = SECRET, alg: str = "HS256") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signed = f"{head}.{body}".encode()
    if alg == "HS256":
        signature = hmac.new(key, signed, hashlib.sha256).digest()
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32) + s.to_bytes(32)
    elif alg == "RS256":
        signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = b""
    return f"{head}.{body}.{_b64(signature)}"


def strike_key(user: str) -> str:
    """The strike book's key of a user when no pseudonymisation key is set (Sidecar)."""
    return hashlib.sha256(user.encode()).hexdigest()[:32]


def claims(user: str = "carol", **more: Any) -> dict[str, Any]:
    return {"uid": user, "iss": "https://idp", "exp": time.time() + 300, **more}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def jwt_sidecar(fake_model: FakeModel,
                      tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], StrikeBook]]:
    book = StrikeBook(tmp_path / "strikes.json")
    config = SidecarConfig(posture(users=JWT_POSTURE), upstream=fake_model.url,
                           service="ns/chat", user_jwt_key=SECRET)
    client = await sidecar_client(config, LocalModerator(), strikes=book)
    yield client, book
    await client.close()


async def test_a_verified_claim_beats_a_header_naming_someone_else(
        jwt_sidecar: tuple[TestClient[Any, Any], StrikeBook]) -> None:
    client, book = jwt_sidecar
    # carol's valid token and a header that tries to put the strike on bob.
    headers = {**bearer(token(claims("carol"))), "x-hegui-user": "bob"}
    blocked = await client.post("/v1/chat/completions", json=BAD, headers=headers)
    assert blocked.status == 400
    assert book.level(strike_key("carol")).value == "warn"  # carol, as the token proves
    assert book.level(strike_key("bob")).value == "ok"  # the header named bob: ignored


# Built when the test runs, not when pytest collects it: a token's expiry counts from its
# making, and a long suite reaches these minutes after collection (one expired mid-run).
@pytest.mark.parametrize(("headers", "why"), [
    (lambda: {"x-hegui-user": "carol"}, "bearer token from the gateway is required"),
    (lambda: bearer(token(claims(), key=b"another-key-of-the-clients-own")),
     "does not verify"),
    (lambda: bearer(token(claims(exp=time.time() - 3600))), "expired"),
    (lambda: bearer(token({"uid": "carol", "iss": "https://idp"})), "no expiry"),
    (lambda: bearer(token(claims(iss="https://elsewhere"))), "not issued by https://idp"),
    (lambda: bearer(token(claims(), alg="none")), "does not fit"),
    (lambda: bearer(token({"iss": "https://idp", "exp": time.time() + 60})), "no 'uid' claim"),
    (lambda: bearer("not.a-token"), "not a JWT"),
    (lambda: bearer("%%%." * 2 + "x"), "not base64url JSON"),
])
async def test_no_verified_token_no_service_under_the_jwt_source(
        jwt_sidecar: tuple[TestClient[Any, Any], StrikeBook],
        headers: Callable[[], dict[str, str]], why: str) -> None:
    client, _ = jwt_sidecar
    refused = await client.post("/v1/chat/completions", json=CLEAN, headers=headers())
    assert refused.status == 401
    error = (await refused.json())["error"]
    assert error["code"] == "hegui.identity_required" and error["article"] == "Art.14"
    assert why in error["message"]
    ok = await client.post("/v1/chat/completions", json=CLEAN,
                           headers=bearer(token(claims())))
    assert ok.status == 200


async def test_the_header_source_ignores_tokens(fake_model: FakeModel, tmp_path: Path) -> None:
    book = StrikeBook(tmp_path / "strikes.json")
    config = SidecarConfig(posture(users={"identity": {"source": "Header",
                                                       "header": "x-gateway-user"}}),
                           upstream=fake_model.url, service="ns/chat", user_jwt_key=SECRET,
                           user_jwt_claim="uid")
    client = await sidecar_client(config, LocalModerator(), strikes=book)
    try:
        headers = {**bearer(token(claims("carol"))), "x-gateway-user": "dave",
                   "x-hegui-user": "erin"}
        assert (await client.post("/v1/chat/completions", json=BAD, headers=headers)).status \
            == 400
    finally:
        await client.close()
    assert book.level(strike_key("dave")).value == "warn"
    assert book.level(strike_key("carol")).value == book.level(strike_key("erin")).value == "ok"


def test_public_keys_of_an_identity_provider_verify() -> None:
    source = identity.Source(jwt=True, claim="uid", issuer="https://idp")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for private, alg in ((ec_key, "ES256"), (rsa_key, "RS256")):
        pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        assert identity.verify(token(claims("frank"), key=private, alg=alg), pem,
                               source) == "frank"
        # The public key used as an HMAC secret (the classic algorithm confusion) is refused.
        forged = token(claims("mallory"), key=pem, alg="HS256")
        with pytest.raises(identity.IdentityError, match="does not fit"):
            identity.verify(forged, pem, source)
    other = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(identity.IdentityError, match="does not verify"):
        identity.verify(token(claims(), key=other, alg="ES256"), pem, source)


def test_without_a_posture_source_a_claim_needs_a_key() -> None:
    # The sidecar's own flags: a claim without a key is not a source (the header is).
    assert not identity.source_of(None, header="x-hegui-user", claim="sub", key=None).jwt
    assert identity.source_of(None, header="x-hegui-user", claim="sub", key=SECRET).jwt
    unverified = {"Authorization": "Bearer e30.eyJzdWIiOiJjYXJvbCJ9.sig", "x-hegui-user": "a"}
    source = identity.source_of(None, header="x-hegui-user", claim="sub", key=SECRET)
    assert identity.resolve(unverified, source, SECRET).user is None  # never the header


def test_the_injector_mounts_the_key_the_posture_names() -> None:
    from hegui.admission.injection import secret_keys, sidecar_container
    from hegui.api.generativeservice import GenerativeService
    from hegui.api.policy import Sidecar

    service = GenerativeService.from_dict({
        "apiVersion": "hegui.io/v1alpha1", "kind": "GenerativeService",
        "metadata": {"name": "chat", "namespace": "ai"},
        "spec": {"selector": {"matchLabels": {"app": "chat"}},
                 "filing": {"publicOpinion": False,
                            "algorithm": {"number": "网信算备110108823483901230011号"}},
                 "moderation": {**POSTURE, "users": JWT_POSTURE}}})
    keys = secret_keys(service)
    assert keys["user-jwt.key"].name == "gateway" and keys["user-jwt.key"].key == "jwt.key"
    container = sidecar_container(Sidecar.from_dict({"image": "hegui/sidecar:1"}),
                                  service="chat", port_name="http", upstream_port=8080, keys=keys)
    args = container["args"]
    assert args[args.index("--user-jwt-key-file") + 1] == "/etc/hegui-keys/user-jwt.key"
