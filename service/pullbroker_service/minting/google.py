"""Google Container Registry and Artifact Registry: a service-account key -> a scoped token.

1. A JWT assertion signed RS256 with the key's private key: iss = client_email, scope =
   `devstorage.read_only`, aud = the key's token_uri, exp = iat + 5 minutes (Google allows 1 h).
2. POST token_uri `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=...`
   -> an OAuth2 access token (about 1 hour, for everything the service account may read).
3. The registry's own token endpoint (the realm of its Bearer challenge, which must be on the
   registry's host) with Basic `oauth2accesstoken:<access token>` for `repository:NAME:pull`
   -> a registry token for that one repository. Only this token leaves the broker.

Scope: `https://www.googleapis.com/auth/devstorage.read_only` is the read-only scope Google
documents for pulling from Container Registry and from Artifact Registry alike ("the read-only
access scope for Cloud Storage ... limits the VM instance service account to downloading
artifacts", cloud.google.com/artifact-registry/docs/integrate-compute); `cloud-platform`
would let the access token push and administer.

Logins (`login`, for container runtimes: minting/runtime_logins.py): the access token of step 2 with
username `oauth2accesstoken`, living as long as Google says (`expires_in`), which the
registry's realm takes as a Basic password - not the registry token of step 3.

SSRF: the token_uri comes from the key file, so a crafted key could name any host. Only the
hosts in `GoogleConfig.allowed_oauth_hosts` (Google's two token hosts unless a test or
deployment widens it) are ever dialled, and a realm off the registry's host is refused.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.auth import fetch_token, token_lifetime
from pullbroker_client.secret import Secret

from pullbroker_service.domain.cloud_kinds import (
    GOOGLE_OAUTH_HOSTS,
    GoogleKeyInfo,
    check_google_key,
)
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
    Credential,
    GoogleServiceAccount,
    MintedToken,
    RegistryRecord,
)
from pullbroker_service.minting.base import ProbeResult, pull_scope
from pullbroker_service.minting.cloud_http import (
    CloudHttp,
    OAuthAnswer,
    checked_repository,
    oauth_error_code,
)
from pullbroker_service.minting.runtime_logins import MintedLogin
from pullbroker_service.minting.upstream import domain_error, probe_outcome, record_label

READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REGISTRY_USERNAME = "oauth2accesstoken"
_MAX_ASSERTION_SECONDS = 3600
MAX_ACCESS_TOKEN_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class GoogleConfig:
    """How the Google minter reaches Google's OAuth endpoint."""

    allowed_oauth_hosts: frozenset[str] = field(default=GOOGLE_OAUTH_HOSTS)
    """Hosts (`host` or `host:port`) a key's token_uri may name; widen only for tests."""
    oauth_ca_pem: str | None = None
    """CA bundle trusted for the OAuth endpoint; None means the system store."""
    assertion_seconds: int = 300
    """Lifetime of the signed assertion (Google accepts at most 3600)."""
    timeout_seconds: float = 10.0


class GoogleMinter:
    """Minter for kinds gcr and gar. One per broker; close it with `aclose()`."""

    def __init__(
        self, config: GoogleConfig | None = None, *, dial_policy: DialPolicy | None = None
    ) -> None:
        """`dial_policy`: which addresses the registry and OAuth hosts may resolve to
        (default: public addresses only, as for every minter)."""
        self._config = config or GoogleConfig()
        if not 0 < self._config.assertion_seconds <= _MAX_ASSERTION_SECONDS:
            raise ValueError("assertion_seconds must be within (0, 3600]")
        self._http = CloudHttp(self._config.timeout_seconds, dial_policy or DialPolicy())

    async def mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        """A registry token allowing pull of `repository` only."""
        try:
            return await self._mint(registry, credential, repository)
        except registry_errors.RegistryError as exc:
            raise _registry_error(exc, registry, repository) from exc

    async def probe(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> ProbeResult:
        """Sign, get an access token, get a registry token, and use it once on `repository`."""
        started = time.monotonic()
        try:
            try:
                token = await self._mint(registry, credential, repository)
                message = await self._http.verify_pull(registry, token, repository)
            except registry_errors.RegistryError as exc:
                raise _registry_error(exc, registry, repository) from exc
        except InvalidArgument:
            raise
        except BrokerError as exc:
            return ProbeResult(probe_outcome(exc), str(exc), time.monotonic() - started, "bearer")
        return ProbeResult("ok", message, time.monotonic() - started, "bearer")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def login(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedLogin:
        """The service account's OAuth2 access token as a login (`oauth2accesstoken`).

        What gcloud's credential helper gives docker: the registry's realm trades it for
        repository tokens itself. It reads whatever the account may read (with the read-only
        scope) until it expires (about an hour), not only `repository`.
        """
        checked_repository(repository)
        info, key = _service_account(registry, credential, self._config)
        issued_at = datetime.now(UTC)
        try:
            access_token, lifetime = await self._access_token(registry, info, key)
        except registry_errors.RegistryError as exc:
            raise _registry_error(exc, registry, repository) from exc
        return MintedLogin(
            AuthKind.BASIC,
            REGISTRY_USERNAME,
            access_token,
            "",
            issued_at,
            issued_at + lifetime,
            repository,
        )

    async def _mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        scope = pull_scope(checked_repository(repository))
        info, key = _service_account(registry, credential, self._config)
        access_token, _ = await self._access_token(registry, info, key)
        challenge = await self._http.bearer_challenge(registry)
        transport = self._http.registry_transport(registry)
        token = await fetch_token(
            transport, challenge, scope, REGISTRY_USERNAME, access_token, registry_url=registry.url
        )
        return MintedToken(
            AuthKind.BEARER,
            "",
            token.token,
            scope,
            token.issued_at.astimezone(UTC),
            token.expires_at.astimezone(UTC),
            repository,
        )

    async def _access_token(
        self, registry: RegistryRecord, info: GoogleKeyInfo, key: rsa.RSAPrivateKey
    ) -> tuple[Secret, timedelta]:
        assertion = service_account_assertion(
            key, info, READ_ONLY_SCOPE, int(time.time()), self._config.assertion_seconds
        )
        answer = await self._http.post_form(
            info.token_uri,
            {"grant_type": JWT_BEARER_GRANT, "assertion": assertion.reveal()},
            ca_pem=self._config.oauth_ca_pem,
        )
        if answer.status != 200:
            raise _oauth_error(answer, registry, info)
        value = answer.document.get("access_token")
        if not isinstance(value, str) or not value:
            raise UpstreamProtocolError(
                f"Google's token endpoint {answer.host} answered without an access token"
            )
        return Secret(value), _lifetime(answer.document.get("expires_in"))


def service_account_assertion(
    key: rsa.RSAPrivateKey, info: GoogleKeyInfo, scope: str, now: int, lifetime: int
) -> Secret:
    """The signed JWT (RS256) a service account trades for an access token."""
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if info.private_key_id:
        header["kid"] = info.private_key_id
    claims = {
        "iss": info.client_email,
        "scope": scope,
        "aud": info.token_uri,
        "iat": now,
        "exp": now + lifetime,
    }
    signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return Secret(f"{signing_input}.{_b64url(signature)}")


def _lifetime(expires_in: object) -> timedelta:
    """The access token's `expires_in`, within (0, 1 h]; the registry spec's default when
    Google did not say (shorter is safe: the login is asked for again)."""
    try:
        return token_lifetime(expires_in, maximum=MAX_ACCESS_TOKEN_LIFETIME.total_seconds())
    except ValueError:
        raise UpstreamProtocolError(
            "Google's token endpoint answered an expires_in that is not a number of seconds"
        ) from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _service_account(
    registry: RegistryRecord, credential: Credential | None, config: GoogleConfig
) -> tuple[GoogleKeyInfo, rsa.RSAPrivateKey]:
    if not isinstance(credential, GoogleServiceAccount):
        raise InvalidRegistry(
            f"registry {record_label(registry)} ({registry.kind}) needs a service-account "
            "JSON key: update it with the key file"
        )
    info = check_google_key(credential, config.allowed_oauth_hosts)
    pem = json.loads(credential.key_json.reveal())["private_key"]
    key = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)  # check_google_key refused anything else
    return info, key


def _oauth_error(answer: OAuthAnswer, registry: RegistryRecord, info: GoogleKeyInfo) -> BrokerError:
    code = oauth_error_code(answer)
    name, who = record_label(registry), info.client_email
    if (answer.status in (400, 401) and code in _REJECTED_CODES) or answer.status == 401:
        return CredentialRejected(
            f"Google refused the service-account key of registry {name} ({who}, {code}): "
            "the key may be deleted or disabled, or the broker's clock may be off"
        )
    if answer.status == 403:
        return PullNotAllowed(
            f"Google denied a read-only token to {who} (registry {name}): check the "
            "service account is enabled and allowed to read the registry"
        )
    if answer.status == 429:
        return RateLimited(
            f"Google's token endpoint is rate limiting registry {name}: retry later",
            answer.retry_after,
        )
    if answer.status >= 500:
        return RegistryUnreachable(
            f"Google's token endpoint {answer.host} is failing ({answer.status}): retry later"
        )
    return UpstreamProtocolError(
        f"Google's token endpoint {answer.host} answered {answer.status} ({code}) for "
        f"registry {name}"
    )


_REJECTED_CODES = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


def _registry_error(
    exc: registry_errors.RegistryError, registry: RegistryRecord, repository: str
) -> BrokerError:
    error = domain_error(exc, registry, repository, anonymous=False)
    if isinstance(error, CredentialRejected):
        return CredentialRejected(
            f"registry {registry.host} refused the service account's access token (registry "
            f"{record_label(registry)}): grant it roles/artifactregistry.reader on the "
            "repository (gcr.io: storage.objectViewer on the bucket)"
        )
    if isinstance(error, PullNotAllowed):
        return PullNotAllowed(
            f"the service account of registry {record_label(registry)} may not pull "
            f"{repository} from {registry.host}: grant it roles/artifactregistry.reader"
        )
    return error
