"""ES256 JWTs in the shape the distribution registry accepts (docker/distribution auth/token)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.harness.certs import TestCA

KeyIdMode = Literal["x5c", "kid"]


@dataclass(frozen=True)
class Access:
    """One entry of the `access` claim."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        """The JSON form distribution expects."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_kid(public_key: ec.EllipticCurvePublicKey) -> str:
    """The libtrust key id: base32 of 240 bits of sha256(SPKI DER) in 12 groups of 4."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(spki).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenSigner:
    """Holds the signing key and certificate; `sign` makes a registry token."""

    def __init__(
        self, ca: TestCA, *, issuer: str, service: str, key_id_mode: KeyIdMode = "x5c"
    ) -> None:
        # Unique file names: several token servers may share one session CA directory.
        name = f"token-signer-{uuid.uuid4().hex[:8]}"
        issued = ca.issue(name, cn="token-signer", client=False, server=True)
        key = serialization.load_pem_private_key(issued.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("token signer key must be EC")
        self._key = key
        self.cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
        self.cert_path = issued.cert_path
        self.issuer = issuer
        self.service = service
        self.key_id_mode = key_id_mode
        # distribution looks keys up by kid in this bundle, or verifies x5c chains against it.
        self.bundle_path = ca.directory / f"{name}-bundle.crt"
        self.bundle_path.write_text(issued.cert_pem + ca.pem)

    @property
    def kid(self) -> str:
        """The libtrust key id of the signing key."""
        return libtrust_kid(self._key.public_key())

    def sign(
        self,
        subject: str,
        access: Sequence[Access],
        *,
        ttl: float,
        now: float | None = None,
        audience: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Return (compact JWS, claims) for `subject` with `access`, valid `ttl` seconds."""
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience if audience is not None else self.service,
            "exp": issued + int(ttl),
            "nbf": issued - 1,
            "iat": issued,
            "jti": uuid.uuid4().hex,
            "access": [a.claim() for a in access],
        }
        return self.encode(claims), claims

    def encode(self, claims: dict[str, Any]) -> str:
        """Sign arbitrary claims (tests use this to forge odd tokens)."""
        header: dict[str, Any] = {"typ": "JWT", "alg": "ES256"}
        if self.key_id_mode == "kid":
            header["kid"] = self.kid
        else:
            der = self.cert.public_bytes(serialization.Encoding.DER)
            header["x5c"] = [base64.b64encode(der).decode()]
        signing_input = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        der_sig = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_sig)
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def decode_claims(token: str) -> dict[str, Any]:
    """The unverified claims of a JWT (for assertions in tests)."""
    payload = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data
