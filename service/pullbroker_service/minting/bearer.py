"""Minting for registries that speak the Docker token protocol (every non-cloud kind).

ping GET /v2/ -> the registry's own challenge -> GET realm?service=&scope=repository:NAME:pull
with the stored credential (or anonymously). The realm and service always come from the
registry's answer, never from a caller, and a well-known registry's realm must be on its
known token host. Registries that let anyone in (200 on /v2/) get an ANONYMOUS token;
Basic-only registries are refused unless the record allows pass-through, in which case the
credential itself is handed out as a BASIC token (marked, and audited by the issuer).
TLS trust is the record's registry_ca_pem or the system store, never the environment.
Every connection to the registry, its token realm or any redirect's target passes the
registry client's dial guard with the broker's dial policy (SSRF): the host is resolved
once, every address judged, and the checked address is the one connected to.

Telling failures apart: a token endpoint that refuses a scoped request is asked once more
without a scope; if it then accepts the credential, the credential is fine and only the
repository is off limits (GHCR answers 403 for both). A JWT token whose `access` claim grants
no pull is "not allowed" at once (token_claims.py). A 429, or an exhausted pull quota, starts
a back-off during which nothing is sent upstream (upstream_backoff.py).

Kinds (token_kinds.py) add advice and conventions through `for_kind`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.auth import BearerToken, fetch_token, ping
from pullbroker_client.registry.challenge import Challenge
from pullbroker_client.registry.dial import AsyncResolver, async_system_resolve
from pullbroker_client.registry.reference import check_repository
from pullbroker_client.registry.transport import Transport
from pullbroker_client.secret import Secret

from pullbroker_service.domain.errors import (
    BasicNotAllowed,
    BrokerError,
    CredentialRejected,
    InvalidArgument,
    InvalidRegistry,
    RateLimited,
    UpstreamProtocolError,
)
from pullbroker_service.domain.hosts import DialPolicy, check_dialable, expected_realm_hosts
from pullbroker_service.domain.model import (
    AuthKind,
    BasicCredential,
    Credential,
    MintedToken,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.minting.base import ProbeResult, pull_scope
from pullbroker_service.minting.probe_check import verify_token
from pullbroker_service.minting.token_claims import grants_pull
from pullbroker_service.minting.token_kinds import GENERIC, TokenKind
from pullbroker_service.minting.upstream import (
    domain_error,
    probe_outcome,
    record_label,
    refused_realm,
)
from pullbroker_service.minting.upstream_backoff import BackoffKey, UpstreamBackoff

ANONYMOUS_TTL = timedelta(minutes=5)
"""How long an ANONYMOUS or BASIC answer is reused: short, so a registry that starts asking
for auth, or a rotated pass-through credential, is noticed soon."""
BASIC_TTL = timedelta(minutes=5)
DEFAULT_DIAL_POLICY = DialPolicy()
"""What a minter built without a policy may dial: no loopback, no private addresses (SSRF).
bootstrap/main.py passes the configured policy; tests against local registries pass their own."""
PASSTHROUGH_MARK = "basic_passthrough"
"""`MintedToken.extra` key set on a BASIC token that is the stored credential itself."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def is_basic_passthrough(token: MintedToken) -> bool:
    """True when `token` is a long-lived credential handed out as is (audit every use)."""
    return token.auth_kind is AuthKind.BASIC and token.extra.get(PASSTHROUGH_MARK) == "true"


@dataclass
class _Seen:
    at: float
    challenges: list[Challenge]


class BearerMinter:
    """Minter for token-endpoint registries. One per broker; close it with `aclose()`."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        challenge_ttl: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
        backoff: UpstreamBackoff | None = None,
        dial_policy: DialPolicy | None = None,
        resolve: AsyncResolver = async_system_resolve,
    ) -> None:
        self._dial_policy = dial_policy or DEFAULT_DIAL_POLICY
        self._resolve = resolve
        self._timeout = timeout
        self._challenge_ttl = challenge_ttl
        self._monotonic = monotonic
        self._now = now
        self._backoff = backoff or UpstreamBackoff(monotonic=monotonic)
        self._transports: dict[str, Transport] = {}  # by CA bundle: connections are reused
        self._seen: dict[tuple[str, str, str], _Seen] = {}

    def for_kind(self, kind: TokenKind) -> KindMinter:
        """This minter speaking for one kind (its advice and conventions)."""
        return KindMinter(self, kind)

    async def mint(
        self,
        registry: RegistryRecord,
        credential: Credential | None,
        repository: str,
        *,
        kind: TokenKind = GENERIC,
    ) -> MintedToken:
        key = _backoff_key(registry, credential)  # also refuses a non-basic credential
        try:
            self._backoff.check(key, record_label(registry))
            transport = self._transport(registry)
            challenges = await self._challenges(registry, transport)
            token = await self._token(registry, credential, repository, transport, challenges)
        except registry_errors.RegistryError as exc:
            self._forget(registry)
            raise self._failure(exc, registry, repository, key, kind) from exc
        except BrokerError:
            self._forget(registry)
            raise
        _check_grant(token, registry, repository, key, kind)
        return token

    async def probe(
        self,
        registry: RegistryRecord,
        credential: Credential | None,
        repository: str,
        *,
        kind: TokenKind = GENERIC,
    ) -> ProbeResult:
        started = self._monotonic()
        scheme = "none"
        repository = kind.repository(repository)
        key = _backoff_key(registry, credential)
        try:
            try:
                self._backoff.check(key, record_label(registry))
                transport = self._transport(registry)
                challenges = await ping(transport, registry.url)  # fresh: never the cached one
                scheme = _scheme_of(challenges)
                token = await self._token(registry, credential, repository, transport, challenges)
                _check_grant(token, registry, repository, key, kind)
                message = await verify_token(
                    registry, transport, token, repository, lambda h: self._backoff.observe(key, h)
                )
            except registry_errors.RegistryError as exc:
                raise self._failure(exc, registry, repository, key, kind) from exc
        except InvalidArgument:
            raise
        except BrokerError as exc:
            return ProbeResult(probe_outcome(exc), str(exc), self._monotonic() - started, scheme)
        return ProbeResult("ok", message, self._monotonic() - started, scheme)

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()

    def _transport(self, record: RegistryRecord) -> Transport:
        transport = self._transports.get(record.registry_ca_pem)
        if transport is None:
            transport = Transport(
                ca_pem=record.registry_ca_pem or None,
                timeout=self._timeout,
                dial_policy=self._dial_policy,
                resolve=self._resolve,
            )
            self._transports[record.registry_ca_pem] = transport
        return transport

    async def _challenges(self, record: RegistryRecord, transport: Transport) -> list[Challenge]:
        key = (record.id, record.url, record.registry_ca_pem)
        seen = self._seen.get(key)
        if seen is not None and self._monotonic() - seen.at < self._challenge_ttl:
            return seen.challenges
        challenges = await ping(transport, record.url)
        # An open registry (200) is not remembered: if it starts asking for auth, the next
        # mint must see that rather than hand out ANONYMOUS tokens for minutes.
        if record.id and challenges:
            self._seen[key] = _Seen(self._monotonic(), challenges)
        return challenges

    def _forget(self, record: RegistryRecord) -> None:
        self._seen.pop((record.id, record.url, record.registry_ca_pem), None)

    def _failure(
        self,
        exc: registry_errors.RegistryError,
        record: RegistryRecord,
        repository: str,
        key: BackoffKey,
        kind: TokenKind,
    ) -> BrokerError:
        if isinstance(exc, registry_errors.RateLimited):
            wait = self._backoff.rate_limited(key, exc.retry_after)
            return RateLimited(
                f"registry {record.host} is rate limiting requests for registry "
                f"{record_label(record)} (429): pullbroker will not call it for {wait} s; "
                "retry after that",
                retry_after=wait,
            )
        anonymous = key[1] == ""
        return domain_error(exc, record, repository, anonymous=anonymous, hints=kind.hints)

    async def _token(
        self,
        record: RegistryRecord,
        credential: Credential | None,
        repository: str,
        transport: Transport,
        challenges: list[Challenge],
    ) -> MintedToken:
        if repository:
            check_repository(repository)  # nothing but a repository name reaches the scope
        scope = pull_scope(repository)
        now = self._now()
        if not challenges:
            return MintedToken(
                AuthKind.ANONYMOUS, "", Secret(""), scope, now, now + ANONYMOUS_TTL, repository
            )
        bearer = _find(challenges, "bearer")
        if bearer is not None:
            check_realm(bearer, record)
            username, password = _basic_pair(record, credential)
            try:
                token = await _fetch(transport, bearer, scope, username, password, record.url)
            except registry_errors.DialRefused as exc:
                raise refused_realm(exc, record) from exc
            issued, expires = token.issued_at.astimezone(UTC), token.expires_at.astimezone(UTC)
            return MintedToken(AuthKind.BEARER, "", token.token, scope, issued, expires, repository)
        if _find(challenges, "basic") is not None:
            return _basic_passthrough(record, credential, scope, repository, now)
        schemes = ", ".join(sorted({c.scheme for c in challenges}))
        raise UpstreamProtocolError(
            f"registry {record.host} asks for {schemes} auth, which pullbroker cannot mint "
            f"tokens for (registry {record_label(record)})"
        )


class KindMinter:
    """The shared BearerMinter with one kind's conventions (a `Minter`)."""

    def __init__(self, bearer: BearerMinter, kind: TokenKind) -> None:
        self.bearer = bearer
        self.kind = kind

    async def mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        return await self.bearer.mint(registry, credential, repository, kind=self.kind)

    async def probe(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> ProbeResult:
        return await self.bearer.probe(registry, credential, repository, kind=self.kind)


async def _fetch(
    transport: Transport,
    challenge: Challenge,
    scope: str,
    username: str | None,
    password: Secret | None,
    registry_url: str,
) -> BearerToken:
    try:
        return await fetch_token(
            transport, challenge, scope, username, password, registry_url=registry_url
        )
    except registry_errors.CredentialRejected as rejected:
        if not scope:
            raise
        try:
            await fetch_token(
                transport, challenge, "", username, password, registry_url=registry_url
            )
        except registry_errors.CredentialRejected:
            raise rejected from None
        raise registry_errors.NotAllowed(
            "the token endpoint accepts the credential but refuses a pull token for the repository"
        ) from rejected


def _backoff_key(record: RegistryRecord, credential: Credential | None) -> BackoffKey:
    username, _ = _basic_pair(record, credential)
    return record.host, username or ""


def _check_grant(
    token: MintedToken, record: RegistryRecord, repository: str, key: BackoffKey, kind: TokenKind
) -> None:
    """A token that says it grants no pull is refused here, not at the node's pull."""
    if token.auth_kind is not AuthKind.BEARER or not repository:
        return
    if grants_pull(token.token.reveal(), repository) is False:
        refused = registry_errors.NotAllowed(f"the token grants no pull on {repository}")
        raise domain_error(refused, record, repository, anonymous=key[1] == "", hints=kind.hints)


def _find(challenges: list[Challenge], scheme: str) -> Challenge | None:
    return next((c for c in challenges if c.scheme == scheme), None)


def _scheme_of(challenges: list[Challenge]) -> str:
    for scheme in ("bearer", "basic"):
        if _find(challenges, scheme) is not None:
            return scheme
    return challenges[0].scheme if challenges else "none"


def _basic_pair(
    record: RegistryRecord, credential: Credential | None
) -> tuple[str | None, Secret | None]:
    if credential is None or record.kind is RegistryKind.PUBLIC:
        return None, None
    if isinstance(credential, BasicCredential):
        return credential.username, credential.password
    raise InvalidRegistry(
        f"registry {record_label(record)} holds a {type(credential).__name__}, but its "
        "registry speaks username/password token auth: rotate it to a basic credential"
    )


def check_realm(challenge: Challenge, record: RegistryRecord) -> None:
    """Refuse a token realm the broker must not send the credential to."""
    host = urlsplit(challenge.realm or "").hostname
    if not host:
        return  # fetch_token refuses a missing or malformed realm with a clear message
    host = host.lower()
    try:
        check_dialable(host, "token realm")
    except InvalidRegistry as exc:
        raise UpstreamProtocolError(
            f"registry {record.host} names a token realm the broker must not dial: {exc}"
        ) from exc
    expected = expected_realm_hosts(record.host)
    if expected is not None and host not in expected:
        raise UpstreamProtocolError(
            f"registry {record.host} names token realm host {host}, but its token service "
            f"is {', '.join(sorted(expected))}: refusing to send the credential elsewhere"
        )


def _basic_passthrough(
    record: RegistryRecord,
    credential: Credential | None,
    scope: str,
    repository: str,
    now: datetime,
) -> MintedToken:
    name = record_label(record)
    if not record.allow_basic_passthrough:
        raise BasicNotAllowed(
            f"registry {record.host} offers only Basic auth, which cannot be limited to one "
            f"repository; registry {name} does not allow Basic pass-through (set "
            "allow_basic_passthrough to hand nodes the credential itself; every use is audited)"
        )
    if not isinstance(credential, BasicCredential):
        raise CredentialRejected(
            f"registry {record.host} requires a username and password, but registry {name} has none"
        )
    return MintedToken(
        AuthKind.BASIC,
        credential.username,
        credential.password,
        scope,
        now,
        now + BASIC_TTL,
        repository,
        extra={PASSTHROUGH_MARK: "true"},
    )
