"""Minting for registries that speak the Docker token protocol (generic, public, ...).

ping GET /v2/ -> the registry's own challenge -> GET realm?service=&scope=repository:NAME:pull
with the stored credential (or anonymously). The realm and service always come from the
registry's answer, never from a caller. Registries that let anyone in (200 on /v2/) get an
ANONYMOUS token; Basic-only registries are refused unless the record allows pass-through, in
which case the credential itself is handed out as a BASIC token (and audited by the issuer).
TLS trust is the record's registry_ca_pem or the system store, never the environment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from pullbroker_client.registry import errors as client
from pullbroker_client.registry.auth import basic_authorization, fetch_token, ping
from pullbroker_client.registry.challenge import Challenge
from pullbroker_client.registry.errors import error_for_response
from pullbroker_client.registry.reference import check_repository
from pullbroker_client.registry.transport import Transport
from pullbroker_client.secret import Secret

from pullbroker_service.domain.errors import (
    BasicNotAllowed,
    BrokerError,
    CredentialRejected,
    InvalidArgument,
    InvalidRegistry,
    UpstreamProtocolError,
)
from pullbroker_service.domain.hosts import check_dialable
from pullbroker_service.domain.model import (
    AuthKind,
    BasicCredential,
    Credential,
    MintedToken,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.minting.base import ProbeResult, pull_scope
from pullbroker_service.minting.upstream import domain_error, probe_outcome, record_label

ANONYMOUS_TTL = timedelta(minutes=5)
"""How long an ANONYMOUS or BASIC answer is reused: short, so a registry that starts asking
for auth, or a rotated pass-through credential, is noticed soon."""
BASIC_TTL = timedelta(minutes=5)


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    ) -> None:
        self._timeout = timeout
        self._challenge_ttl = challenge_ttl
        self._monotonic = monotonic
        self._now = now
        self._transports: dict[str, Transport] = {}  # by CA bundle: connections are reused
        self._seen: dict[tuple[str, str, str], _Seen] = {}

    async def mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        anonymous = _basic_pair(registry, credential)[0] is None
        try:
            transport = self._transport(registry)
            challenges = await self._challenges(registry, transport)
            return await self._token(registry, credential, repository, transport, challenges)
        except client.RegistryError as exc:
            self._forget(registry)
            raise domain_error(exc, registry, repository, anonymous=anonymous) from exc
        except BrokerError:
            self._forget(registry)
            raise

    async def probe(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> ProbeResult:
        started = self._monotonic()
        scheme = "none"
        anonymous = _basic_pair(registry, credential)[0] is None
        try:
            try:
                transport = self._transport(registry)
                challenges = await ping(transport, registry.url)  # fresh: never the cached one
                scheme = _scheme_of(challenges)
                token = await self._token(registry, credential, repository, transport, challenges)
                message = await self._verify(registry, transport, token, repository)
            except client.RegistryError as exc:
                raise domain_error(exc, registry, repository, anonymous=anonymous) from exc
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
            transport = Transport(ca_pem=record.registry_ca_pem or None, timeout=self._timeout)
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
            _check_realm(bearer, record)
            username, password = _basic_pair(record, credential)
            token = await fetch_token(
                transport, bearer, scope, username, password, registry_url=record.url
            )
            issued, expires = token.issued_at.astimezone(UTC), token.expires_at.astimezone(UTC)
            return MintedToken(AuthKind.BEARER, "", token.token, scope, issued, expires, repository)
        if _find(challenges, "basic") is not None:
            return _basic_passthrough(record, credential, scope, repository, now)
        schemes = ", ".join(sorted({c.scheme for c in challenges}))
        raise UpstreamProtocolError(
            f"registry {record.host} asks for {schemes} auth, which pullbroker cannot mint "
            f"tokens for (registry {record_label(record)})"
        )

    async def _verify(
        self, record: RegistryRecord, transport: Transport, token: MintedToken, repository: str
    ) -> str:
        """Use the token once, so a probe reports what a pull would meet."""
        authorization = _authorization(token)
        if not repository:
            if token.auth_kind is AuthKind.BASIC:
                await _expect_ok(transport, f"{record.url}/v2/", authorization, "GET /v2/")
            return f"registry {record.host} accepted the credential ({token.auth_kind.value})"
        url = f"{record.url}/v2/{repository}/tags/list"
        response = await transport.request(
            "GET", url, params={"n": "1"}, authorization=authorization, limit=1024 * 1024
        )
        if response.status_code == 200:
            return f"registry {record.host} accepted the credential and allows pull on {repository}"
        if response.status_code == 404:
            return (
                f"registry {record.host} accepted the credential; repository {repository} "
                "does not exist yet or has no tags"
            )
        if response.status_code in (401, 403) and token.auth_kind is AuthKind.BEARER:
            raise client.NotAllowed(f"registry {record.host} refused pull on {repository}")
        raise error_for_response(
            response.status_code,
            response.content,
            host=response.host,
            subject=f"the tags of {repository}",
            retry_after=response.retry_after,
        )


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


def _check_realm(challenge: Challenge, record: RegistryRecord) -> None:
    host = urlsplit(challenge.realm or "").hostname
    if not host:
        return  # fetch_token refuses a missing or malformed realm with a clear message
    try:
        check_dialable(host.lower(), "token realm")
    except InvalidRegistry as exc:
        raise UpstreamProtocolError(
            f"registry {record.host} names a token realm the broker must not dial: {exc}"
        ) from exc


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
    )


def _authorization(token: MintedToken) -> Secret | None:
    if token.auth_kind is AuthKind.BEARER:
        return Secret(f"Bearer {token.token.reveal()}")
    if token.auth_kind is AuthKind.BASIC:
        return basic_authorization(token.username, token.token)
    return None


async def _expect_ok(
    transport: Transport, url: str, authorization: Secret | None, what: str
) -> None:
    response = await transport.request("GET", url, authorization=authorization, limit=64 * 1024)
    if response.status_code != 200:
        raise error_for_response(
            response.status_code, response.content, host=response.host, subject=what
        )
