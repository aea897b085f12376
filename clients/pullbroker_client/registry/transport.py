"""HTTP for the registry client: explicit TLS trust, timeouts, redirects we follow ourselves.

The only module that touches httpx. It decides TLS trust from the PEM it is given, never from
the environment (REQUESTS_CA_BUNDLE, SSL_CERT_FILE and proxies are ignored), follows
redirects by rules.py, as the node's fetcher does (at most five; `Authorization` dropped as
soon as one leaves the first origin and never sent again; no downgrade to plain http), and
turns httpx exceptions into the tree in errors.py. Every connection, first hop and redirect
target alike, passes the dial guard (guarded_backend.py): a host whose addresses the dial policy
refuses is never connected to, and DialRefused names the redirect that led there. The
authorization value is a Secret until the request is built; httpx renders it as "[secure]"
in reprs, and no message here names more of a URL than its host, since redirect URLs often
carry signed query strings.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

import httpx

from pullbroker_client.registry.addresses import BASELINE, DialPolicy
from pullbroker_client.registry.dial import AsyncResolver, async_system_resolve
from pullbroker_client.registry.errors import (
    DialRefused,
    RegistryError,
    RegistryProtocolError,
    RegistryTLSError,
    RegistryUnreachable,
)
from pullbroker_client.registry.guarded_backend import (
    GuardedBackend,
    guarded_transport,
    no_cookies,
)
from pullbroker_client.registry.rules import (
    MANIFEST_LIMIT,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    Hop,
    first_hop,
    next_hop,
)
from pullbroker_client.registry.rules import display_host as _display_host
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret

DEFAULT_TIMEOUT = 30.0
USER_AGENT = "pullbroker/0.1"

QueryParams = Mapping[str, str | Sequence[str]]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def display_host(url: httpx.URL) -> str:
    """host[:port] of `url` for messages: never the path or query, which may be signed."""
    return _display_host(str(url))


class Response:
    """A registry answer whose body has not been read yet (or was, into `.content`)."""

    __slots__ = ("_raw", "content")

    def __init__(self, raw: httpx.Response) -> None:
        self._raw = raw
        self.content = b""

    @property
    def status_code(self) -> int:
        return self._raw.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self._raw.headers

    def header(self, name: str) -> str:
        """One header's value, "" when absent."""
        return str(self._raw.headers.get(name, ""))

    @property
    def url(self) -> httpx.URL:
        """The URL that answered, after redirects."""
        return self._raw.url

    @property
    def host(self) -> str:
        return display_host(self._raw.url)

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.header("retry-after"))

    async def read(self, limit: int) -> bytes:
        """The whole body into `.content`; RegistryProtocolError past `limit` bytes."""
        if self._raw.request.method == "HEAD":
            return self.content
        declared = self.header("content-length")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(limit)
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            parts.append(chunk)
        self.content = b"".join(parts)
        return self.content

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces the connection delivers."""
        try:
            async for chunk in self._raw.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise translate(exc, self.host) from exc

    async def aclose(self) -> None:
        await self._raw.aclose()

    def _too_large(self, limit: int) -> RegistryProtocolError:
        return RegistryProtocolError(
            f"{self.host} sent a body over {limit} bytes where a small document was expected"
        )

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.host}{self._raw.url.path}>"


class Transport:
    """HTTP client for registries and token endpoints. Close it with `aclose()`.

    `dial_policy` judges every address connected to (the broker passes its SSRF policy; the
    default refuses only link-local, metadata, unspecified and multicast addresses);
    `resolve` is the resolver the guard asks, once per connection.
    """

    def __init__(
        self,
        *,
        ca_pem: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_redirects: int = MAX_REDIRECTS,
        dial_policy: DialPolicy = BASELINE,
        resolve: AsyncResolver = async_system_resolve,
    ) -> None:
        self._max_redirects = max_redirects
        backend = GuardedBackend(dial_policy, resolve=resolve)
        self._client = httpx.AsyncClient(
            transport=guarded_transport(ssl_context(ca_pem), backend),
            trust_env=False,
            cookies=no_cookies(),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            # Registries serve blobs and manifests as stored; a compressed encoding on top
            # would only cost CPU and could change the bytes we hash.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: QueryParams | None = None,
        authorization: Secret | None = None,
        limit: int = MANIFEST_LIMIT,
    ) -> Response:
        """Send and read the whole answer (at most `limit` bytes) into `.content`."""
        async with self.stream(
            method, url, headers=headers, params=params, authorization=authorization
        ) as response:
            await response.read(limit)
            return response

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: QueryParams | None = None,
        authorization: Secret | None = None,
    ) -> AsyncIterator[Response]:
        """Send, following redirects, and yield the answer with its body unread.

        Authorization goes in `authorization`, never in `headers`: only then is it kept a
        Secret and dropped when a redirect leaves the first origin.
        """
        if any(name.lower() == "authorization" for name in headers or {}):
            raise ValueError("pass the Authorization value as authorization=Secret(...)")
        hop = first_hop(str(_build_url(url, params)), authorization, method=method)
        raw = await self._follow(hop, headers or {})
        response = Response(raw)
        try:
            yield response
        finally:
            await response.aclose()

    async def _follow(self, hop: Hop, headers: Mapping[str, str]) -> httpx.Response:
        while True:
            try:
                raw = await self._send(hop, headers)
            except DialRefused as exc:
                if not hop.via:
                    raise
                raise exc.redirected_from(hop.via) from None
            if raw.status_code not in REDIRECT_STATUSES:
                return raw
            await raw.aclose()
            location = raw.headers.get("location")
            hop = next_hop(hop, raw.status_code, location, limit=self._max_redirects)

    async def _send(self, hop: Hop, headers: Mapping[str, str]) -> httpx.Response:
        all_headers = dict(headers)
        if hop.authorization is not None:
            all_headers["Authorization"] = hop.authorization.reveal()
        try:
            request = self._client.build_request(hop.method, hop.url, headers=all_headers)
            return await self._client.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise translate(exc, hop.host) from exc

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def translate(exc: Exception, host: str) -> RegistryError:
    """The registry error for an httpx failure talking to `host`."""
    if isinstance(exc, httpx.ConnectTimeout):
        return RegistryUnreachable(
            f"connecting to {host} timed out: check the address, port and any firewall between"
        )
    if isinstance(exc, httpx.TimeoutException):
        return RegistryUnreachable(f"{host} stopped answering (timed out): retry later")
    tls = _ssl_cause(exc)
    if tls is not None:
        return _tls_error(tls, host)
    if isinstance(exc, httpx.ConnectError):
        return RegistryUnreachable(
            f"cannot connect to {host} ({_reason(exc)}): check the URL and port,"
            " and that the registry is running and resolvable"
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return RegistryProtocolError(f"{host}: not an http(s) URL the client can use")
    if isinstance(exc, httpx.TransportError):
        return RegistryUnreachable(f"the connection to {host} failed ({_reason(exc)}): retry later")
    return RegistryProtocolError(f"talking to {host} failed ({type(exc).__name__})")


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        # Want-read/write are the TLS layer waiting for data, not a TLS failure.
        if isinstance(seen, ssl.SSLError) and not isinstance(
            seen, ssl.SSLWantReadError | ssl.SSLWantWriteError
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_error(error: ssl.SSLError, host: str) -> RegistryTLSError:
    if isinstance(error, ssl.SSLCertVerificationError):
        why = error.verify_message or "certificate verification failed"
        return RegistryTLSError(
            f"TLS to {host} failed: {why}; check the registry CA (registry_ca_pem)"
            f" and that the registry certificate names {host}"
        )
    reason = error.reason or type(error).__name__
    hint = (
        "is it serving plain HTTP? then use an http:// URL"
        if reason == "WRONG_VERSION_NUMBER"
        else "check that the registry speaks TLS 1.2+ and its certificate setup"
    )
    return RegistryTLSError(f"TLS handshake with {host} failed ({reason}): {hint}")


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"


def _build_url(url: str, params: QueryParams | None) -> httpx.URL:
    try:
        # Merge, not replace: a token realm may carry its own query parameters.
        return httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise RegistryProtocolError("not a valid URL: check the registry or realm URL") from exc
