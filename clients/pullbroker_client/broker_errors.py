"""Broker RPC failures as typed errors: every grpc.RpcError becomes a BrokerCallError."""

from __future__ import annotations

from typing import Any

import grpc

from pullbroker_client.errors import ClientError

REQUEST_ID_KEY = "x-request-id"


class BrokerCallError(ClientError):
    """A broker RPC failed. `.code` is the grpc.StatusCode; str() is the broker's message."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        """Worth retrying later (the broker or a backend is busy or down)."""
        return self.code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )


def to_call_error(exc: grpc.RpcError, address: str = "") -> BrokerCallError:
    """The BrokerCallError for a failed call (actionable message when the broker is down)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    trailing: dict[str, Any] = {}
    if hasattr(exc, "trailing_metadata"):
        metadata: Any = exc.trailing_metadata() or ()
        trailing = {str(k): v for k, v in metadata}
    retry = _float(trailing.get("retry-after"))
    where = f" at {address}" if address else ""
    if code is grpc.StatusCode.UNAVAILABLE and _is_transport_failure(details):
        details = (
            f"cannot reach the broker{where}: is `pullbroker serve` running, and do --broker/"
            "--ca/--cert/--key match it? (connection failed or its TLS handshake was refused)"
        )
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED and not details.startswith("the broker"):
        details = f"the broker{where} did not answer in time: check that it is running"
    return BrokerCallError(
        code,
        details or code.name.lower(),
        request_id=str(trailing.get(REQUEST_ID_KEY, "")),
        retry_after=retry,
    )


def _is_transport_failure(details: str) -> bool:
    markers = ("failed to connect", "connection refused", "handshake", "Socket closed", "DNS")
    return any(m.lower() in details.lower() for m in markers)


def _float(value: object) -> float | None:
    try:
        return float(value) if isinstance(value, str | bytes) else None
    except ValueError:
        return None
