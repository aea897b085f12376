"""OCI/Docker distribution client: references, challenges, token auth, manifests, blobs.

reference.py   parse_reference -> Reference (Docker's grammar and normalisation)
challenge.py   parse_www_authenticate -> [Challenge]
errors.py      RegistryError tree (drawn there), registry error bodies -> classes
tls.py         ssl_context: explicit TLS trust (no httpx)
addresses.py   DialPolicy, address_refusal: which addresses may be dialled (pure)
dial.py        the dial guard for sockets: resolve once, judge, connect (no httpx)
guarded_backend.py  the same guard as an httpcore network backend
transport.py   Transport: manual redirects, error mapping (httpx)
auth.py        ping, fetch_token -> BearerToken, basic_authorization
client.py      RegistryClient (get_manifest, head_manifest, stream_blob), Authorizer
mediatypes.py  OCI and Docker media types
document.py    load_object: the one bounded JSON parser for manifests, indexes, configs

Names are re-exported lazily: importing `pullbroker_client.registry.reference` (every node
pull does) must not import httpx, which only the broker's side of the client uses.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES: dict[str, str] = {
    "AuthenticationRequired": "errors",
    "Authorizer": "client",
    "BearerToken": "auth",
    "BlobUnknown": "errors",
    "Challenge": "challenge",
    "CredentialRejected": "errors",
    "DialPolicy": "addresses",
    "DialRefused": "errors",
    "DigestMismatch": "errors",
    "InvalidChallenge": "errors",
    "InvalidReference": "errors",
    "Manifest": "client",
    "ManifestInfo": "client",
    "ManifestUnknown": "errors",
    "NameUnknown": "errors",
    "NotAllowed": "errors",
    "NotFoundError": "errors",
    "RateLimited": "errors",
    "Reference": "reference",
    "RegistryClient": "client",
    "RegistryError": "errors",
    "RegistryProtocolError": "errors",
    "RegistryTLSError": "errors",
    "RegistryUnreachable": "errors",
    "Transport": "transport",
    "UnsupportedAuth": "errors",
    "basic_authorization": "auth",
    "fetch_token": "auth",
    "format_challenges": "challenge",
    "parse_reference": "reference",
    "parse_www_authenticate": "challenge",
    "ping": "auth",
    "ssl_context": "tls",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
