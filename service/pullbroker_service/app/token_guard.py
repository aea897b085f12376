"""The token and login use cases behind the per-identity rate limit, every issue audited.

Decorators around `TokenIssuer` (app/tokens.py) and `LoginIssuer` (app/logins.py), so the
hot path's own module stays as it is: the limit is checked before any work (a refused call
costs a dict lookup), and each call, issued or refused, becomes one audit event with the
scope and, for a Basic pass-through, a reason saying the long-lived credential itself was
handed out. The cost on the hot path is one extra await and one list append (the sink
writes in batches).

A registry login is audited as a token issue too (same action, same limit bucket: both hand
a node something to pull with), its reason saying it is a login and how far it reaches.
"""

from __future__ import annotations

from typing import Protocol

from pullbroker_client.registry.errors import InvalidReference as ClientInvalidReference
from pullbroker_client.registry.reference import parse_reference

from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.ratelimit import LimitKind, RateLimiter
from pullbroker_service.domain.audit import Action, Outcome, outcome_for
from pullbroker_service.domain.errors import BrokerError
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import MintedToken, RegistryRecord
from pullbroker_service.minting.bearer import is_basic_passthrough
from pullbroker_service.minting.logins import MintedLogin, scope_of

PASSTHROUGH_REASON = "basic pass-through: the registry's stored credential was handed out"
LOGIN_REASON = "registry login for container runtimes"
UNSCOPED_LOGIN_REASON = (
    f"{LOGIN_REASON}: allows whatever the registry's stored identity may pull until it expires"
)


class TokenIssuing(Protocol):
    """`TokenIssuer.issue` (app/tokens.py)."""

    async def issue(
        self, caller: Identity, image: str, registry: str | None, force_refresh: bool
    ) -> tuple[MintedToken, RegistryRecord]: ...


class GuardedTokenIssuer:
    """`inner` with the IssuePullToken limit and an audit event per call (either optional)."""

    def __init__(
        self,
        inner: TokenIssuing,
        *,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._inner = inner
        self._audit = audit
        self._limiter = limiter

    async def issue(
        self, caller: Identity, image: str, registry: str | None, force_refresh: bool
    ) -> tuple[MintedToken, RegistryRecord]:
        try:
            if self._limiter is not None:
                self._limiter.check(caller.name, LimitKind.ISSUE_PULL_TOKEN)
            token, record = await self._inner.issue(caller, image, registry, force_refresh)
        except BrokerError as exc:
            if self._audit is not None:
                self._audit.event(
                    Action.TOKEN_ISSUE,
                    outcome_for(exc),
                    caller,
                    registry=registry or "",
                    repository=_repository(image),
                    reason=str(exc),
                )
            raise
        if self._audit is not None:
            self._audit.event(
                Action.TOKEN_ISSUE,
                Outcome.ALLOWED,
                caller,
                registry=record.resource_name,
                repository=token.repository,
                scope=token.scope,
                reason=PASSTHROUGH_REASON if is_basic_passthrough(token) else "",
            )
        return token, record


class LoginIssuing(Protocol):
    """`LoginIssuer.login` (app/logins.py)."""

    async def login(
        self, caller: Identity, image: str, registry: str | None, force_refresh: bool
    ) -> tuple[MintedLogin, RegistryRecord]: ...


class GuardedLoginIssuer:
    """`inner` with the IssuePullToken limit and an audit event per call (either optional)."""

    def __init__(
        self,
        inner: LoginIssuing,
        *,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._inner = inner
        self._audit = audit
        self._limiter = limiter

    async def login(
        self, caller: Identity, image: str, registry: str | None, force_refresh: bool
    ) -> tuple[MintedLogin, RegistryRecord]:
        try:
            if self._limiter is not None:
                self._limiter.check(caller.name, LimitKind.ISSUE_PULL_TOKEN)
            login, record = await self._inner.login(caller, image, registry, force_refresh)
        except BrokerError as exc:
            if self._audit is not None:
                self._audit.event(
                    Action.TOKEN_ISSUE,
                    outcome_for(exc),
                    caller,
                    registry=registry or "",
                    repository=_repository(image),
                    reason=f"{LOGIN_REASON}: {exc}",
                )
            raise
        if self._audit is not None:
            self._audit.event(
                Action.TOKEN_ISSUE,
                Outcome.ALLOWED,
                caller,
                registry=record.resource_name,
                repository=login.repository,
                scope=scope_of(login),
                reason=_login_reason(login),
            )
        return login, record


def _login_reason(login: MintedLogin) -> str:
    if login.passthrough:
        return f"{LOGIN_REASON}; {PASSTHROUGH_REASON}"
    return LOGIN_REASON if login.repository_scoped else UNSCOPED_LOGIN_REASON


def _repository(image: str) -> str:
    try:
        return parse_reference(image).repository
    except ClientInvalidReference:
        return ""
