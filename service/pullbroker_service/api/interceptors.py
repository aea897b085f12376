"""Who is calling, may they call this, and one request id per call.

Every handler is wrapped when it is registered: the wrapper reads the identity from the
peer's certificate (its one SPIFFE ID URI SAN, else "CN=<cn>"; peer_identity.py), asks the
policy for its roles, checks the role the service needs, records the call (method, caller,
request id: the caller's x-request-id, else one made when first needed) in one context
variable that log lines read (request_context.py), maps BrokerError to a status, and logs
the call (`rpc_failed` at warning, `rpc_completed` at debug).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from pullbroker_service.api.peer_identity import identity_of_certificate
from pullbroker_service.api.status import RpcStatus, rpc_status
from pullbroker_service.domain.errors import (
    BrokerError,
    IdentityNotAllowed,
    Unauthenticated,
)
from pullbroker_service.domain.identity import ADMIN, NODE, Identity
from pullbroker_service.infra.logging import debug_enabled, get_logger
from pullbroker_service.infra.request_context import CallInfo, begin_call, current_call

REQUEST_ID_KEY = "x-request-id"
# No certificate can spell it: certificate names are "spiffe://…" or "CN=…".
INSECURE_IDENTITY = "insecure:dev-port"
# Service -> role its callers need; None: any authenticated caller. Unlisted: refused.
SERVICE_ROLES: dict[str, str | None] = {
    "pullbroker.v1.RegistryService": ADMIN,
    "pullbroker.v1.PullService": NODE,
    "pullbroker.v1.DeploymentService": ADMIN,
    "pullbroker.v1.DeploymentReportingService": NODE,
    "pullbroker.v1.PolicyService": ADMIN,
    "pullbroker.v1.AuditService": ADMIN,
    "grpc.health.v1.Health": None,
    "grpc.reflection.v1alpha.ServerReflection": None,
    "grpc.reflection.v1.ServerReflection": None,
}
_MAX_REQUEST_ID = 128
# A unary call that takes longer is ended with DEADLINE_EXCEEDED, whatever deadline the client
# set (or none): a hung upstream must not pin broker resources. Streams (Watch) are exempt.
DEFAULT_MAX_CALL_SECONDS = 60.0

RolesFor = Callable[[str], frozenset[str]]
RefusalHook = Callable[[str, "Identity | None", BrokerError], None]
"""Told of each call refused before it reaches a servicer: (service, caller if known, why)."""

_log = get_logger("pullbroker_service.api")


def current_caller() -> Identity:
    """The identity of the call being served (set by the guard before the servicer runs)."""
    info = current_call()
    if info is None or info.identity is None:
        raise Unauthenticated("no authenticated caller for this call")
    return info.identity


def peer_identity_name(context: Any, allow_insecure: bool) -> str:
    """The policy name of the peer: its SPIFFE ID, else "CN=<cn>"; plaintext is insecure-dev.

    Read from the peer's certificate (see peer_identity.py for why gRPC's name properties
    are not trusted).
    """
    auth: dict[str, list[bytes]] = context.auth_context()
    if _first(auth, "transport_security_type") != "ssl":
        if allow_insecure:
            return INSECURE_IDENTITY
        raise Unauthenticated(
            "the broker accepts only mutual TLS: connect with a client certificate"
        )
    pem = auth.get("x509_pem_cert")
    if not pem:
        raise Unauthenticated("the broker accepts only mutual TLS: present a client certificate")
    return identity_of_certificate(pem[0])


def _first(auth: dict[str, list[bytes]], key: str) -> str | None:
    values = auth.get(key)
    return values[0].decode("utf-8", "replace") if values else None


def _given_request_id(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            clean = "".join(c for c in value if c.isalnum() or c in "-_.:")[:_MAX_REQUEST_ID]
            if clean:
                return clean
    return None


if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Handler = grpc.RpcMethodHandler


@dataclass(frozen=True)
class _Method:
    """A method's name and service, fixed when its handler is wrapped."""

    method: str
    service: str


class CallGuard:
    """mTLS identity, role check per service, request ids, error mapping and access log.

    Handlers are wrapped once, when they are registered (see GuardedRegistrar), rather than
    per call by a grpc.aio ServerInterceptor: the interceptor path costs an extra coroutine
    and handler lookup on every call, measurable on the token hot path.
    """

    def __init__(
        self,
        roles_for: RolesFor,
        *,
        allow_insecure: bool = False,
        max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
        on_refused: RefusalHook | None = None,
    ) -> None:
        self.max_call_seconds = max_call_seconds
        self._roles_for = roles_for
        self._allow_insecure = allow_insecure
        self._on_refused = on_refused

    def wrap(self, service: str, name: str, handler: _Handler) -> _Handler:
        """`handler` behind the identity check, for /service/name."""
        wrapped: _Handler = _wrap(handler, _Method(f"/{service}/{name}", service), self)
        return wrapped

    def authorize(self, service: str, context: Any) -> Identity:
        """Identity of the peer with its roles, if it may call `service` (a refusal is also
        passed to `on_refused`)."""
        try:
            name = peer_identity_name(context, self._allow_insecure)
        except Unauthenticated as exc:
            self._refused(service, None, exc)
            raise
        try:
            return self._authorize(service, name)
        except IdentityNotAllowed as exc:
            self._refused(service, Identity(name=name, roles=frozenset()), exc)
            raise

    def _refused(self, service: str, caller: Identity | None, exc: BrokerError) -> None:
        if self._on_refused is not None:
            self._on_refused(service, caller, exc)

    def _authorize(self, service: str, name: str) -> Identity:
        if service not in SERVICE_ROLES:
            raise IdentityNotAllowed(f"{service} is not served to clients")
        roles = self._roles_for(name)
        identity = Identity(name=name, roles=roles)
        needed = SERVICE_ROLES[service]
        if needed is not None and not identity.has_role(needed):
            held = ", ".join(sorted(roles)) or "none"
            raise IdentityNotAllowed(
                f"identity {name} may not call {service}: it needs role {needed!r} "
                f"(roles held: {held}); grant it in the broker's policy.yaml"
            )
        return identity


class GuardedRegistrar:
    """Stands in for the server when servicers are added: every handler is guarded first.

    The generated `add_*_to_server` functions hand their handlers over twice: as an opaque
    generic handler and as a dict (`add_registered_method_handlers`). Only the dict is used,
    wrapped, and both forms of the wrapped handlers go to the real server, so nothing can be
    registered unguarded.
    """

    def __init__(self, server: grpc.aio.Server, guard: CallGuard) -> None:
        # Any: grpc-stubs predates add_registered_method_handlers.
        self._server: Any = server
        self._guard = guard

    def add_generic_rpc_handlers(self, _handlers: object) -> None:
        """Ignored on purpose: the same handlers arrive as a dict, which can be wrapped."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, _Handler]) -> None:
        wrapped = {name: self._guard.wrap(service, name, h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)


def _begin(call: _Method, context: Any, guard: CallGuard) -> CallInfo:
    info = begin_call(call.method, _given_request_id(context.invocation_metadata()))
    if info.given_request_id is not None:
        # Echo a caller's own id; a generated one only goes back with errors (see _fail), since
        # trailing metadata on every successful call is measurable on the token hot path.
        context.set_trailing_metadata(((REQUEST_ID_KEY, info.given_request_id),))
    info.identity = guard.authorize(call.service, context)
    return info


async def _fail(context: Any, exc: Exception, started: float) -> None:
    """End the call with the status for `exc` (raises grpc's AbortError, as abort does)."""
    info = current_call()
    request_id = info.request_id if info is not None else "unknown"
    if isinstance(exc, BrokerError):
        status = rpc_status(exc)
    elif isinstance(exc, TimeoutError):
        status = RpcStatus(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the broker gave up on this call after its time limit (request id {request_id}): "
            "a registry or secret backend is not answering; retry later",
        )
    else:
        _log.error("rpc_crashed", exc_info=exc)
        status = RpcStatus(
            grpc.StatusCode.INTERNAL,
            f"internal error in the broker (request id {request_id}): see its log",
        )
    _done(status.code, started, status.message)
    metadata = ((REQUEST_ID_KEY, request_id), *status.trailing_metadata)
    await context.abort(status.code, status.message, metadata)


def _done(code: grpc.StatusCode, started: float, message: str = "") -> None:
    elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    if code is grpc.StatusCode.OK:
        # debug: the use cases log what matters (token_issued, registry_created) at info.
        if debug_enabled():
            _log.debug("rpc_completed", code=code.name, duration_ms=elapsed_ms)
    else:
        _log.warning("rpc_failed", code=code.name, duration_ms=elapsed_ms, message=message)


def _wrap(handler: _Handler, call: _Method, guard: CallGuard) -> Any:
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, call, guard), **kwargs
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.stream_unary, call, guard), **kwargs
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, call, guard), **kwargs
        )
    return grpc.stream_stream_rpc_method_handler(
        _streaming(handler.stream_stream, call, guard), **kwargs
    )


def _unary(inner: Any, call: _Method, guard: CallGuard) -> Any:
    async def behavior(request: Any, context: Any) -> Any:
        started = time.perf_counter()
        try:
            _begin(call, context, guard)
            async with asyncio.timeout(guard.max_call_seconds):
                response = await inner(request, context)
        except grpc.aio.AbortError:
            _done(context.code() or grpc.StatusCode.UNKNOWN, started, context.details() or "")
            raise
        except Exception as exc:
            await _fail(context, exc, started)
            raise  # unreachable: _fail aborts the call
        _done(grpc.StatusCode.OK, started)
        return response

    return behavior


def _streaming(inner: Any, call: _Method, guard: CallGuard) -> Any:
    if not inspect.isasyncgenfunction(inner):
        return _unary(inner, call, guard)

    async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            _begin(call, context, guard)
            async for item in inner(request, context):
                yield item
        except grpc.aio.AbortError:
            _done(context.code() or grpc.StatusCode.UNKNOWN, started, context.details() or "")
            raise
        except Exception as exc:
            await _fail(context, exc, started)
            raise  # unreachable: _fail aborts the call
        _done(grpc.StatusCode.OK, started)

    return generator
