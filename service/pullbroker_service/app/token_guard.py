"""The token use case behind the per-identity rate limit, with every issue audited.

A decorator around `TokenIssuer` (app/tokens.py), so the hot path's own module stays as it
is: the limit is checked before any work (a refused call costs a dict lookup), and each
call, issued or refused, becomes one audit event with the scope and, for a Basic
pass-through, a reason saying the long-lived credential itself was handed out. The cost on
the hot path is one extra await and one list append (the sink writes in batches).
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

PASSTHROUGH_REASON = "basic pass-through: the registry's stored credential was handed out"


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


def _repository(image: str) -> str:
    try:
        return parse_reference(image).repository
    except ClientInvalidReference:
        return ""
