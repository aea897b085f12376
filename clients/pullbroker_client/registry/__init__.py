"""OCI/Docker distribution client: references, challenges, token auth, the HTTP rules.

reference.py   parse_reference -> Reference (Docker's grammar and normalisation)
challenge.py   parse_www_authenticate -> [Challenge]
errors.py      RegistryError tree (drawn there), registry error bodies -> classes
tls.py         ssl_context: explicit TLS trust (no httpx)
addresses.py   DialPolicy, address_refusal: which addresses may be dialled (pure)
dial.py        the dial guard for sockets: resolve once, judge, connect (no httpx)
guarded_backend.py  the same guard as an httpcore network backend
rules.py       the HTTP rules both stacks follow (pure): next_hop (redirects, when
               Authorization goes along), unauthorized/answer_error, range_matches, limits
transport.py   Transport: the broker's HTTP (httpx): redirects by rules.py, httpx errors mapped
auth.py        ping, fetch_token -> BearerToken, basic_authorization
mediatypes.py  OCI and Docker media types
document.py    load_object: the one bounded JSON parser for manifests, indexes, configs
verify.py      verified_digest, manifest_media_type: manifest checks (no HTTP stack)

Nodes pull manifests and blobs with the sidecar's threaded fetcher (pull/fetch.py), which
follows rules.py as Transport does: one set of rules, two HTTP stacks, no third.

Names are re-exported lazily: importing `pullbroker_client.registry.reference` (every node
pull does) must not import httpx, which only the broker's side of the client uses.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES: dict[str, str] = {
    "AuthenticationRequired": "errors",
    "BearerToken": "auth",
    "BlobUnknown": "errors",
    "Challenge": "challenge",
    "CredentialRejected": "errors",
    "DialPolicy": "addresses",
    "DialRefused": "errors",
    "DigestMismatch": "errors",
    "InvalidChallenge": "errors",
    "Hop": "rules",
    "InvalidReference": "errors",
    "ManifestUnknown": "errors",
    "NameUnknown": "errors",
    "NotAllowed": "errors",
    "NotFoundError": "errors",
    "RateLimited": "errors",
    "Reference": "reference",
    "RegistryError": "errors",
    "RegistryProtocolError": "errors",
    "RegistryTLSError": "errors",
    "RegistryUnreachable": "errors",
    "Transport": "transport",
    "UnsupportedAuth": "errors",
    "basic_authorization": "auth",
    "fetch_token": "auth",
    "first_hop": "rules",
    "format_challenges": "challenge",
    "next_hop": "rules",
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
