"""A stand-in for a cluster's service-account issuer: signing keys, its JWKS, its tokens.

No Kubernetes API server runs here. What the broker reads from a cluster is a JWKS (what
`/openid/v1/jwks` serves) and projected tokens signed with the matching private keys, so
this makes both with `cryptography`, in the shape kube-apiserver produces: `kid` is the
base64url SHA-256 of the key's DER SubjectPublicKeyInfo, claims as in
service/pullbroker_service/domain/pod_identity.py. Unit and integration tests share it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "pullbroker"
Algorithm = Literal["RS256", "ES256"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int, size: int | None = None) -> str:
    length = size or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(length, "big"))


@dataclass(frozen=True)
class ClusterKey:
    """One signing key; `kid` computed as kube-apiserver does."""

    private: PrivateKey
    algorithm: Algorithm

    @classmethod
    def generate(cls, algorithm: Algorithm = "RS256") -> ClusterKey:
        if algorithm == "RS256":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm)
        return cls(ec.generate_private_key(ec.SECP256R1()), algorithm)

    @property
    def kid(self) -> str:
        spki = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return b64url(hashlib.sha256(spki).digest())

    def jwk(self) -> dict[str, str]:
        """The public key as the cluster publishes it."""
        public = self.private.public_key()
        base = {"use": "sig", "kid": self.kid, "alg": self.algorithm}
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            return {**base, "kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
        point = public.public_numbers()
        return {
            **base,
            "kty": "EC",
            "crv": "P-256",
            "x": _uint(point.x, 32),
            "y": _uint(point.y, 32),
        }

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def claims_for(
    namespace: str,
    account: str,
    *,
    issuer: str = ISSUER,
    audience: str | list[str] = AUDIENCE,
    pod: str | None = "web-0",
    node: str | None = "node-1",
    lifetime: float = 3600.0,
    now: float | None = None,
) -> dict[str, Any]:
    """Claims of a pod-bound projected token, as kube-apiserver writes them."""
    issued = int(time.time() if now is None else now)
    k8s: dict[str, Any] = {
        "namespace": namespace,
        "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
    }
    if pod is not None:
        k8s["pod"] = {"name": pod, "uid": str(uuid.uuid4())}
    if node is not None:
        k8s["node"] = {"name": node, "uid": str(uuid.uuid4())}
    return {
        "iss": issuer,
        "sub": f"system:serviceaccount:{namespace}:{account}",
        "aud": [audience] if isinstance(audience, str) else audience,
        "iat": issued,
        "nbf": issued,
        "exp": int(issued + lifetime),
        "jti": str(uuid.uuid4()),
        "kubernetes.io": k8s,
    }


def encode_token(header: dict[str, Any], claims: dict[str, Any], key: ClusterKey) -> str:
    """A compact JWS over exactly these header and claims."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


@dataclass
class FakeCluster:
    """A cluster's issuer: `token(...)` signs with the active key; `publish(path)` writes the
    JWKS of every published key, atomically (write, then rename), as a refresh job would."""

    issuer: str = ISSUER
    keys: list[ClusterKey] = field(default_factory=lambda: [ClusterKey.generate("RS256")])

    @property
    def active(self) -> ClusterKey:
        return self.keys[-1]

    def rotate(self, algorithm: Algorithm = "RS256") -> ClusterKey:
        key = ClusterKey.generate(algorithm)
        self.keys.append(key)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def publish(self, path: Path) -> Path:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.jwks()))
        os.replace(tmp, path)
        return path

    def token(
        self, namespace: str, account: str, *, key: ClusterKey | None = None, **claims: Any
    ) -> str:
        """A projected token for `namespace/account` (claims_for's keywords adjust it)."""
        signer = key or self.active
        header = {"alg": signer.algorithm, "kid": signer.kid}
        claims.setdefault("issuer", self.issuer)
        return encode_token(header, claims_for(namespace, account, **claims), signer)
