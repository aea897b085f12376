"""Plumbing for the cloud endpoint fixtures: a small threaded HTTPS JSON server, and a real
distribution registry whose token realm is one of those fixtures.

The fixtures stand in for endpoints that cannot run on this machine (Google's OAuth token
endpoint and registry token service, Azure AD, ACR's token service). The registry in front
of them is the real `docker-registry`: it verifies the tokens the fixtures sign, so a test
that pulls with a minted token proves the registry accepted it.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.harness.certs import TestCA
from tests.harness.grants import GrantsTable, Scope
from tests.harness.images import build_image
from tests.harness.jwt_signer import Access, TokenSigner
from tests.harness.registry import Registry
from tests.harness.skopeo import push_image
from tests.harness.token_wire import read_body


@dataclass
class Reply:
    """What a fixture answers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    """One request a fixture served (form/query keys only: values may be secrets)."""

    method: str
    path: str
    keys: tuple[str, ...]
    status: int
    grant_type: str | None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    authorization: str | None

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


class JsonHttpsServer:
    """A threaded HTTPS server on 127.0.0.1 answering JSON; subclasses implement `handle`."""

    def __init__(self, ca: TestCA, name: str) -> None:
        issued = ca.issue(name, dns=["localhost"], ips=["127.0.0.1"], client=False)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(issued.cert_path, issued.key_path)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._failures: list[Reply] = []

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def fail_next(self, reply: Reply) -> None:
        """Answer the next request with `reply` instead of handling it."""
        with self._lock:
            self._failures.append(reply)

    def answer(self, request: Request) -> Reply:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        return failure if failure is not None else self.handle(request)

    def start(self) -> JsonHttpsServer:
        handler = type("_Bound", (_Handler,), {"fixture": self})
        self._httpd = _Server(("127.0.0.1", 0), handler, self._tls)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def host(self) -> str:
        """127.0.0.1:PORT"""
        assert self._httpd is not None, "fixture is not running"
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def seen(self, path: str | None = None) -> list[Seen]:
        """Requests served so far (optionally only those to `path`)."""
        with self._lock:
            return [s for s in self._seen if path is None or s.path == path]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._failures.clear()

    def _record(self, request: Request, reply: Reply) -> None:
        keys = tuple(sorted({*request.form, *request.query}))
        entry = Seen(
            request.method, request.path, keys, reply.status, request.one("grant_type") or None
        )
        with self._lock:
            self._seen.append(entry)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, tls: ssl.SSLContext) -> None:
        self._tls = tls
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        sock.settimeout(10)
        try:
            wrapped = self._tls.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(wrapped, client_address)
        except (ssl.SSLError, OSError):
            pass
        finally:
            wrapped.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up are normal in tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fixture: JsonHttpsServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._serve({})

    def do_POST(self) -> None:
        try:
            body = read_body(self.rfile, self.headers, 1 << 20)
        except ValueError:
            self._send(Reply(400, {"error": "invalid_request"}))
            return
        self._serve(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))

    def _serve(self, form: dict[str, list[str]]) -> None:
        parts = urlsplit(self.path)
        request = Request(
            self.command, parts.path, parse_qs(parts.query), form, self.headers.get("Authorization")
        )
        reply = self.fixture.answer(request)
        # Recorded before the answer goes out, so a test reading the log after its answer
        # arrived always finds this request there.
        self.fixture._record(request, reply)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class RegistryTokens:
    """Signs registry tokens the way a cloud registry's token service would: for a principal,
    the scopes asked for, intersected with that principal's grants (GrantsTable semantics)."""

    def __init__(self, ca: TestCA, *, service: str, issuer: str, ttl: int = 600) -> None:
        self.signer = TokenSigner(ca, issuer=issuer, service=service)
        self.grants = GrantsTable()
        self.service = service
        self.ttl = ttl

    def sign(self, principal: str, scopes: list[str]) -> tuple[str, dict[str, Any]]:
        access = []
        for text in scopes:
            for part in text.split(" "):
                scope = Scope.parse(part)
                allowed = self.grants.allowed(principal, scope) if scope else ()
                if scope and allowed:
                    access.append(Access(scope.type, scope.name, allowed))
        return self.signer.sign(principal, access, ttl=self.ttl)


class RealmRegistry(Registry):
    """The real distribution registry, token auth against a fixture realm and signer."""

    kind = "token"

    def __init__(self, workdir: Path, ca: TestCA, *, realm: str, tokens: RegistryTokens) -> None:
        super().__init__(workdir, ca)
        self.realm = realm
        self.tokens = tokens

    def _auth_config(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": self.tokens.service,
                "issuer": self.tokens.signer.issuer,
                "rootcertbundle": str(self.tokens.signer.bundle_path),
            }
        }


UNAUTHORIZED = Reply(
    401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
)


def seed_image(registry: RealmRegistry, tokens: RegistryTokens, layouts: Path) -> str:
    """Push team/app:v1 (one small layer) as a `pusher` user; returns its digest."""
    password = secrets.token_hex(16)
    tokens.grants.add_user("pusher", password, {"team/**": ["*"]})
    image = build_image(layouts, "app-v1", [1024])
    return push_image(image, registry, "team/app", "v1", username="pusher", password=password)
