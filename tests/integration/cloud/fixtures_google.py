"""Fixtures standing in for Google endpoints that cannot run on this machine.

GoogleOAuthFixture plays `https://oauth2.googleapis.com/token` for service accounts: the
JWT-bearer grant (RFC 7523) as Google documents it for server-to-server apps. It verifies the
assertion's RS256 signature with the service account's public key and checks grant_type, iss,
aud (= the token URI), scope, iat/exp (at most one hour), then issues an opaque access token.

GoogleRealmFixture plays the registry's token service (`https://gcr.io/v2/token`): Basic
`oauth2accesstoken:<access token>` is accepted when the OAuth fixture issued that token, and
the registry token carries the owning service account's repository grants. A plain Basic
user (the `pusher` that seeds images) is also accepted, for test setup only.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.harness.certs import TestCA
from tests.harness.https_server import Reply, Request, json_reply
from tests.integration.cloud.fixtures_https import (
    UNAUTHORIZED,
    JsonHttpsServer,
    RealmRegistry,
    RegistryTokens,
    seed_image,
)

GOOGLE_READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def service_account_key(email: str, token_uri: str) -> tuple[str, rsa.RSAPrivateKey]:
    """A service-account key file in Google's JSON format, and its private key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    document = {
        "type": "service_account",
        "project_id": "pullbroker-test",
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbits(64)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    return json.dumps(document), key


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GoogleOAuthFixture(JsonHttpsServer):
    """POST /token with the JWT-bearer grant -> an access token (see module docstring)."""

    def __init__(self, ca: TestCA) -> None:
        super().__init__(ca, "google-oauth")
        self._accounts: dict[str, rsa.RSAPublicKey] = {}
        self._issued: dict[str, str] = {}
        self._guard = threading.Lock()
        self.last_claims: dict[str, Any] = {}

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def add_account(self, email: str, key: rsa.RSAPrivateKey) -> None:
        """Register a service account by its public key (what Google keeps)."""
        with self._guard:
            self._accounts[email] = key.public_key()

    def owner(self, access_token: str) -> str | None:
        """The service account an access token was issued to."""
        with self._guard:
            return self._issued.get(access_token)

    def handle(self, request: Request) -> Reply:
        if (request.method, request.url_path) != ("POST", "/token"):
            return json_reply(404, {"error": "not_found"})
        if request.one("grant_type") != JWT_BEARER:
            return json_reply(400, {"error": "unsupported_grant_type"})
        claims = self._verified_claims(request.one("assertion"))
        if claims is None:
            return json_reply(
                400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            )
        problem = self._claim_problem(claims)
        if problem is not None:
            return json_reply(400, {"error": problem[0], "error_description": problem[1]})
        token = "ya29." + secrets.token_urlsafe(32)
        with self._guard:
            self._issued[token] = claims["iss"]
            self.last_claims = claims
        return json_reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _verified_claims(self, assertion: str) -> dict[str, Any] | None:
        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64decode(header_b64))
            claims = json.loads(_b64decode(claims_b64))
            signature = _b64decode(signature_b64)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if header.get("alg") != "RS256" or not isinstance(claims, dict):
            return None
        with self._guard:
            public = self._accounts.get(str(claims.get("iss")))
        if public is None:
            return None
        signed = f"{header_b64}.{claims_b64}".encode()
        try:
            public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return None
        return claims

    def _claim_problem(self, claims: dict[str, Any]) -> tuple[str, str] | None:
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if claims.get("aud") != self.token_uri:
            return "invalid_grant", "Invalid JWT: audience is not the token URI"
        if claims.get("scope") != GOOGLE_READ_ONLY_SCOPE:
            return "invalid_scope", "unexpected scope"
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "invalid_grant", "Invalid JWT: iat and exp are required"
        if iat > now + 60 or exp <= now or exp - iat > 3600:
            return "invalid_grant", "Invalid JWT: Token must be a short-lived token"
        return None


class GoogleRealmFixture(JsonHttpsServer):
    """GET /v2/token?service=&scope= with Basic oauth2accesstoken:<access token>."""

    def __init__(self, ca: TestCA, oauth: GoogleOAuthFixture, tokens: RegistryTokens) -> None:
        super().__init__(ca, "google-realm")
        self.oauth = oauth
        self.tokens = tokens

    @property
    def realm(self) -> str:
        return f"{self.url}/v2/token"

    def handle(self, request: Request) -> Reply:
        if (request.method, request.url_path) != ("GET", "/v2/token"):
            return json_reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        principal = self._principal(request)
        if principal is None:
            return UNAUTHORIZED
        token, _ = self.tokens.sign(principal, request.query.get("scope", []))
        return json_reply(
            200, {"token": token, "access_token": token, "expires_in": self.tokens.ttl}
        )

    def _principal(self, request: Request) -> str | None:
        pair = request.basic()
        if pair is None:
            return None
        user, password = pair
        if user == "oauth2accesstoken":
            return self.oauth.owner(password)
        return user if self.tokens.grants.check_password(user, password) else None


READER = "reader@pullbroker-test.iam.gserviceaccount.com"
OUTSIDER = "outsider@pullbroker-test.iam.gserviceaccount.com"
UNKNOWN = "deleted@pullbroker-test.iam.gserviceaccount.com"


@dataclass
class GoogleWorld:
    """A real registry whose realm is the Google fixtures, with service accounts and an image.

    reader may pull team/*; outsider is a valid account without grants; unknown's key is not
    known to the OAuth fixture (a deleted key). team/app:v1 is pushed.
    """

    oauth: GoogleOAuthFixture
    realm: GoogleRealmFixture
    registry: RealmRegistry
    keys: dict[str, str]
    app_digest: str

    def stop(self) -> None:
        self.registry.stop()
        self.realm.stop()
        self.oauth.stop()


def start_google_world(workdir: Path, ca: TestCA) -> GoogleWorld:
    """Start the OAuth and realm fixtures and a registry behind them; seed accounts and image."""
    oauth = GoogleOAuthFixture(ca)
    oauth.start()
    tokens = RegistryTokens(ca, service="gcr-fixture", issuer="gcr-fixture-issuer")
    realm = GoogleRealmFixture(ca, oauth, tokens)
    realm.start()
    registry = RealmRegistry(workdir / "registry", ca, realm=realm.realm, tokens=tokens)
    try:
        registry.start()
        keys = {}
        for email in (READER, OUTSIDER, UNKNOWN):
            keys[email], private = service_account_key(email, oauth.token_uri)
            if email != UNKNOWN:
                oauth.add_account(email, private)
        tokens.grants.add_user(READER, secrets.token_hex(16), {"team/*": ["pull"]})
        digest = seed_image(registry, tokens, workdir / "layouts")
    except BaseException:
        registry.stop()
        realm.stop()
        oauth.stop()
        raise
    return GoogleWorld(oauth, realm, registry, keys, digest)
