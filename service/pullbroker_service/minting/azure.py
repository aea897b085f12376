"""Azure Container Registry: a username/password or a service principal -> a scoped token.

Both follow ACR's documented protocol (github.com/Azure/acr, docs/AAD-OAuth.md). The token
endpoints are the registry's own: the realm of its Bearer challenge, which must be on the
registry's host (`https://<name>.azurecr.io/oauth2/token`), and `/oauth2/exchange` beside it.

- Username/password (the admin user, or an ACR token, which may itself be limited to some
  repositories): `GET <realm>?service=<host>&scope=repository:NAME:pull` with Basic auth
  -> `{"access_token"}` for that repository.
- Service principal (tenant, client id, client secret):
  1. AAD client credentials: `POST https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`
     with scope `https://containerregistry.azure.net/.default` -> an AAD access token whose
     audience is ACR alone (not Azure Resource Manager).
  2. `POST /oauth2/exchange` grant_type=access_token, service, tenant, access_token -> an ACR
     refresh token (carrying whatever the principal's roles allow on the registry).
  3. `POST /oauth2/token` grant_type=refresh_token, service, scope, refresh_token -> an ACR
     access token for `repository:NAME:pull` only. Only this token leaves the broker.

Logins (`login`, for container runtimes: minting/runtime_logins.py): a service principal's refresh
token of step 2, with username 00000000-0000-0000-0000-000000000000, as an identity token
(docker's `identitytoken`): runtimes run step 3 themselves against the realm. A
username/password is long-lived: it is a login only as an audited Basic pass-through.

ACR answers access tokens without `expires_in`; they are JWTs, so their `exp` claim (read, not
verified: it only decides how long we reuse the token) gives the lifetime, capped at 3 hours.
SSRF: the AAD authority comes from configuration, its host must be in the allowed set, and the
tenant (which goes into its path) is a GUID or a domain name, checked before any request.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from pullbroker_client.jsonlimits import loads_bounded
from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.auth import (
    DEFAULT_EXPIRES_IN,
    TOKEN_BODY_LIMIT,
    basic_authorization,
    token_lifetime,
)
from pullbroker_client.registry.challenge import Challenge
from pullbroker_client.registry.transport import Response
from pullbroker_client.secret import Secret

from pullbroker_service.domain.cloud_kinds import check_azure_credential
from pullbroker_service.domain.errors import (
    BrokerError,
    CredentialRejected,
    InvalidArgument,
    InvalidRegistry,
    PullNotAllowed,
    RateLimited,
    RegistryUnreachable,
    UpstreamProtocolError,
)
from pullbroker_service.domain.hosts import DialPolicy
from pullbroker_service.domain.model import (
    AuthKind,
    AzureServicePrincipal,
    BasicCredential,
    Credential,
    MintedToken,
    RegistryRecord,
)
from pullbroker_service.minting.base import ProbeResult, pull_scope
from pullbroker_service.minting.bearer import BASIC_TTL
from pullbroker_service.minting.cloud_http import (
    CloudHttp,
    OAuthAnswer,
    checked_repository,
    oauth_error_code,
)
from pullbroker_service.minting.runtime_logins import (
    ACR_REFRESH_USERNAME,
    MintedLogin,
    no_login,
    passthrough_login,
)
from pullbroker_service.minting.upstream import domain_error, probe_outcome, record_label

AAD_AUTHORITY = "https://login.microsoftonline.com"
ACR_AAD_SCOPE = "https://containerregistry.azure.net/.default"
MAX_TOKEN_LIFETIME = timedelta(hours=3)


@dataclass(frozen=True)
class AzureConfig:
    """How the ACR minter reaches Azure AD (Entra ID)."""

    authority: str = AAD_AUTHORITY
    """The AAD authority the service-principal flow posts to; only tests point it elsewhere."""
    allowed_authority_hosts: frozenset[str] = field(
        default=frozenset({"login.microsoftonline.com"})
    )
    """Hosts (`host` or `host:port`) `authority` may name."""
    authority_ca_pem: str | None = None
    """CA bundle trusted for the authority; None means the system store."""
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class _Step:
    """Which call an OAuth answer came from, for the error message."""

    what: str
    rejected_hint: str


_AAD = _Step(
    "Azure AD",
    "check the tenant id, client id and client secret (secrets expire), and that the app "
    "registration still exists",
)
_EXCHANGE = _Step(
    "ACR /oauth2/exchange",
    "the registry did not accept the service principal's AAD token: check the tenant is the "
    "registry's",
)
_TOKEN = _Step(
    "ACR /oauth2/token",
    "check the admin user or ACR token password (ACR tokens must be enabled), or the "
    "principal's role assignment (AcrPull) on the registry",
)


class AzureMinter:
    """Minter for kind acr. One per broker; close it with `aclose()`."""

    def __init__(
        self, config: AzureConfig | None = None, *, dial_policy: DialPolicy | None = None
    ) -> None:
        """`dial_policy`: which addresses the registry and AAD hosts may resolve to
        (default: public addresses only, as for every minter)."""
        self._config = config or AzureConfig()
        authority = urlsplit(self._config.authority)
        if authority.scheme != "https" or (
            authority.netloc not in self._config.allowed_authority_hosts
            and authority.hostname not in self._config.allowed_authority_hosts
        ):
            raise ValueError("the AAD authority must be https on an allowed host")
        self._http = CloudHttp(self._config.timeout_seconds, dial_policy or DialPolicy())

    async def mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        """An ACR access token allowing pull of `repository` only."""
        try:
            return await self._mint(registry, credential, repository)
        except registry_errors.RegistryError as exc:
            raise domain_error(exc, registry, repository, anonymous=False) from exc

    async def probe(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> ProbeResult:
        """Run the whole flow, then use the token once on `repository`."""
        started = time.monotonic()
        try:
            try:
                token = await self._mint(registry, credential, repository)
                message = await self._http.verify_pull(registry, token, repository)
            except registry_errors.RegistryError as exc:
                raise domain_error(exc, registry, repository, anonymous=False) from exc
        except InvalidArgument:
            raise
        except BrokerError as exc:
            return ProbeResult(probe_outcome(exc), str(exc), time.monotonic() - started, "bearer")
        return ProbeResult("ok", message, time.monotonic() - started, "bearer")

    async def login(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedLogin:
        """A service principal's ACR refresh token (an identity token), or, for a
        username/password, that long-lived credential as an audited pass-through."""
        checked_repository(repository)
        if credential is None:
            raise InvalidRegistry(f"registry {record_label(registry)} (acr) has no credential")
        check_azure_credential(credential)
        if isinstance(credential, BasicCredential):
            return _passthrough(registry, credential, repository)
        assert isinstance(credential, AzureServicePrincipal)  # check_azure_credential
        try:
            challenge = await self._http.bearer_challenge(registry)
            issued_at = datetime.now(UTC)
            refresh = await self._refresh_token(registry, challenge, credential)
        except registry_errors.RegistryError as exc:
            raise domain_error(exc, registry, repository, anonymous=False) from exc
        return MintedLogin(
            AuthKind.BASIC,
            ACR_REFRESH_USERNAME,
            refresh,
            "",
            issued_at,
            issued_at + _lifetime(refresh),
            repository,
            identity_token=True,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        scope = pull_scope(checked_repository(repository))
        if credential is None:
            raise InvalidRegistry(f"registry {record_label(registry)} (acr) has no credential")
        check_azure_credential(credential)
        challenge = await self._http.bearer_challenge(registry)
        issued_at = datetime.now(UTC)
        if isinstance(credential, BasicCredential):
            token = await self._basic_token(registry, challenge, credential, scope)
        else:
            assert isinstance(credential, AzureServicePrincipal)  # check_azure_credential
            token = await self._principal_token(registry, challenge, credential, scope)
        expires_at = issued_at + _lifetime(token)
        return MintedToken(AuthKind.BEARER, "", token, scope, issued_at, expires_at, repository)

    async def _basic_token(
        self, registry: RegistryRecord, challenge: Challenge, cred: BasicCredential, scope: str
    ) -> Secret:
        params = {"service": challenge.service or registry.host}
        if scope:
            params["scope"] = scope
        response = await self._http.registry_transport(registry).request(
            "GET",
            challenge.realm or "",
            params=params,
            authorization=basic_authorization(cred.username, cred.password),
            limit=TOKEN_BODY_LIMIT,
        )
        return _access_token(_answer(response), registry, _TOKEN)

    async def _principal_token(
        self,
        registry: RegistryRecord,
        challenge: Challenge,
        cred: AzureServicePrincipal,
        scope: str,
    ) -> Secret:
        refresh_token = await self._refresh_token(registry, challenge, cred)
        service = challenge.service or registry.host
        form = {"grant_type": "refresh_token", "service": service, "scope": scope}
        form["refresh_token"] = refresh_token.reveal()
        ca_pem = registry.registry_ca_pem or None
        answer = await self._http.post_form(challenge.realm or "", form, ca_pem=ca_pem)
        return _access_token(answer, registry, _TOKEN)

    async def _refresh_token(
        self, registry: RegistryRecord, challenge: Challenge, cred: AzureServicePrincipal
    ) -> Secret:
        """Steps 1 and 2: the principal's AAD token exchanged for an ACR refresh token."""
        aad_token = await self._aad_token(registry, cred)
        realm = urlsplit(challenge.realm or "")
        exchanged = await self._http.post_form(
            f"{realm.scheme}://{realm.netloc}/oauth2/exchange",
            {
                "grant_type": "access_token",
                "service": challenge.service or registry.host,
                "tenant": cred.tenant_id,
                "access_token": aad_token.reveal(),
            },
            ca_pem=registry.registry_ca_pem or None,
        )
        return _field(exchanged, "refresh_token", registry, _EXCHANGE)

    async def _aad_token(self, registry: RegistryRecord, cred: AzureServicePrincipal) -> Secret:
        answer = await self._http.post_form(
            f"{self._config.authority}/{cred.tenant_id}/oauth2/v2.0/token",
            {
                "grant_type": "client_credentials",
                "client_id": cred.client_id,
                "client_secret": cred.client_secret.reveal(),
                "scope": ACR_AAD_SCOPE,
            },
            ca_pem=self._config.authority_ca_pem,
        )
        return _field(answer, "access_token", registry, _AAD)


def _passthrough(registry: RegistryRecord, cred: BasicCredential, repository: str) -> MintedLogin:
    """An admin user's or ACR token's password: long-lived, so a login only as pass-through."""
    if not registry.allow_basic_passthrough:
        raise no_login(
            registry,
            f"{registry.host}/{repository}",
            "holds a long-lived username/password and does not allow Basic pass-through (a "
            "service principal gets short-lived logins), and issues only repository-scoped "
            "tokens",
        )
    now = datetime.now(UTC)
    token = MintedToken(
        AuthKind.BASIC, cred.username, cred.password, "", now, now + BASIC_TTL, repository
    )
    return passthrough_login(token)


def _answer(response: Response) -> OAuthAnswer:
    try:
        document = loads_bounded(response.content)
    except ValueError:
        document = {}
    return OAuthAnswer(
        response.status_code,
        document if isinstance(document, dict) else {},
        response.host,
        response.retry_after,
    )


def _access_token(answer: OAuthAnswer, registry: RegistryRecord, step: _Step) -> Secret:
    return _field(answer, "access_token", registry, step)


def _field(answer: OAuthAnswer, name: str, registry: RegistryRecord, step: _Step) -> Secret:
    if answer.status != 200:
        raise _step_error(answer, registry, step)
    value = answer.document.get(name)
    if not isinstance(value, str) or not value:
        raise UpstreamProtocolError(f"{step.what} at {answer.host} answered 200 without {name}")
    return Secret(value)


def _step_error(answer: OAuthAnswer, registry: RegistryRecord, step: _Step) -> BrokerError:
    code, name = oauth_error_code(answer), record_label(registry)
    where = f"{step.what} at {answer.host}"
    if answer.status in (400, 401) and (answer.status == 401 or code in _REJECTED_CODES):
        return CredentialRejected(
            f"{where} rejected the credential of registry {name} ({code}): {step.rejected_hint}"
        )
    if answer.status == 403:
        return PullNotAllowed(
            f"{where} denied registry {name} ({code}): grant the principal or token pull "
            "(AcrPull, or a scope map with content/read) on the repository"
        )
    if answer.status == 429:
        return RateLimited(
            f"{where} is rate limiting registry {name}: retry later", answer.retry_after
        )
    if answer.status >= 500:
        return RegistryUnreachable(f"{where} is failing ({answer.status}): retry later")
    return UpstreamProtocolError(f"{where} answered {answer.status} ({code}) for registry {name}")


_REJECTED_CODES = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_grant", "invalid_request", "UNAUTHORIZED"}
)


def _lifetime(token: Secret) -> timedelta:
    """The JWT's own lifetime (exp - now), within (0, 3 h]; the spec's default otherwise."""
    parts = token.reveal().split(".")
    default = timedelta(seconds=DEFAULT_EXPIRES_IN)
    if len(parts) != 3:
        return default
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = loads_bounded(payload)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return default
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return default
    try:
        remaining: float = float(exp) - time.time()
    except OverflowError:  # an integer of thousands of digits
        remaining = math.inf
    try:
        return token_lifetime(remaining, maximum=MAX_TOKEN_LIFETIME.total_seconds())
    except ValueError:  # NaN
        return default
