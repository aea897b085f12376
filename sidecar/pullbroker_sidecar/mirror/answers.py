"""What the runtime sees when the mirror cannot serve: one table, most specific class wins.

Broker refusals keep the broker's own message (it names the policy rule or record to
fix); registry failures keep the registry client's cleaned message (host, what to check),
never a raw body. Temporary failures carry `Retry-After`, so kubelet and containerd back
off instead of hammering a broker or registry that is down.
"""

from __future__ import annotations

import json

import grpc
from pullbroker_client.broker import BrokerCallError
from pullbroker_client.errors import ConfigurationError
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    BlobUnknown,
    CredentialRejected,
    InvalidReference,
    ManifestUnknown,
    NameUnknown,
    NotAllowed,
    NotFoundError,
    RateLimited,
    RegistryError,
    RegistryUnreachable,
)
from pullbroker_client.registry.errors import DigestMismatch as RegistryDigestMismatch

from pullbroker_sidecar.errors import (
    DigestMismatch,
    GrantMismatch,
    MirrorRefusal,
    SizeLimitExceeded,
)

RETRY_AFTER = 5
"""Seconds a runtime is told to wait when neither broker nor registry said."""

_BROKER: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.PERMISSION_DENIED: (403, "DENIED"),
    grpc.StatusCode.UNAUTHENTICATED: (403, "DENIED"),
    grpc.StatusCode.NOT_FOUND: (404, "NAME_UNKNOWN"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "NAME_INVALID"),
    grpc.StatusCode.FAILED_PRECONDITION: (403, "DENIED"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "TOOMANYREQUESTS"),
    grpc.StatusCode.UNAVAILABLE: (503, "UNAVAILABLE"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (503, "UNAVAILABLE"),
}

_REGISTRY: dict[type[BaseException], tuple[int, str]] = {
    ManifestUnknown: (404, "MANIFEST_UNKNOWN"),
    BlobUnknown: (404, "BLOB_UNKNOWN"),
    NameUnknown: (404, "NAME_UNKNOWN"),
    NotFoundError: (404, "NAME_UNKNOWN"),
    NotAllowed: (403, "DENIED"),
    AuthenticationRequired: (403, "DENIED"),
    CredentialRejected: (403, "DENIED"),
    RateLimited: (429, "TOOMANYREQUESTS"),
    RegistryUnreachable: (503, "UNAVAILABLE"),
    InvalidReference: (400, "NAME_INVALID"),
    GrantMismatch: (403, "DENIED"),
    SizeLimitExceeded: (403, "DENIED"),
    DigestMismatch: (502, "DIGEST_INVALID"),
    RegistryDigestMismatch: (502, "DIGEST_INVALID"),  # a manifest that is not its digest
    ConfigurationError: (503, "UNAVAILABLE"),
    RegistryError: (502, "UNKNOWN"),
}


def refusal_for(exc: BaseException) -> MirrorRefusal | None:
    """The OCI answer for a failure, or None for one that is a bug (the caller logs it)."""
    if isinstance(exc, MirrorRefusal):
        return exc
    if isinstance(exc, BrokerCallError):
        return _from_broker(exc)
    entry = next((_REGISTRY[c] for c in type(exc).__mro__ if c in _REGISTRY), None)
    if entry is None:
        return None
    status, code = entry
    if status == 502 and isinstance(exc, RegistryError) and exc.temporary:
        status, code = 503, "UNAVAILABLE"
    message = str(exc)
    if isinstance(exc, AuthenticationRequired | CredentialRejected):
        message = f"the registry refused the broker's token: {exc}"
    retry = _retry_after(exc) if status in (429, 503) else None
    return MirrorRefusal(status, code, message, retry_after=retry)


def _from_broker(exc: BrokerCallError) -> MirrorRefusal:
    status, code = _BROKER.get(exc.code, (502, "UNKNOWN"))
    retry = _retry_after(exc) if status in (429, 503) else None
    prefix = "the broker refused: " if status == 403 else "broker: "
    return MirrorRefusal(status, code, prefix + exc.message, retry_after=retry)


def _retry_after(exc: BaseException) -> int:
    seconds = getattr(exc, "retry_after", None)
    if isinstance(seconds, int | float) and seconds > 0:
        return max(1, round(seconds))
    return RETRY_AFTER


def error_body(refusal: MirrorRefusal) -> bytes:
    """The OCI distribution error document."""
    error = {"code": refusal.code, "message": refusal.message, "detail": None}
    return json.dumps({"errors": [error]}).encode()
