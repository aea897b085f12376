"""What a registry token says it grants, read without verifying it.

Docker Hub, Harbor, Quay and distribution's token servers issue JWTs whose `access` claim
lists what the token may do. A token endpoint answers a credential that may not pull a
repository with a token that grants nothing (rather than an error), so the claim is the
cheapest way to tell "not allowed" at mint time. The payload is untrusted: it is only ever
used to refuse early, never to allow, and anything unexpected means "cannot tell".
Opaque tokens (GHCR's) also mean "cannot tell"; their refusal shows at the registry.
"""

from __future__ import annotations

import base64
from typing import Any

from pullbroker_client.jsonlimits import loads_bounded

_PULL_ACTIONS = frozenset({"pull", "*"})
_MAX_TOKEN = 64 * 1024


def grants_pull(token: str, repository: str) -> bool | None:
    """Whether the JWT `token` grants pull on `repository`; None when it cannot tell."""
    access = _access_claim(token)
    if access is None:
        return None
    for entry in access:
        if not isinstance(entry, dict):
            return None
        name, kind, actions = entry.get("name"), entry.get("type"), entry.get("actions")
        if not isinstance(name, str) or not isinstance(kind, str):
            return None
        if actions is not None and not isinstance(actions, list):
            return None
        granted = {a for a in actions or [] if isinstance(a, str)}
        if kind == "repository" and name == repository and _PULL_ACTIONS & granted:
            return True
    return False


def _access_claim(token: str) -> list[Any] | None:
    parts = token.split(".")
    if len(token) > _MAX_TOKEN or len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = loads_bounded(payload)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    if not isinstance(claims, dict):
        return None
    access = claims.get("access")
    return access if isinstance(access, list) else None
