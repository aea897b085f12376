"""The token server's HTTP side: TLS listener, request handler, bodies, recorded requests.

http.server does not decode `Transfer-Encoding: chunked`, which Go clients (skopeo, podman)
use for the OAuth2 POST, so bodies are read here by hand.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

_MAX_BODY = 1 << 20


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
    data = rfile.read(length)
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


@dataclass(frozen=True)
class TokenRequest:
    """What the token server saw for one request (no secrets)."""

    method: str
    user: str | None
    scopes: tuple[str, ...]
    status: int
    had_authorization: bool
    grant_type: str | None = None
    offline: bool = False
    service: str | None = None
    chunked: bool = False
    jti: str | None = None


@dataclass
class Failure:
    """An injected failure still to be served."""

    status: int
    remaining: int
    retry_after: int | None


@dataclass
class Outcome:
    """The response to send and what to record about it."""

    status: int
    body: dict[str, Any]
    user: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    jti: str | None = None


class Unauthorized(Exception):
    """Bad or unknown credentials; carries the claimed user name (never the password)."""

    def __init__(self, user: str | None = None) -> None:
        super().__init__("unauthorized")
        self.user = user


class TokenBackend(Protocol):
    """What the handler needs from the token server."""

    def next_failure(self) -> Failure | None: ...

    def record(self, entry: TokenRequest) -> None: ...

    def handle_get(self, query: dict[str, list[str]], authorization: str | None) -> Outcome: ...

    def handle_post(self, form: dict[str, list[str]]) -> Outcome: ...


class TLSServer(ThreadingHTTPServer):
    """A threading HTTPS server that does each TLS handshake in the request's thread."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], ctx: ssl.SSLContext
    ) -> None:
        self._ctx = ctx
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the handler thread so a stuck client cannot block accept().
        sock: socket.socket = request
        sock.settimeout(10)
        try:
            tls = self._ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        except (ssl.SSLError, OSError):
            pass
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request are normal in tests; stay quiet."""


class TokenHandler(BaseHTTPRequestHandler):
    """Serves /token for the `backend` bound by TokenServer.start()."""

    protocol_version = "HTTP/1.1"
    backend: TokenBackend
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        auth = self.headers.get("Authorization")
        self._serve("GET", query, lambda: self.backend.handle_get(query, auth))

    def do_POST(self) -> None:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        try:
            body = read_body(self.rfile, self.headers, _MAX_BODY)
        except ValueError:
            self._send(Outcome(400, {"error": "invalid_request"}))
            self.close_connection = True
            return
        form = parse_qs(body.decode("utf-8", "replace"))
        # OAuth2 sends scopes space-separated in one field.
        form["scope"] = [s for f in form.get("scope", []) for s in f.split(" ") if s]
        self._serve("POST", form, lambda: self.backend.handle_post(form), chunked=chunked)

    def _serve(
        self,
        method: str,
        params: dict[str, list[str]],
        run: Callable[[], Outcome],
        *,
        chunked: bool = False,
    ) -> None:
        outcome = self._outcome(run)
        # Recorded before the answer goes out: a client that clears the log after its answer
        # arrived must never see this request appear afterwards.
        self.backend.record(
            TokenRequest(
                method=method,
                user=outcome.user,
                scopes=tuple(params.get("scope", [])),
                status=outcome.status,
                had_authorization="Authorization" in self.headers,
                grant_type=params.get("grant_type", [None])[0],
                offline=params.get("offline_token", [""])[0] == "true"
                or params.get("access_type", [""])[0] == "offline",
                service=params.get("service", [None])[0],
                chunked=chunked,
                jti=outcome.jti,
            )
        )
        self._send(outcome)

    def _outcome(self, run: Callable[[], Outcome]) -> Outcome:
        if urlsplit(self.path).path != "/token":
            return Outcome(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        failure = self.backend.next_failure()
        if failure is not None:
            return _failure_outcome(failure)
        try:
            return run()
        except Unauthorized as exc:
            return Outcome(401, _UNAUTHORIZED_BODY, user=exc.user)

    def _send(self, outcome: Outcome) -> None:
        data = json.dumps(outcome.body).encode()
        self.send_response(outcome.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


_UNAUTHORIZED_BODY = {
    "errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}],
    "details": "incorrect username or password",
}


def _failure_outcome(failure: Failure) -> Outcome:
    headers = {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
    code = "TOOMANYREQUESTS" if failure.status == 429 else "UNAVAILABLE"
    body = {"errors": [{"code": code, "message": f"injected failure {failure.status}"}]}
    return Outcome(failure.status, body, headers=headers)
