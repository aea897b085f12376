"""Fixtures standing in for Azure endpoints that cannot run on this machine.

AadFixture plays `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token` for the
client-credentials grant: unknown tenant -> 400 invalid_request (AADSTS90002), wrong client
id or secret -> 401 invalid_client (AADSTS7000215), scope other than ACR's `.default` -> 400
invalid_scope; otherwise an opaque access token.

AcrTokenFixture plays ACR's token service as github.com/Azure/acr docs/AAD-OAuth.md
describes it: `POST /oauth2/exchange` (grant_type=access_token, service, tenant,
access_token) -> an ACR refresh token; `POST /oauth2/token` (grant_type=refresh_token,
service, scope, refresh_token) -> `{"access_token"}`; `GET /oauth2/token?service=&scope=`
with Basic (admin user or ACR token) -> `{"access_token"}`. Like ACR it sends no
`expires_in`: the lifetime is the JWT's `exp`.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.harness.certs import TestCA
from tests.harness.https_server import Reply, Request, json_reply
from tests.integration.cloud.fixtures_https import (
    UNAUTHORIZED,
    JsonHttpsServer,
    RealmRegistry,
    RegistryTokens,
    seed_image,
)

ACR_SCOPE = "https://containerregistry.azure.net/.default"


class AadFixture(JsonHttpsServer):
    """The AAD v2.0 token endpoint, client-credentials grant only."""

    def __init__(self, ca: TestCA) -> None:
        super().__init__(ca, "aad")
        self._apps: dict[tuple[str, str], str] = {}
        self._issued: dict[str, tuple[str, str]] = {}
        self._guard = threading.Lock()

    def add_app(self, tenant: str, client_id: str, secret: str) -> None:
        with self._guard:
            self._apps[(tenant, client_id)] = secret

    def owner(self, access_token: str) -> tuple[str, str] | None:
        """(tenant, client id) of an access token this fixture issued."""
        with self._guard:
            return self._issued.get(access_token)

    def handle(self, request: Request) -> Reply:
        tenant, _, rest = request.url_path.strip("/").partition("/")
        if request.method != "POST" or rest != "oauth2/v2.0/token":
            return json_reply(404, {"error": "not_found"})
        with self._guard:
            tenants = {t for t, _ in self._apps}
            secret = self._apps.get((tenant, request.one("client_id")))
        if tenant not in tenants:
            return _aad_error(400, "invalid_request", "AADSTS90002: Tenant not found.")
        if request.one("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", "AADSTS70003")
        if request.one("scope") != ACR_SCOPE:
            return _aad_error(400, "invalid_scope", "AADSTS70011: The provided scope is invalid.")
        if secret is None or not secrets.compare_digest(secret, request.one("client_secret")):
            return _aad_error(401, "invalid_client", "AADSTS7000215: Invalid client secret.")
        token = "aad." + secrets.token_urlsafe(32)
        with self._guard:
            self._issued[token] = (tenant, request.one("client_id"))
        body = {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        return json_reply(200, body)


def _aad_error(status: int, error: str, description: str) -> Reply:
    return json_reply(status, {"error": error, "error_description": description})


class AcrTokenFixture(JsonHttpsServer):
    """ACR's /oauth2/exchange and /oauth2/token (see module docstring)."""

    def __init__(self, ca: TestCA, aad: AadFixture, tokens: RegistryTokens) -> None:
        super().__init__(ca, "acr-token")
        self.aad = aad
        self.tokens = tokens
        self._refresh: dict[str, str] = {}
        self._guard = threading.Lock()

    @property
    def realm(self) -> str:
        return f"{self.url}/oauth2/token"

    @staticmethod
    def principal_name(client_id: str) -> str:
        """The grants-table name of a service principal."""
        return f"sp:{client_id}"

    def handle(self, request: Request) -> Reply:
        route = (request.method, request.url_path)
        if route == ("POST", "/oauth2/exchange"):
            return self._exchange(request)
        if route == ("POST", "/oauth2/token"):
            return self._refresh_grant(request)
        if route == ("GET", "/oauth2/token"):
            return self._basic_grant(request)
        return json_reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})

    def _exchange(self, request: Request) -> Reply:
        if request.one("grant_type") != "access_token":
            return json_reply(400, {"errors": [{"code": "UNSUPPORTED", "message": "grant_type"}]})
        if request.one("service") != self.tokens.service:
            return json_reply(400, {"errors": [{"code": "INVALID_SERVICE", "message": "service"}]})
        owner = self.aad.owner(request.one("access_token"))
        if owner is None or owner[0] != request.one("tenant"):
            return UNAUTHORIZED
        refresh = secrets.token_urlsafe(32)
        with self._guard:
            self._refresh[refresh] = self.principal_name(owner[1])
        return json_reply(200, {"refresh_token": refresh})

    def _refresh_grant(self, request: Request) -> Reply:
        if request.one("grant_type") != "refresh_token":
            return json_reply(400, {"errors": [{"code": "UNSUPPORTED", "message": "grant_type"}]})
        with self._guard:
            principal = self._refresh.get(request.one("refresh_token"))
        if principal is None or request.one("service") != self.tokens.service:
            return UNAUTHORIZED
        token, _ = self.tokens.sign(principal, request.form.get("scope", []))
        return json_reply(200, {"access_token": token})

    def _basic_grant(self, request: Request) -> Reply:
        pair = request.basic()
        if pair is None or not self.tokens.grants.check_password(*pair):
            return UNAUTHORIZED
        token, _ = self.tokens.sign(pair[0], request.query.get("scope", []))
        return json_reply(200, {"access_token": token})


TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SERVICE = "cloudreg.azurecr.io"  # what the registry names itself in its challenge (ACR: its host)


@dataclass(frozen=True)
class Principal:
    """A service principal the AAD fixture knows."""

    tenant: str
    client_id: str
    secret: str


@dataclass
class AzureWorld:
    """A real registry whose realm is the ACR fixture, behind the AAD fixture.

    Basic users: `admin` (pull team/*), `app-token` (an ACR token scoped to team/app).
    Principals: `reader` (AcrPull on team/*), `outsider` (valid, no role on the registry).
    """

    aad: AadFixture
    acr: AcrTokenFixture
    registry: RealmRegistry
    passwords: dict[str, str]
    principals: dict[str, Principal]
    app_digest: str

    def stop(self) -> None:
        self.registry.stop()
        self.acr.stop()
        self.aad.stop()


def start_azure_world(workdir: Path, ca: TestCA) -> AzureWorld:
    """Start AAD and ACR fixtures and a registry behind them; seed users, principals, image."""
    aad = AadFixture(ca)
    aad.start()
    tokens = RegistryTokens(ca, service=SERVICE, issuer="acr-fixture-issuer")
    acr = AcrTokenFixture(ca, aad, tokens)
    acr.start()
    registry = RealmRegistry(workdir / "registry", ca, realm=acr.realm, tokens=tokens)
    try:
        registry.start()
        passwords = {"admin": secrets.token_hex(16), "app-token": secrets.token_hex(16)}
        tokens.grants.add_user("admin", passwords["admin"], {"team/*": ["pull"]})
        tokens.grants.add_user("app-token", passwords["app-token"], {"team/app": ["pull"]})
        principals = {
            name: Principal(TENANT, str(uuid.uuid4()), secrets.token_hex(16))
            for name in ("reader", "outsider")
        }
        for principal in principals.values():
            aad.add_app(principal.tenant, principal.client_id, principal.secret)
        reader = acr.principal_name(principals["reader"].client_id)
        tokens.grants.add_user(reader, secrets.token_hex(16), {"team/*": ["pull"]})
        digest = seed_image(registry, tokens, workdir / "layouts")
    except BaseException:
        registry.stop()
        acr.stop()
        aad.stop()
        raise
    return AzureWorld(aad, acr, registry, passwords, principals, digest)
