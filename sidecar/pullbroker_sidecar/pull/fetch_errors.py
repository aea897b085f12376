"""How the blob fetcher's socket and TLS failures read: as registry errors.

(Failed answers, 401s included, are the registry client's rules: `rules.answer_error`.)

Every message names the registry as host:port only, never a URL: redirect targets carry
signed query strings.
"""

from __future__ import annotations

import http.client
import socket
import ssl

from pullbroker_client.registry.errors import (
    RegistryError,
    RegistryTLSError,
    RegistryUnreachable,
)

from pullbroker_sidecar.errors import PullCancelled


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
