"""How the blob fetcher's failures read: 401s and socket errors as registry errors.

Every message names the registry as host:port only, never a URL: redirect targets carry
signed query strings.
"""

from __future__ import annotations

import http.client
import socket
import ssl

from pullbroker_client.registry.challenge import parse_www_authenticate
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    InvalidChallenge,
    NotAllowed,
    RegistryError,
    RegistryTLSError,
    RegistryUnreachable,
)

from pullbroker_sidecar.errors import PullCancelled


def unauthorized(resp: http.client.HTTPResponse, origin: object, subject: str) -> RegistryError:
    """401: NotAllowed for a scope the token lacks (a new token will not widen it), else
    AuthenticationRequired, which the engine answers with a fresh token once."""
    errors: set[str | None] = set()
    for header in resp.headers.get_all("WWW-Authenticate") or []:
        try:
            errors.update(c.error for c in parse_www_authenticate(header))
        except InvalidChallenge:
            continue
    if "insufficient_scope" in errors:
        return NotAllowed(
            f"registry {origin} refused {subject} (insufficient_scope): the token "
            "does not allow pulling this repository",
            code="insufficient_scope",
        )
    return AuthenticationRequired(f"registry {origin} answered 401 for {subject}")


def translate(exc: BaseException, origin: object) -> BaseException:
    """The registry error for a failure talking to `origin` (which renders as host:port)."""
    if isinstance(exc, RegistryError | PullCancelled) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RegistryTLSError(
            f"TLS verification of registry {origin} failed ({exc.verify_message}): "
            "check the registry's CA certificate in its broker record"
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return RegistryUnreachable(f"registry {origin} did not answer in time")
    if isinstance(exc, OSError | http.client.HTTPException):
        return RegistryUnreachable(
            f"connection to registry {origin} failed ({type(exc).__name__}): "
            "check that it is up and reachable from this node"
        )
    return exc
