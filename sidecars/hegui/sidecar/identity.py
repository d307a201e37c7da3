"""Who the user is, for strikes (Art.14), records (Art.11) and complaints (Art.15): from the source
the posture names (`moderation.users.identity`), never from whatever the client writes.

- `source: JWT`: the bearer token of the `Authorization` header, verified here with the key the
  posture names (`jwtKeySecretRef`, mounted as a file by the injector): a PEM public key (RS256,
  RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA: the identity provider's key, so
  the gateway may forward the user's own token) or a shared secret (HS256, HS384, HS512: a
  gateway that signs its own short-lived token). The signature, `exp` (required: a token that
  never expires could be replayed forever), `nbf`, and `iss` / `aud` when declared are checked,
  with 60 s of clock skew. The user is the declared claim (`jwtClaim`, default `sub`). Any user
  header is ignored: a verified claim always wins. A request on a model route without a valid
  token is refused (401 `hegui.identity_required`): under this source every request comes
  through the gateway, and one without a token would be a user escaping their strikes.
- `source: Header` (the default): the header the posture names (`header`, default
  `x-hegui-user`), which the gateway sets (overwriting any the client sent). It is only as good
  as the path: hegui's NetworkPolicy admits ingress only on the sidecar's port, so the platform
  must make the gateway the only client that reaches it; prefer JWT where it cannot.

Without a posture identity, the sidecar's `--user-jwt-claim` and `--user-jwt-key-file` select
JWT (both are required: an unverified claim is whatever the client wrote), else the header.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ARTICLE = "Art.14"
LEEWAY_SECONDS = 60.0
MAX_TOKEN_CHARS = 8192
MAX_USER_CHARS = 256

_HMAC = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384,
                                                   "512": hashes.SHA512}


class IdentityError(ValueError):
    """A token that does not prove who the user is; the message says why (never the token)."""


@dataclass(frozen=True)
class Source:
    """Where the user id comes from (see the module doc)."""

    jwt: bool
    header: str = "x-hegui-user"
    claim: str = "sub"
    issuer: str | None = None
    audience: str | None = None


def source_of(posture_identity: Any, *, header: str, claim: str, key: bytes | None) -> Source:
    """The source the posture names, else the sidecar's own settings (see the module doc)."""
    if posture_identity is not None:
        return Source(jwt=str(getattr(posture_identity.source, "value",
                                      posture_identity.source)) == "JWT",
                      header=posture_identity.header, claim=posture_identity.jwt_claim,
                      issuer=posture_identity.jwt_issuer,
                      audience=posture_identity.jwt_audience)
    return Source(jwt=bool(claim and key), header=header, claim=claim or "sub")


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _json(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64(part))
    except (ValueError, binascii.Error):
        raise IdentityError(f"the token's {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise IdentityError(f"the token's {what} is not a JSON object")
    return value


def _check_signature(alg: str, key: bytes, signed: bytes, signature: bytes) -> None:
    if key.lstrip().startswith(b"-----BEGIN"):
        try:
            public = serialization.load_pem_public_key(key)
        except ValueError:
            raise IdentityError("the verification key is not a PEM public key") from None
        try:
            if isinstance(public, rsa.RSAPublicKey) and alg[:2] in ("RS", "PS") \
                    and alg[2:] in _HASHES:
                digest = _HASHES[alg[2:]]()
                pad: padding.AsymmetricPadding = padding.PKCS1v15() if alg[:2] == "RS" else \
                    padding.PSS(padding.MGF1(digest), padding.PSS.DIGEST_LENGTH)
                public.verify(signature, signed, pad, digest)
            elif isinstance(public, ec.EllipticCurvePublicKey) and alg[:2] == "ES" \
                    and alg[2:] in _HASHES:
                size = (public.curve.key_size + 7) // 8
                if len(signature) != 2 * size:
                    raise IdentityError("the token's signature has the wrong length")
                der = encode_dss_signature(int.from_bytes(signature[:size]),
                                           int.from_bytes(signature[size:]))
                public.verify(der, signed, ec.ECDSA(_HASHES[alg[2:]]()))
            elif isinstance(public, ed25519.Ed25519PublicKey) and alg == "EdDSA":
                public.verify(signature, signed)
            else:
                raise IdentityError(f"algorithm {alg!r} does not fit the verification key")
        except InvalidSignature:
            raise IdentityError("the token's signature does not verify") from None
        return
    hmac_digest = _HMAC.get(alg)
    if hmac_digest is None:  # never "none", never a public-key algorithm with a shared secret
        raise IdentityError(f"algorithm {alg!r} does not fit the verification key (a shared "
                            "secret: HS256, HS384, HS512)")
    if not hmac.compare_digest(hmac.new(key, signed, hmac_digest).digest(), signature):
        raise IdentityError("the token's signature does not verify")


def verify(token: str, key: bytes, source: Source, now: float | None = None) -> str:
    """The user a JWT names, once its signature and times are checked; raises IdentityError."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise IdentityError("the bearer token is not a JWT")
    head, body, sig = token.split(".")
    header = _json(head, "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise IdentityError("the token names no algorithm")
    try:
        signature = _b64(sig)
    except (ValueError, binascii.Error):
        raise IdentityError("the token's signature is not base64url") from None
    _check_signature(alg, key, f"{head}.{body}".encode("ascii"), signature)
    claims = _json(body, "payload")
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdentityError("the token has no expiry (exp)")
    if now > exp + LEEWAY_SECONDS:
        raise IdentityError("the token has expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and now < nbf - LEEWAY_SECONDS:
        raise IdentityError("the token is not valid yet (nbf)")
    if source.issuer is not None and claims.get("iss") != source.issuer:
        raise IdentityError(f"the token was not issued by {source.issuer}")
    if source.audience is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if source.audience not in audiences:
            raise IdentityError(f"the token is not meant for {source.audience}")
    user = claims.get(source.claim)
    if not isinstance(user, str | int) or isinstance(user, bool) or str(user) == "":
        raise IdentityError(f"the token has no {source.claim!r} claim")
    return str(user)[:MAX_USER_CHARS]


@dataclass(frozen=True)
class Resolved:
    """The user of a request, or why it has none the posture accepts."""

    user: str | None
    problem: str | None = None  # set only under the JWT source: the request is refused


def resolve(headers: Mapping[str, str], source: Source, key: bytes | None,
            now: float | None = None) -> Resolved:
    """The user of a request with these headers (see the module doc)."""
    if not source.jwt:
        value = headers.get(source.header)
        return Resolved(value[:MAX_USER_CHARS] if value else None)
    if not key:
        return Resolved(None, "the posture names a JWT as the user's identity, but the sidecar "
                              "has no key to verify it (jwtKeySecretRef)")
    auth = headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return Resolved(None, "a bearer token from the gateway is required: the posture names "
                              f"its {source.claim!r} claim as the user's identity")
    try:
        return Resolved(verify(auth[len("Bearer "):].strip(), key, source, now))
    except IdentityError as bad:
        return Resolved(None, f"the bearer token does not identify the user: {bad}")


__all__ = ["ARTICLE", "IdentityError", "Resolved", "Source", "resolve", "source_of", "verify"]
