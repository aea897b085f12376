"""The registry auth handshake: ping for a challenge, then ask the token endpoint for a token.

This is the Docker token protocol (distribution's docs/spec/auth/token.md) that Docker Hub,
GHCR, Quay, Harbor and distribution speak: GET /v2/ answers 401 with
`WWW-Authenticate: Bearer realm=...,service=...`, and GET realm?service=&scope= with Basic
credentials (or none) answers `{"token": ..., "expires_in": ..., "issued_at": ...}`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from pullbroker_client import tracing
from pullbroker_client.jsonlimits import loads_bounded
from pullbroker_client.registry.challenge import Challenge, parse_www_authenticate
from pullbroker_client.registry.errors import (
    CredentialRejected,
    RateLimited,
    RegistryProtocolError,
    UnsupportedAuth,
    error_for_response,
)
from pullbroker_client.registry.rules import ERROR_BODY_LIMIT, same_origin
from pullbroker_client.registry.transport import Response, Transport, display_host
from pullbroker_client.secret import Secret

DEFAULT_EXPIRES_IN = 60
"""Seconds a token lives when the endpoint does not say (the Docker token spec's default)."""
MAX_EXPIRES_IN = 3600
"""The longest lifetime believed (seconds). Registry tokens live minutes (Docker Hub and GHCR
300 s, Harbor 30 min, GAR and Quay 1 h); a longer claim is clamped, which is always safe (the
token is asked for again sooner), and keeps a hostile 1e12 or Infinity out of date arithmetic."""

TOKEN_BODY_LIMIT = 64 * 1024
"""Largest token answer read (bytes). Real ones are 1-2 KiB (Docker Hub, GHCR) to a few KiB
(GAR, ACR JWTs with claims, a refresh_token beside the token); 64 KiB leaves ten times that
and keeps what a broker caches per token small (a 1 MiB "token" x 10,000 keys is 10 GiB)."""


@dataclass(frozen=True)
class BearerToken:
    """A registry token and its lifetime. `scope` is what was asked for, space-separated."""

    token: Secret
    issued_at: datetime
    expires_at: datetime
    scope: str

    @property
    def authorization(self) -> Secret:
        """The whole Authorization header value: `Bearer <token>`."""
        return Secret(f"Bearer {self.token.reveal()}")

    def remaining(self, now: datetime | None = None) -> timedelta:
        """How long the token is still good for (negative once expired)."""
        return self.expires_at - (now or datetime.now(UTC))


def basic_authorization(username: str, password: Secret) -> Secret:
    """The Authorization header value for HTTP Basic: `Basic base64(user:password)`."""
    pair = f"{username}:{password.reveal()}".encode()
    return Secret(f"Basic {base64.b64encode(pair).decode('ascii')}")


async def ping(transport: Transport, base_url: str) -> list[Challenge]:
    """The registry's challenges from GET /v2/, or [] when it lets anyone in."""
    asked = httpx.URL(f"{base_url.rstrip('/')}/v2/")
    response = await transport.request("GET", str(asked), limit=ERROR_BODY_LIMIT)
    if not same_origin(str(response.url), str(asked)):
        # Whoever answers a redirected ping is not the registry: its challenge would send
        # the credential to a realm of its choosing, its 200 would skip auth altogether.
        raise RegistryProtocolError(
            f"registry {display_host(asked)} redirected GET /v2/ to another host"
            f" ({response.host}): only the registry's own answer can name its token service"
        )
    if response.status_code == 200:
        return []
    if response.status_code == 401:
        headers = response.headers.get_list("www-authenticate")
        if not headers:
            raise UnsupportedAuth(
                f"registry {response.host} answered 401 without a WWW-Authenticate challenge"
            )
        return [c for header in headers for c in parse_www_authenticate(header)]
    if response.status_code == 404:
        raise RegistryProtocolError(
            f"{response.host} has no /v2/ endpoint: check that the URL is a Docker v2 registry"
        )
    raise error_for_response(
        response.status_code,
        response.content,
        host=response.host,
        subject="GET /v2/",
        retry_after=response.retry_after,
    )


async def fetch_token(
    transport: Transport,
    challenge: Challenge,
    scope: str | Sequence[str],
    username: str | None = None,
    password: Secret | None = None,
    *,
    registry_url: str | None = None,
) -> BearerToken:
    """A token for `scope` from the challenge's realm, with Basic credentials or anonymously.

    The realm must be https unless `registry_url` is itself plain http (test registries):
    a Basic credential must never travel in the clear because a registry said so.
    """
    realm = _checked_realm(challenge, registry_url)
    scopes = [scope] if isinstance(scope, str) else list(scope)
    params: dict[str, str | Sequence[str]] = {}
    if challenge.service:
        params["service"] = challenge.service
    if any(scopes):
        params["scope"] = [s for s in scopes if s]
    credential = None
    if username is not None and password is not None:
        credential = basic_authorization(username, password)
    with tracing.span(
        "registry.token_request", kind="client", attributes=_span_attributes(realm, scopes)
    ) as span:
        response = await transport.request(
            "GET", realm, params=params, authorization=credential, limit=TOKEN_BODY_LIMIT
        )
        span.set_attribute("http.response.status_code", response.status_code)
        _raise_for_token_status(response, anonymous=credential is None)
        return _parse_token(response, " ".join(s for s in scopes if s))


def _span_attributes(realm: str, scopes: list[str]) -> dict[str, tracing.Attribute]:
    """What the token request's span may say: the endpoint's host and the repositories
    asked for; never the realm's query, the credential or the token."""
    if not tracing.enabled():
        return {}
    url = httpx.URL(realm)
    repositories = [s.split(":")[1] for s in scopes if s.startswith("repository:")]
    attributes: dict[str, tracing.Attribute] = {
        "http.request.method": "GET",
        "server.address": url.host,
        "pullbroker.repository": repositories,
    }
    if url.port is not None:
        attributes["server.port"] = url.port
    return attributes


def _checked_realm(challenge: Challenge, registry_url: str | None) -> str:
    if challenge.scheme != "bearer":
        raise UnsupportedAuth(
            f"the registry asks for {challenge.scheme!r} auth; only bearer tokens can be scoped"
        )
    realm = challenge.realm
    if not realm:
        raise UnsupportedAuth("the registry's bearer challenge names no token realm")
    try:
        url = httpx.URL(realm)
    except httpx.InvalidURL as exc:
        raise UnsupportedAuth("the registry's token realm is not a valid URL") from exc
    registry_scheme = httpx.URL(registry_url).scheme if registry_url else "https"
    if url.scheme == "https" or (url.scheme == "http" and registry_scheme == "http"):
        return realm
    raise UnsupportedAuth(
        f"the registry names token realm {url.scheme}://{display_host(url)}, which is not"
        " https: refusing to send credentials to it from an https registry"
    )


def _raise_for_token_status(response: Response, *, anonymous: bool) -> None:
    status = response.status_code
    if status == 200:
        return
    if status in (401, 403):
        who = "anonymous access" if anonymous else "the credential"
        raise CredentialRejected(
            f"token endpoint {response.host} refused {who} ({status}): check the username"
            " and password/token, and that it may pull the repository"
        )
    if status == 429:
        raise RateLimited(
            f"token endpoint {response.host} is rate limiting (429): retry later",
            retry_after=response.retry_after,
        )
    raise error_for_response(
        status,
        response.content,
        host=response.host,
        subject="a token",
        retry_after=response.retry_after,
    )


def _parse_token(response: Response, scope: str) -> BearerToken:
    try:
        document: Any = loads_bounded(response.content)
    except ValueError:
        document = None
    token = None
    if isinstance(document, dict):
        token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        # Never say more about the body: it may hold a token in a field we did not expect.
        raise RegistryProtocolError(
            f"token endpoint {response.host} answered 200 without a token in a JSON object"
        )
    assert isinstance(document, dict)
    now = datetime.now(UTC)
    issued_at = _issued_at(document.get("issued_at"), now)
    try:
        lifetime = token_lifetime(document.get("expires_in"))
    except ValueError:
        raise RegistryProtocolError(
            f"token endpoint {response.host} answered an expires_in that is not a number of seconds"
        ) from None
    return BearerToken(
        token=Secret(token), issued_at=issued_at, expires_at=issued_at + lifetime, scope=scope
    )


def token_lifetime(
    expires_in: object,
    *,
    default: float = DEFAULT_EXPIRES_IN,
    maximum: float = MAX_EXPIRES_IN,
) -> timedelta:
    """A token's lifetime from an `expires_in` as a registry or OAuth endpoint sent it.

    Absent, not a number, or not positive: `default` (the spec's rule). Larger than `maximum`
    (1e12, Infinity, a 5000-digit integer): `maximum`. NaN: ValueError (no sane reading).
    """
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return timedelta(seconds=default)
    if isinstance(expires_in, float) and math.isnan(expires_in):
        raise ValueError("expires_in is NaN")
    if expires_in <= 0:
        return timedelta(seconds=default)
    # Compared before any conversion: float() of a huge int overflows, timedelta() of inf too.
    return timedelta(seconds=maximum if expires_in >= maximum else float(expires_in))


def _issued_at(value: object, now: datetime) -> datetime:
    """The endpoint's `issued_at`, never later than our clock: a date in the future (year
    9999) would push the expiry past what the registry honours and beyond what dates hold."""
    if not isinstance(value, str):
        return now
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return now
    try:
        parsed = parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except OverflowError:  # year 1 at +05:00 is before the first representable instant
        return now
    return min(parsed, now)
