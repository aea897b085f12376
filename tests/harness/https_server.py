"""The one scriptable HTTP(S) server tests use for what a real server will not do on demand.

It runs `http.server` in a thread on 127.0.0.1 (port 0), with a certificate from the harness
CA (or plain HTTP, for downgrade tests). Every request is recorded (headers lowercased, body
read, chunked bodies decoded: Go clients send them) before it is answered, so a test that
reads `requests` after its answer arrived always finds it there. What it answers is chosen:

- by `handler(request) -> Reply`, when given;
- else by `route(server, request) -> Reply | None`, then `answers[path]`, then a 404.

A Reply can stream (`body_parts`), announce a length it will not send (`length` and
`close`), or `stall`: send half its body, set `stalled`, and wait for `release`. Fixtures
that are a protocol of their own (token server, cloud endpoints, the registry front door)
are handlers on top of this server, not servers of their own.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from tests.harness.certs import TestCA

MAX_BODY = 16 << 20
_STALL_SECONDS = 60.0
"""The longest a stalled reply waits for `release` (stop() releases it at once)."""


@dataclass(frozen=True)
class Request:
    """One request the server received. Header names are lowercase; `path` keeps the query."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def url_path(self) -> str:
        """The path without its query."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    @property
    def form(self) -> dict[str, list[str]]:
        """The body as an urlencoded form (empty for an empty body; blank fields dropped)."""
        return parse_qs(self.body.decode("utf-8", "replace"))

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    def json(self) -> Any:
        return json.loads(self.body)

    def one(self, name: str) -> str:
        """The single value of a form field (or query parameter), "" when absent."""
        values = self.form.get(name) or self.query.get(name) or [""]
        return values[0]

    def basic(self) -> tuple[str, str] | None:
        """(user, password) of a Basic Authorization header."""
        scheme, _, value = (self.authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None


@dataclass
class Reply:
    """What the server answers. `body_parts` streams a large body without joining it."""

    status: int = 200
    headers: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    body: bytes = b""
    body_parts: Callable[[], Iterator[bytes | memoryview]] | None = None
    length: int | None = None
    """The Content-Length to announce, when not len(body) (a HEAD's, or a lie)."""
    close: bool = False
    """Close the connection after this reply (to cut a body short of its Content-Length)."""
    stall: bool = False
    """Send half the body, set the server's `stalled`, then wait for its `release`."""


def json_reply(status: int, document: object, headers: dict[str, str] | None = None) -> Reply:
    """A JSON answer (Content-Type set)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    return Reply(status, sent, json.dumps(document).encode())


Handler = Callable[[Request], Reply]
Route = Callable[["HTTPSServer", Request], Reply | None]
NOT_FOUND = Reply(404, body=b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')


def server_context(ca: TestCA, name: str = "https-server") -> ssl.SSLContext:
    """A server TLS context: a fresh leaf from `ca` for localhost, registry.test, 127.0.0.1."""
    cert = ca.issue(
        f"{name}-{secrets.token_hex(4)}",
        # registry.test: a name only an injected resolver knows (the dial guard's pinning).
        dns=["localhost", "registry.test"],
        ips=["127.0.0.1"],
        client=False,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    return context


class HTTPSServer:
    """A threaded HTTP(S) server on 127.0.0.1: start()/stop(), or use it as a context manager.

    `tls` is the harness CA (a leaf is issued for this server), a ready server context, or
    None for plain HTTP.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        tls: TestCA | ssl.SSLContext | None = None,
        *,
        name: str = "https-server",
    ) -> None:
        self.handler = handler
        self.route: Route | None = None
        self.answers: dict[str, Reply] = {}
        self.requests: list[Request] = []
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        if isinstance(tls, TestCA):
            tls = server_context(tls, name)
        self.scheme = "https" if tls is not None else "http"
        self._httpd = _Server(("127.0.0.1", 0), _RequestHandler, self, tls)
        self._thread: threading.Thread | None = None

    def start(self) -> HTTPSServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); releases stalled replies first."""
        self.release.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> HTTPSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        """127.0.0.1:PORT"""
        return f"127.0.0.1:{self.port}"

    def url(self, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}"

    def count(self, path: str | None = None) -> int:
        """How many requests arrived (to `path`, without its query, when given)."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.url_path == path)

    def answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
        if self.handler is not None:
            return self.handler(request)
        if self.route is not None:
            routed = self.route(self, request)
            if routed is not None:
                return routed
        return self.answers.get(request.path, NOT_FOUND)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        owner: HTTPSServer,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.owner = owner
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the request's thread so a stuck client cannot block
        # accept(); a client aborting it (wrong-CA tests) is expected, not an error.
        sock: socket.socket = request
        sock.settimeout(10)
        if self.tls is None:
            super().finish_request(sock, client_address)
            return
        try:
            wrapped = self.tls.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(wrapped, client_address)
        except (ssl.SSLError, OSError):
            pass
        finally:
            wrapped.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request are normal in tests; stay quiet."""


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr access log: tests read `requests`."""

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        try:
            body = read_body(self.rfile, self.headers, MAX_BODY)
        except ValueError:
            self.close_connection = True
            self._send(json_reply(400, {"error": "invalid_request"}))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._send(self.server.owner.answer(Request(self.command, self.path, headers, body)))

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        pairs = reply.headers.items() if isinstance(reply.headers, dict) else reply.headers
        for name, value in pairs:
            self.send_header(name, value)
        size = reply.length if reply.length is not None else len(reply.body)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.close_connection = self.close_connection or reply.close
        if self.command == "HEAD":
            return
        if reply.stall:
            self._stall(reply.body)
        elif reply.body_parts is not None:
            for part in reply.body_parts():
                self.wfile.write(part)
        else:
            self.wfile.write(reply.body)

    def _stall(self, body: bytes) -> None:
        owner = self.server.owner
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        owner.stalled.set()
        owner.release.wait(timeout=_STALL_SECONDS)
        self.close_connection = True


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


def read_body(rfile: _Reader, headers: Message, limit: int) -> bytes:
    """The request body, by Content-Length or `Transfer-Encoding: chunked`; ValueError if bad."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return _read_chunked(rfile, limit)
    length = int(headers.get("Content-Length", "0") or "0")
    if length < 0 or length > limit:
        raise ValueError("body too large")
    data = rfile.read(length) if length else b""
    if len(data) != length:
        raise ValueError("body truncated")
    return data


def _read_chunked(rfile: _Reader, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise ValueError("bad chunk size line")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            _skip_trailers(rfile)
            return b"".join(chunks)
        total += size
        if total > limit:
            raise ValueError("body too large")
        data = rfile.read(size)
        if len(data) != size or rfile.read(2) != b"\r\n":
            raise ValueError("chunk truncated")
        chunks.append(data)


def _skip_trailers(rfile: _Reader) -> None:
    while True:
        line = rfile.readline(8192)
        if line in (b"\r\n", b"\n", b""):
            return
