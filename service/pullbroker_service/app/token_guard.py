"""The token and login use cases behind the per-identity rate limit, every issue audited.

Decorators around `TokenIssuer` (app/tokens.py) and `LoginIssuer` (app/registry_logins.py), so the
hot path's own module stays as it is: the limit is checked before any work (a refused call
costs a dict lookup), and each call, issued or refused, becomes one audit event with the
scope and, for a Basic pass-through, a reason saying the long-lived credential itself was
handed out. The cost on the hot path is one extra await and one list append (the sink
writes in batches).

With metrics on (infra/metrics.py), each call also counts once by RPC, registry kind and
outcome, and a policy refusal once more as a denial.

A registry login is audited as a token issue too (same action, same limit bucket: both hand
a node something to pull with), its reason saying it is a login and how far it reaches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.reference import parse_reference
from pullbroker_client.secret import Secret

from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.ratelimit import LimitKind, RateLimiter
from pullbroker_service.domain.audit import Action, Outcome, outcome_for
from pullbroker_service.domain.errors import BrokerError, InvalidArgument, ScopeNotAllowed
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import MintedToken, RegistryRecord
from pullbroker_service.infra.metrics import (
    NO_KIND,
    OUTCOME_CANCELLED,
    OUTCOME_INTERNAL,
    OUTCOME_ISSUED,
    BrokerMetrics,
    outcome_of,
)
from pullbroker_service.minting.bearer import is_basic_passthrough
from pullbroker_service.minting.runtime_logins import MintedLogin, scope_of

MAX_IMAGE_LENGTH = 4096
PASSTHROUGH_REASON = "basic pass-through: the registry's stored credential was handed out"
LOGIN_REASON = "registry login for container runtimes"
M = TypeVar("M", bound=MintedToken)

CANCELLED = "cancelled: the caller gave up or its deadline passed before the token was ready"
INTERNAL = "internal error in the broker: see its log"
UNSCOPED_LOGIN_REASON = (
    f"{LOGIN_REASON}: allows whatever the registry's stored identity may pull until it expires"
)


class TokenIssuing(Protocol):
    """`TokenIssuer.issue` (app/tokens.py)."""

    async def issue(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        force_refresh: bool,
        service_account_token: Secret | None = None,
    ) -> tuple[MintedToken, RegistryRecord]: ...


class LoginIssuing(Protocol):
    """`LoginIssuer.login` (app/registry_logins.py)."""

    async def login(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        force_refresh: bool,
        service_account_token: Secret | None = None,
    ) -> tuple[MintedLogin, RegistryRecord]: ...


class _Guard:
    """The IssuePullToken limit, then `work`, then one audit event (and one count when
    metrics are on), issued or refused."""

    def __init__(
        self,
        audit: AuditSink | None,
        limiter: RateLimiter | None,
        metrics: BrokerMetrics | None,
        rpc: str,
    ) -> None:
        self._audit = audit
        self._limiter = limiter
        self._metrics = metrics
        self._rpc = rpc

    async def run(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        work: Callable[[], Awaitable[tuple[M, RegistryRecord]]],
        reason_for: Callable[[M], str],
        refusal_prefix: str = "",
    ) -> tuple[M, RegistryRecord]:
        try:
            check_image(image)
            if self._limiter is not None:
                self._limiter.check(caller.name, LimitKind.ISSUE_PULL_TOKEN)
            minted, record = await work()
        except BrokerError as exc:
            self._refused(caller, image, registry, outcome_for(exc), f"{refusal_prefix}{exc}")
            self._count(outcome_of(exc), isinstance(exc, ScopeNotAllowed))
            raise
        except asyncio.CancelledError:
            self._refused(caller, image, registry, Outcome.FAILED, f"{refusal_prefix}{CANCELLED}")
            self._count(OUTCOME_CANCELLED)
            raise
        except Exception as exc:
            # A bug, not a refusal: the interceptor logs it and answers INTERNAL; the audit
            # trail still shows the call, with the error's type only (its text may quote data).
            reason = f"{refusal_prefix}{INTERNAL} ({type(exc).__name__})"
            self._refused(caller, image, registry, Outcome.FAILED, reason)
            self._count(OUTCOME_INTERNAL)
            raise
        if self._metrics is not None:
            self._metrics.token_request(self._rpc, record.kind, OUTCOME_ISSUED)
        if self._audit is not None:
            self._audit.event(
                Action.TOKEN_ISSUE,
                Outcome.ALLOWED,
                caller,
                registry=record.resource_name,
                repository=minted.repository,
                scope=scope_of(minted) if isinstance(minted, MintedLogin) else minted.scope,
                reason=reason_for(minted),
            )
        return minted, record

    def _count(self, outcome: str, policy_denied: bool = False) -> None:
        """A refused call; its registry may not be known yet, so its kind is NO_KIND."""
        if self._metrics is not None:
            self._metrics.token_request(self._rpc, NO_KIND, outcome)
            if policy_denied:
                self._metrics.policy_denied(self._rpc)

    def _refused(
        self, caller: Identity, image: str, registry: str | None, outcome: Outcome, reason: str
    ) -> None:
        if self._audit is not None:
            self._audit.event(
                Action.TOKEN_ISSUE,
                outcome,
                caller,
                registry=registry or "",
                repository=_repository(image),
                reason=reason,
            )


class GuardedTokenIssuer:
    """`inner` with the call limit, an audit event and a count per call (each optional)."""

    def __init__(
        self,
        inner: TokenIssuing,
        *,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self._inner = inner
        self._guard = _Guard(audit, limiter, metrics, "IssuePullToken")

    async def issue(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        force_refresh: bool,
        service_account_token: Secret | None = None,
    ) -> tuple[MintedToken, RegistryRecord]:
        return await self._guard.run(
            caller,
            image,
            registry,
            lambda: self._inner.issue(
                caller, image, registry, force_refresh, service_account_token
            ),
            _token_reason,
        )


class GuardedLoginIssuer:
    """`inner` with the call limit, an audit event and a count per call (each optional)."""

    def __init__(
        self,
        inner: LoginIssuing,
        *,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self._inner = inner
        self._guard = _Guard(audit, limiter, metrics, "IssueRegistryLogin")

    async def login(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        force_refresh: bool,
        service_account_token: Secret | None = None,
    ) -> tuple[MintedLogin, RegistryRecord]:
        return await self._guard.run(
            caller,
            image,
            registry,
            lambda: self._inner.login(
                caller, image, registry, force_refresh, service_account_token
            ),
            _login_reason,
            f"{LOGIN_REASON}: ",
        )


def check_image(image: str) -> None:
    """InvalidArgument for an empty or over-long image (inside the guard: it is audited)."""
    if not image:
        raise InvalidArgument("image is required, e.g. ghcr.io/acme/app:1.2")
    if len(image) > MAX_IMAGE_LENGTH:
        raise InvalidArgument(f"image is longer than {MAX_IMAGE_LENGTH} characters")


def _token_reason(token: MintedToken) -> str:
    return PASSTHROUGH_REASON if is_basic_passthrough(token) else ""


def _login_reason(login: MintedLogin) -> str:
    if login.passthrough:
        return f"{LOGIN_REASON}; {PASSTHROUGH_REASON}"
    return LOGIN_REASON if login.repository_scoped else UNSCOPED_LOGIN_REASON


def _repository(image: str) -> str:
    try:
        return parse_reference(image).repository
    except registry_errors.InvalidReference:
        return ""
