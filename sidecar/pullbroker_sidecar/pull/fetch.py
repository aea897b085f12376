"""Blob downloads on worker threads: blocking TLS sockets, large reads, no event loop.

Why not `RegistryClient.stream_blob`: measured on this project's 2-core machines, an
asyncio + httpx stream of a 256 MiB image took ~1.2-1.8 s and ~49 MiB RSS, while this
fetcher took ~0.45 s and ~26 MiB (skopeo: ~0.75 s). `ssl` reads, `hashlib` updates on
1 MiB buffers and file writes all release the GIL, so several threads keep both cores busy.

It follows the registry client's rules: trust is the explicit `SSLContext` given, never
the environment; a redirect to another origin (scheme, host, port) never carries
`Authorization`, and once dropped it is not sent again; only HTTPS is followed; every
connection (first hop and each redirect's target) passes the dial guard, which resolves
the host once and refuses link-local and metadata addresses before connecting; failed
answers become the registry client's error classes (401 -> AuthenticationRequired, which
the engine answers by asking the broker for a fresh token once).

Resuming: a sink that already holds the first N bytes (the node store keeps interrupted
downloads) is sent only `Range: bytes=N-`. The 206 is used only when it carries exactly
those bytes (Content-Range, or a Content-Length of size - N when a proxy dropped the
header); any other answer restarts the blob from byte 0. The digest check at commit
covers the whole blob either way.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from pullbroker_client.registry.addresses import BASELINE, DialPolicy
from pullbroker_client.registry.dial import CheckedHTTPSConnection, Resolver, system_resolve
from pullbroker_client.registry.errors import (
    BlobUnknown,
    ManifestUnknown,
    RegistryProtocolError,
    error_for_response,
)
from pullbroker_client.registry.verify import manifest_media_type, verified_digest
from pullbroker_client.secret import Secret

from pullbroker_sidecar.errors import PullCancelled
from pullbroker_sidecar.pull.fetch_errors import translate, unauthorized
from pullbroker_sidecar.pull.layout import BlobSink
from pullbroker_sidecar.pull.manifest import Descriptor

READ_SIZE = 1 << 20
MANIFEST_LIMIT = 4 << 20  # manifests and indexes are a few KiB; refuse to buffer more
MAX_REDIRECTS = 5
USER_AGENT = "pullbroker-sidecar/0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class _Step:
    """The fetcher's next move after one response."""

    stream: bool = False
    restart: bool = False
    location: str | None = None


_CONTENT_RANGE = re.compile(r"\Abytes (\d+)-(\d+)/(\d+|\*)\Z")


def _range_matches(resp: http.client.HTTPResponse, offset: int, size: int) -> bool:
    """A 206 that carries exactly bytes offset..size-1 (by Content-Range, else by length)."""
    content_range = resp.getheader("Content-Range")
    if content_range is not None:
        found = _CONTENT_RANGE.match(content_range.strip())
        if found is None:
            return False
        first, last, total = found.groups()
        return int(first) == offset and int(last) == size - 1 and total in ("*", str(size))
    length = resp.getheader("Content-Length")
    return length is not None and length.strip() == str(size - offset)


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index exactly as served, with its verified digest."""

    media_type: str
    digest: str
    data: bytes


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> _Origin:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise RegistryProtocolError(f"refusing to fetch a blob from non-HTTPS URL {_safe(url)}")
        return cls(parts.scheme, parts.hostname, parts.port or 443)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class BlobFetcher:
    """Fetches blobs of one registry into `BlobSink`s; safe to use from many threads."""

    def __init__(
        self,
        base_url: str,
        context: ssl.SSLContext,
        *,
        timeout: float = 30.0,
        read_size: int = READ_SIZE,
        dial_policy: DialPolicy = BASELINE,
        resolve: Resolver = system_resolve,
    ) -> None:
        self._base = base_url.rstrip("/")
        _Origin.of(self._base)
        self._context = context
        self._dial = dial_policy, resolve
        self._timeout = timeout
        self._read_size = read_size
        self._idle: dict[_Origin, list[http.client.HTTPSConnection]] = {}
        self._active: set[http.client.HTTPSConnection] = set()
        self._aborted = False
        self._lock = threading.Lock()

    def fetch(
        self,
        repository: str,
        descriptor: Descriptor,
        authorization: Secret | None,
        writer: BlobSink,
        *,
        cancel: threading.Event,
        on_bytes: Callable[[int], None] = lambda n: None,
    ) -> None:
        """Stream the blob into `writer` (not committed here); registry errors raise.

        A writer that already holds a prefix (an interrupted earlier pull) gets only the
        rest, asked for with `Range`; a registry that answers with the whole blob or
        another range makes the writer start over.
        """
        url = f"{self._base}/v2/{repository}/blobs/{descriptor.digest}"
        subject = f"blob {descriptor.digest} of {repository}"
        offset = writer.offset if 0 < writer.offset < descriptor.size else 0
        if offset == 0 and writer.offset:
            writer.restart()
        for _ in range(MAX_REDIRECTS + 2):  # one more for a range the registry refused
            origin = _Origin.of(url)
            conn, resp = self._request(origin, url, authorization, offset)
            try:
                step = self._answer(resp, url, origin, subject, descriptor, offset)
                if step.stream:
                    if step.restart:
                        writer.restart()
                        offset = 0
                    self._stream(resp, writer, cancel, on_bytes, origin)
                    self._release(origin, conn, resp)
                    return
                if step.location is not None and _Origin.of(step.location) != origin:
                    authorization = None  # never carry the token to another host
            except BaseException:
                self._drop(conn)
                raise
            if step.restart:  # the body was not read: this connection cannot be reused
                self._drop(conn)
                writer.restart()
                offset = 0
                continue
            url = step.location or url
            self._release(origin, conn, resp)
        raise RegistryProtocolError(f"more than {MAX_REDIRECTS} redirects for {subject}")

    def _answer(
        self,
        resp: http.client.HTTPResponse,
        url: str,
        origin: _Origin,
        subject: str,
        descriptor: Descriptor,
        offset: int,
    ) -> _Step:
        """What to do with a response: stream it, follow it, retry from 0, or raise."""
        if resp.status in _REDIRECTS:
            target = urljoin(url, resp.getheader("Location") or "")
            resp.read(_MAX_ERROR_BODY)
            return _Step(location=target)
        if resp.status == 401:
            raise unauthorized(resp, origin, subject)
        if offset and resp.status == 206:
            if _range_matches(resp, offset, descriptor.size):
                return _Step(stream=True)
            return _Step(restart=True)
        if offset and resp.status == 416:
            return _Step(restart=True)
        if resp.status != 200:
            body = resp.read(_MAX_ERROR_BODY)
            raise error_for_response(
                resp.status, body, host=str(origin), subject=subject, not_found=BlobUnknown
            )
        return _Step(stream=True, restart=offset > 0)  # the whole blob after all

    def fetch_manifest(
        self, repository: str, reference: str, accept: Sequence[str], authorization: Secret | None
    ) -> FetchedManifest:
        """GET a manifest or index, verified against the asked and announced digests."""
        url = f"{self._base}/v2/{repository}/manifests/{reference}"
        subject = f"manifest {reference} of {repository}"
        for _ in range(MAX_REDIRECTS + 1):
            origin = _Origin.of(url)
            conn, resp = self._request(origin, url, authorization, accept=accept)
            try:
                if resp.status in _REDIRECTS:
                    target = urljoin(url, resp.getheader("Location") or "")
                    resp.read(_MAX_ERROR_BODY)
                    if _Origin.of(target) != origin:
                        authorization = None  # never carry the token to another host
                    self._release(origin, conn, resp)
                    url = target
                    continue
                manifest = self._manifest_answer(resp, origin, reference, subject)
            except BaseException:
                self._drop(conn)
                raise
            self._release(origin, conn, resp)
            return manifest
        raise RegistryProtocolError(f"more than {MAX_REDIRECTS} redirects for {subject}")

    def _manifest_answer(
        self, resp: http.client.HTTPResponse, origin: _Origin, reference: str, subject: str
    ) -> FetchedManifest:
        if resp.status == 401:
            raise unauthorized(resp, origin, subject)
        try:
            data = resp.read(MANIFEST_LIMIT + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise self._translate(exc, origin) from None
        if resp.status != 200:
            raise error_for_response(
                resp.status, data[:_MAX_ERROR_BODY], host=str(origin), subject=subject,
                not_found=ManifestUnknown,
            )  # fmt: skip
        if len(data) > MANIFEST_LIMIT:
            raise RegistryProtocolError(f"{subject} is larger than {MANIFEST_LIMIT} bytes")
        announced = resp.getheader("Docker-Content-Digest")
        digest = verified_digest(announced, str(origin), reference, data, subject)
        return FetchedManifest(
            manifest_media_type(resp.getheader("Content-Type"), data), digest, data
        )

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            conns = [c for pool in self._idle.values() for c in pool]
            self._idle.clear()
        for conn in conns:
            conn.close()

    def abort(self) -> None:
        """Stop every download now, from any thread: blocked reads return at once.

        A stalled registry must not hold up Ctrl-C or the clean-up after another blob
        failed for a whole read timeout; shutting the sockets down wakes the readers.
        """
        with self._lock:
            self._aborted = True
            active = list(self._active)
        for conn in active:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _request(
        self,
        origin: _Origin,
        url: str,
        authorization: Secret | None,
        offset: int = 0,
        *,
        accept: Sequence[str] = (),
    ) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if accept:
            headers["Accept"] = ", ".join(accept)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        if authorization is not None:
            headers["Authorization"] = authorization.reveal()
        conn = self._connection(origin)
        try:
            conn.request("GET", target, headers=headers)
            return conn, conn.getresponse()
        except BaseException as exc:
            self._drop(conn)
            raise self._translate(exc, origin) from None

    def _stream(
        self,
        resp: http.client.HTTPResponse,
        writer: BlobSink,
        cancel: threading.Event,
        on_bytes: Callable[[int], None],
        origin: _Origin,
    ) -> None:
        buffer = memoryview(bytearray(self._read_size))
        while True:
            if cancel.is_set():
                raise PullCancelled("blob download stopped: the pull is being abandoned")
            try:
                n = resp.readinto(buffer)
            except (OSError, http.client.HTTPException) as exc:
                raise self._translate(exc, origin) from None
            if not n:
                return
            writer.write(buffer[:n])
            on_bytes(n)

    def _connection(self, origin: _Origin) -> http.client.HTTPSConnection:
        with self._lock:
            if self._aborted:
                raise PullCancelled("blob download stopped: the pull is being abandoned")
            pool = self._idle.get(origin)
            conn = pool.pop() if pool else None
            if conn is None:
                policy, resolve = self._dial
                conn = CheckedHTTPSConnection(
                    origin.host, origin.port, timeout=self._timeout, context=self._context,
                    policy=policy, resolve=resolve,
                )  # fmt: skip
            self._active.add(conn)
            return conn

    def _drop(self, conn: http.client.HTTPSConnection) -> None:
        with self._lock:
            self._active.discard(conn)
        conn.close()

    def _translate(self, exc: BaseException, origin: _Origin) -> BaseException:
        if self._aborted and isinstance(exc, OSError | http.client.HTTPException):
            return PullCancelled("blob download stopped: the pull is being abandoned")
        return translate(exc, origin)

    def _release(
        self, origin: _Origin, conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse
    ) -> None:
        if resp.will_close or not resp.isclosed():
            self._drop(conn)
            return
        with self._lock:
            self._active.discard(conn)
            self._idle.setdefault(origin, []).append(conn)


def _safe(url: str) -> str:
    """The URL without its query string, which may hold a storage signature."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
