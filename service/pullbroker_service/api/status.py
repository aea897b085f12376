"""The one table from the broker's errors to gRPC status codes, and retry hints.

The most specific class in an error's MRO that the table names wins; anything else is
INTERNAL. Errors that are worth retrying (RateLimited, BackendUnavailable, QuotaExceeded) carry a
`retry-after` trailing metadata entry, in seconds, like HTTP's header. A lost conditional
write (EtagMismatch, ABORTED) carries the record's current etag as `current-etag`.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from pullbroker_service.domain import errors as e
from pullbroker_service.infra.logging import scrub

RETRY_AFTER_KEY = "retry-after"
CURRENT_ETAG_KEY = "current-etag"
"""Trailing metadata of an ABORTED (EtagMismatch) failure: the etag the record has now, when
the store said, so a caller can re-read or retry against it without guessing."""

_STATUS: dict[type[e.BrokerError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.EtagMismatch: grpc.StatusCode.ABORTED,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    # The secret backend refused the broker's own identity: the caller cannot fix that and
    # retrying will not help until an operator grants the broker's policy/role.
    e.BackendPermissionDenied: grpc.StatusCode.FAILED_PRECONDITION,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    # The caller's own per-identity rate limit (the registry's is RateLimited, below).
    e.QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.UpstreamError: grpc.StatusCode.UNAVAILABLE,
    # The stored credential is wrong: an admin must fix it, and retrying will not help.
    # (UNAUTHENTICATED would tell the caller its own certificate was refused.)
    e.CredentialRejected: grpc.StatusCode.FAILED_PRECONDITION,
    e.PullNotAllowed: grpc.StatusCode.PERMISSION_DENIED,
    e.RegistryUnreachable: grpc.StatusCode.UNAVAILABLE,
    e.RegistryTLSFailure: grpc.StatusCode.FAILED_PRECONDITION,
    e.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.UpstreamProtocolError: grpc.StatusCode.UNKNOWN,
    e.BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    e.SecretMissing: grpc.StatusCode.INTERNAL,
}


@dataclass(frozen=True)
class RpcStatus:
    """What an RPC fails with: code, a message for a person, and trailing metadata."""

    code: grpc.StatusCode
    message: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()


def status_for(exc: e.BrokerError) -> grpc.StatusCode:
    """The code for `exc`: the most specific class the table names, else INTERNAL."""
    return next((_STATUS[c] for c in type(exc).__mro__ if c in _STATUS), grpc.StatusCode.INTERNAL)


def retry_after(exc: e.BrokerError) -> float | None:
    """Seconds the caller should wait before retrying, when the error says."""
    value = getattr(exc, "retry_after", None)
    retryable = e.RateLimited | e.BackendUnavailable | e.QuotaExceeded
    if isinstance(exc, retryable) and isinstance(value, int | float):
        return max(0.0, float(value))
    return None


def rpc_status(exc: e.BrokerError) -> RpcStatus:
    """The full failure for `exc`; the message is scrubbed of any known secret value."""
    code = status_for(exc)
    message = scrub(str(exc)) or _fallback_message(code)
    wait = retry_after(exc)
    metadata: tuple[tuple[str, str], ...] = (
        ((RETRY_AFTER_KEY, f"{wait:g}"),) if wait is not None else ()
    )
    if isinstance(exc, e.EtagMismatch) and exc.current_etag:
        metadata += ((CURRENT_ETAG_KEY, exc.current_etag),)
    return RpcStatus(code, message, metadata)


def _fallback_message(code: grpc.StatusCode) -> str:
    return f"the broker refused the call ({code.name.lower()})"
