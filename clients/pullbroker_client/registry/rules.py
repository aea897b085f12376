"""The HTTP rules every registry stack here follows, as pure functions: no I/O, no HTTP library.

Two stacks speak HTTP to registries: the broker's httpx `Transport` (transport.py: pings,
tokens, probes) and the node's threaded `BlobFetcher` (the sidecar's pull/fetch.py: manifests
and blobs over http.client, chosen for throughput). Both ask this module what to do, so each
rule is written once (go-containerregistry: one `CheckRedirect`; httpx: one
`_redirect_headers`) and tested once, table-driven:

    first_hop, next_hop   where a request goes after a redirect, with which method, and
                          whether `Authorization` still goes along: only within the first
                          origin, and never again once dropped; no https -> http, no other
                          schemes, at most MAX_REDIRECTS
    unauthorized          a 401 at the registry, read from its challenge
    answer_error          any failed answer (401 through `unauthorized`, the rest by body
                          code and status, errors.error_for_response)
    range_matches         whether a 206 carries exactly the bytes asked for
    MANIFEST_LIMIT, ERROR_BODY_LIMIT, MAX_REDIRECTS   the shared limits

The dial guard (addresses.py) is the other rule of every hop; it is judged where the address
is known, at each connection (dial.py, guarded_backend.py), never here. Messages name
host[:port] only: redirect URLs carry signed query strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

from pullbroker_client.registry.challenge import parse_www_authenticate
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    InvalidChallenge,
    NameUnknown,
    NotAllowed,
    NotFoundError,
    RegistryError,
    RegistryProtocolError,
    error_for_response,
)
from pullbroker_client.secret import Secret

MANIFEST_LIMIT = 4 << 20
"""Largest manifest or index read (bytes): the limit containerd and most registries apply."""
ERROR_BODY_LIMIT = 64 << 10
"""Most of an error (or redirect) body read (bytes): enough for any registry's error JSON."""
MAX_REDIRECTS = 5
"""Redirects followed for one request; the next one is a RegistryProtocolError."""
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    """Scheme, host and effective port: what decides whether a credential may go along."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def origin_of(url: str) -> Origin:
    """The origin of an absolute http(s) URL; RegistryProtocolError naming its host if not."""
    parts = _split(url)
    scheme = parts.scheme
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise RegistryProtocolError(f"{_host_of(parts)}: not an http(s) URL the client can use")
    return Origin(scheme, parts.hostname, parts.port or _DEFAULT_PORTS[scheme])


def same_origin(a: str, b: str) -> bool:
    """Whether two absolute http(s) URLs share scheme, host and (effective) port."""
    return origin_of(a) == origin_of(b)


def display_host(url: str) -> str:
    """host[:port] of `url` for messages (the port only when the URL names one): never the
    path or query, which may be signed."""
    try:
        return _host_of(_split(url))
    except RegistryProtocolError:
        return "an unparseable URL"


@dataclass(frozen=True)
class Hop:
    """One request of a chain: where it goes, how, and with which Authorization (a Secret,
    or None once a redirect left the first origin). Build the first with `first_hop`."""

    url: str
    method: str
    authorization: Secret | None
    redirects: int = 0
    via: str = ""
    """host[:port] whose redirect led here; "" for the first hop."""

    @property
    def host(self) -> str:
        return display_host(self.url)


def first_hop(
    url: str,
    authorization: Secret | None,
    *,
    method: str = "GET",
    https_only: bool = False,
) -> Hop:
    """The first request of a chain. `https_only` (the node's fetcher) refuses plain http;
    since `next_hop` refuses every downgrade, the whole chain is then HTTPS."""
    if origin_of(url).scheme != "https" and https_only:
        raise RegistryProtocolError(
            f"{display_host(url)}: refusing a registry URL that is not https://"
        )
    return Hop(url, method, authorization)


def next_hop(hop: Hop, status: int, location: str | None, *, limit: int = MAX_REDIRECTS) -> Hop:
    """Where the redirect `status`/`location` that answered `hop` leads.

    Authorization goes along only to `hop`'s own origin; a hop that has none (dropped on an
    earlier redirect) never gets it back. 303 turns anything but HEAD into GET. Raises
    RegistryProtocolError past `limit` redirects, without a Location, to a non-HTTP URL, and
    from https to plain http.
    """
    if status not in REDIRECT_STATUSES:
        raise ValueError(f"{status} is not a redirect")
    here = hop.host
    if hop.redirects >= limit:
        raise RegistryProtocolError(f"{here} redirected more than {limit} times")
    if not location or not location.strip():
        raise RegistryProtocolError(f"{here} redirected without a Location")
    try:
        target = urljoin(hop.url, location.strip())
        parts = urlsplit(target)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise RegistryProtocolError(f"{here} redirected to a bad URL") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise RegistryProtocolError(f"{here} redirected to a non-HTTP URL")
    source, destination = origin_of(hop.url), origin_of(target)
    if source.scheme == "https" and destination.scheme == "http":
        raise RegistryProtocolError(
            f"{here} redirected from https to plain http; refusing the downgrade"
        )
    method = "GET" if status == 303 and hop.method != "HEAD" else hop.method
    authorization = hop.authorization if destination == source else None
    return Hop(target, method, authorization, hop.redirects + 1, via=here)


def unauthorized(challenges: Iterable[str], host: str, subject: str) -> RegistryError:
    """A 401 at the registry. NotAllowed when a challenge says insufficient_scope (a fresh
    token would not widen it); else AuthenticationRequired, which a puller answers by asking
    for a fresh token once. Unparseable challenges count as none."""
    errors: set[str | None] = set()
    for header in challenges:
        try:
            errors.update(c.error for c in parse_www_authenticate(header))
        except InvalidChallenge:
            continue
    if "insufficient_scope" in errors:
        return NotAllowed(
            f"registry {host} refused {subject} (insufficient_scope): the token "
            "does not allow pulling this repository",
            code="insufficient_scope",
        )
    return AuthenticationRequired(
        f"registry {host} answered 401 for {subject}: it wants a credential or a fresh token"
    )


def answer_error(
    status: int,
    *,
    challenges: Iterable[str],
    body: bytes,
    host: str,
    subject: str,
    not_found: type[NotFoundError] = NameUnknown,
    retry_after: float | None = None,
) -> RegistryError:
    """The error for a failed registry answer: a 401 from its challenge, the rest (403, 404,
    429, 5xx) from the body's code, else the status (errors.error_for_response)."""
    if status == 401:
        return unauthorized(challenges, host, subject)
    return error_for_response(
        status, body, host=host, subject=subject, not_found=not_found, retry_after=retry_after
    )


_CONTENT_RANGE = re.compile(r"\Abytes (\d+)-(\d+)/(\d+|\*)\Z")


@dataclass(frozen=True)
class ContentRange:
    """`bytes first-last/total` (total None for `*`)."""

    first: int
    last: int
    total: int | None


def parse_content_range(value: str) -> ContentRange | None:
    """A Content-Range header's byte range, or None when it is not exactly one."""
    found = _CONTENT_RANGE.match(value.strip())
    if found is None:
        return None
    first, last, total = found.groups()
    return ContentRange(int(first), int(last), None if total == "*" else int(total))


def range_matches(
    content_range: str | None, content_length: str | None, offset: int, size: int
) -> bool:
    """Whether a 206 to `Range: bytes=offset-` of a `size`-byte blob carries exactly bytes
    offset..size-1: by Content-Range, else (a proxy dropped it) by a Content-Length of
    size - offset. Anything else means starting over from byte 0."""
    if content_range is not None:
        found = parse_content_range(content_range)
        return (
            found is not None
            and (found.first, found.last) == (offset, size - 1)
            and found.total in (None, size)
        )
    return content_length is not None and content_length.strip() == str(size - offset)


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise RegistryProtocolError("not a valid URL: check the registry or realm URL") from None
    return parts


def _host_of(parts: SplitResult) -> str:
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port}" if parts.port else host or "a URL without a host"
