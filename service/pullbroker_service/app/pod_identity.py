"""Verifying pods' service-account tokens offline, against the cluster's published keys.

A projected service-account token is a JWS signed (RS256, or ES256 with an ECDSA key) by
the cluster's service-account issuer. The broker never dials the API server for it: the
public keys come from a file holding a JWKS, the document the cluster serves at
`/openid/v1/jwks` (the `jwks_uri` of its OIDC discovery document
`/.well-known/openid-configuration`). A deployment sidecar or CronJob keeps the file fresh,
writing a temporary file and renaming it over the old one so a half-written file is never
read, e.g. `kubectl get --raw /openid/v1/jwks > jwks.json.tmp && mv jwks.json.tmp jwks.json`.
A key rotated by the book is published (--service-account-key-file) before tokens are
signed with it, so a refresh every few minutes is enough.

The file is stat()ed at most once per `check_interval` and re-read when its mtime, size or
inode changed; a token whose `kid` is not known forces a check (at most one a second), so a
refreshed file is used at once. A file that is unreadable or invalid at start is fatal;
later, the last good keys stay and the failure is logged (a broken refresh must not stop
every pull).

The token is used for verification only: it is never logged, stored or put in a message.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pullbroker_client.jsonlimits import loads_bounded
from pullbroker_client.secret import Secret

from pullbroker_service.domain.pod_identity import (
    PodIdentity,
    PodKeysUnavailable,
    PodTokenRejected,
    TokenExpectations,
    identity_from_claims,
)

log = structlog.get_logger()

ALGORITHMS = ("RS256", "ES256")
MAX_TOKEN_LENGTH = 16 * 1024  # projected tokens are ~1 KiB
MAX_KEYS_FILE = 1024 * 1024
MIN_RSA_BITS = 2048
_P256_COORDINATE = 32
_FORCED_FLOOR = 1.0
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class SigningKey:
    """One usable key of the JWKS: its `kid` ("" if none), algorithm and public key."""

    kid: str
    algorithm: str
    public_key: PublicKey

    def verifies(self, signed: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.public_key, rsa.RSAPublicKey):
                self.public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                if len(signature) != 2 * _P256_COORDINATE:
                    return False
                r = int.from_bytes(signature[:_P256_COORDINATE], "big")
                s = int.from_bytes(signature[_P256_COORDINATE:], "big")
                der = encode_dss_signature(r, s)
                self.public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


class PodIdentityVerifier:
    """`verify(token) -> PodIdentity`: signature, issuer, audience and times checked."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_file: Path,
        leeway_seconds: float = 30.0,
        check_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("a PodIdentityVerifier needs an issuer and an audience")
        self._expect = TokenExpectations(issuer, audience, leeway_seconds)
        self._file = jwks_file
        self._interval = check_interval
        self._clock = clock
        self._monotonic = monotonic
        self._signature = _stat(jwks_file)
        self._keys = load_jwks_file(jwks_file)
        self._checked_at = monotonic()
        log.info("pod_keys_loaded", file=str(jwks_file), keys=len(self._keys))

    @property
    def issuer(self) -> str:
        return self._expect.issuer

    @property
    def audience(self) -> str:
        return self._expect.audience

    def verify(self, token: Secret) -> PodIdentity:
        """The pod identity in `token`, or PodTokenRejected saying which check failed."""
        text = token.reveal()
        if len(text) > MAX_TOKEN_LENGTH:
            raise PodTokenRejected(
                f"service-account token is longer than {MAX_TOKEN_LENGTH} characters"
            )
        parts = text.split(".")
        if len(parts) != 3:
            raise PodTokenRejected(
                "service-account token is not a signed JWT (three dot-separated parts)"
            )
        header = _json_part(parts[0], "header")
        algorithm = _algorithm(header)
        signed = f"{parts[0]}.{parts[1]}".encode()
        signature = _b64decode(parts[2], "signature")
        kid = header.get("kid")
        candidates = self._candidates(algorithm, kid if isinstance(kid, str) else None)
        if not any(key.verifies(signed, signature) for key in candidates):
            raise PodTokenRejected(
                f"service-account token signature does not verify with the broker's {algorithm} "
                "Kubernetes keys: the token is forged or comes from another cluster"
            )
        claims = _json_part(parts[1], "claims")
        return identity_from_claims(claims, self._expect, self._clock())

    def _candidates(self, algorithm: str, kid: str | None) -> list[SigningKey]:
        self._refresh(force=False)
        found = _select(self._keys, algorithm, kid)
        if not found and kid is not None:
            self._refresh(force=True)  # a rotation: the cluster signs with a key we lack yet
            found = _select(self._keys, algorithm, kid)
        if not found:
            which = f"key id {kid[:80]!r}" if kid is not None else "no key id"
            raise PodTokenRejected(
                f"service-account token is signed with {algorithm} and {which}, which the "
                "broker's Kubernetes key file lacks: refresh it from the cluster's "
                "/openid/v1/jwks (or the token comes from another cluster)"
            )
        return found

    def _refresh(self, *, force: bool) -> None:
        now = self._monotonic()
        # Even forced (an unknown kid), at most one check a second: made-up kids cost nothing.
        if now - self._checked_at < (_FORCED_FLOOR if force else self._interval):
            return
        self._checked_at = now
        try:
            signature = _stat(self._file)
            if signature == self._signature:
                return
            # Remembered before loading: a bad file is reported once, not on every call.
            self._signature = signature
            keys = load_jwks_file(self._file)
        except PodKeysUnavailable as exc:
            log.error("pod_keys_reload_failed", file=str(self._file), error=str(exc))
            return
        self._keys = keys
        log.info("pod_keys_reloaded", file=str(self._file), keys=len(keys))


class _Warned:
    # Once per process: every pod start would otherwise log the same line.
    unconfigured = False


def identify_pod(verifier: PodIdentityVerifier | None, token: Secret | None) -> PodIdentity | None:
    """The verified pod behind a request: None without a token; PodTokenRejected for a bad one.

    A broker not configured for a cluster (no verifier) ignores tokens, warning once: rules
    without `kubernetes` keep granting, scoped ones refuse, so kubelets may be configured to
    send tokens before the broker is.
    """
    if not token:
        return None
    if verifier is None:
        if not _Warned.unconfigured:
            _Warned.unconfigured = True
            log.warning(
                "service_account_tokens_ignored",
                reason="the broker has no `kubernetes` settings (issuer, audience, jwks_file)",
            )
        return None
    return verifier.verify(token)


def load_jwks_file(path: Path) -> tuple[SigningKey, ...]:
    """The RS256/ES256 keys of the JWKS in `path`; PodKeysUnavailable if it has none."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEYS_FILE + 1)
    except OSError as exc:
        raise PodKeysUnavailable(
            f"cannot read the Kubernetes key file {path}: {exc.strerror}"
        ) from None
    if len(data) > MAX_KEYS_FILE:
        raise PodKeysUnavailable(f"Kubernetes key file {path} is larger than {MAX_KEYS_FILE} bytes")
    try:
        document = loads_bounded(data)
    except ValueError:
        raise PodKeysUnavailable(
            f"Kubernetes key file {path} is not JSON: save the cluster's /openid/v1/jwks there"
        ) from None
    keys = parse_jwks(document)
    if not keys:
        raise PodKeysUnavailable(
            f"Kubernetes key file {path} has no RS256 or ES256 (P-256) signing key: save the "
            "cluster's /openid/v1/jwks there"
        )
    return keys


def parse_jwks(document: object) -> tuple[SigningKey, ...]:
    """The usable signing keys of a JWKS document; other keys (encryption, other curves, RSA
    under 2048 bits, malformed entries) are skipped."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        return ()
    keys: list[SigningKey] = []
    for entry in entries:
        key = _signing_key(entry) if isinstance(entry, Mapping) else None
        if key is not None:
            keys.append(key)
    return tuple(keys)


def _signing_key(entry: Mapping[str, object]) -> SigningKey | None:
    if entry.get("use", "sig") != "sig":
        return None
    kid = entry.get("kid", "")
    kid = kid if isinstance(kid, str) else ""
    try:
        if entry.get("kty") == "RSA":
            algorithm, public_key = "RS256", _rsa_key(entry)
        elif entry.get("kty") == "EC" and entry.get("crv") == "P-256":
            algorithm, public_key = "ES256", _ec_key(entry)
        else:
            return None
    except ValueError:
        return None
    if entry.get("alg", algorithm) != algorithm:
        return None
    return SigningKey(kid, algorithm, public_key)


def _rsa_key(entry: Mapping[str, object]) -> PublicKey:
    n = _b64int(entry.get("n"))
    e = _b64int(entry.get("e"))
    if n.bit_length() < MIN_RSA_BITS:
        raise ValueError("RSA key too small")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _ec_key(entry: Mapping[str, object]) -> PublicKey:
    x, y = _b64int(entry.get("x")), _b64int(entry.get("y"))
    # Raises ValueError for a point not on the curve (an invalid-curve attack needs one).
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def _b64int(value: object) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError("missing key parameter")
    return int.from_bytes(_b64url(value), "big")


def _select(keys: tuple[SigningKey, ...], algorithm: str, kid: str | None) -> list[SigningKey]:
    usable = [key for key in keys if key.algorithm == algorithm]
    if kid is None:
        return usable
    # A key published without a kid may sign any token (Kubernetes always sets both).
    return [key for key in usable if key.kid in (kid, "")]


def _algorithm(header: Mapping[str, object]) -> str:
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise PodTokenRejected(
            f"service-account token algorithm {str(algorithm)[:20]!r} is not accepted: "
            f"Kubernetes signs with {' or '.join(ALGORITHMS)}"
        )
    if "crit" in header:
        raise PodTokenRejected("service-account token has critical header extensions")
    return str(algorithm)


def _json_part(part: str, what: str) -> Mapping[str, object]:
    try:
        value = loads_bounded(_b64decode(part, what), max_depth=16)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise PodTokenRejected(f"service-account token {what} is not a JSON object")
    return value


def _b64decode(text: str, what: str) -> bytes:
    try:
        return _b64url(text)
    except ValueError:
        raise PodTokenRejected(f"service-account token {what} is not base64url") from None


def _b64url(text: str) -> bytes:
    """Strict unpadded base64url: the stdlib decoder would skip stray characters."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _stat(path: Path) -> tuple[int, int, int]:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise PodKeysUnavailable(
            f"cannot read the Kubernetes key file {path}: {exc.strerror}"
        ) from None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino
