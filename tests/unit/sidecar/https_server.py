"""A tiny HTTPS server for sidecar tests: canned answers per path, every request recorded.

Not a registry stand-in: it exists to answer what a real registry will not do on demand
(redirect a blob to another host, send the wrong bytes) and to show what a client sent.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness.certs import TestCA


@dataclass(frozen=True)
class Answer:
    """What to send back for one path."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False
    """Send half the body, set the server's `stalled`, then wait for its `release`."""


@dataclass(frozen=True)
class Seen:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]


Route = Callable[["RecordingServer", str, dict[str, str]], Answer | None]


class RecordingServer:
    """HTTPS on 127.0.0.1 (certificate for 127.0.0.1 and localhost from the test CA)."""

    def __init__(self, ca: TestCA, name: str = "recorder") -> None:
        cert = ca.issue(name, dns=["localhost"], ips=["127.0.0.1"], client=False)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert.cert_path, cert.key_path)
        self.answers: dict[str, Answer] = {}
        self.route: Route | None = None
        self.seen: list[Seen] = []
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RecordingServer:
        handler = type("_Bound", (_Handler,), {"server_obj": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.socket = self._tls.wrap_socket(httpd.socket, server_side=True)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}"

    def answer(self, path: str, headers: dict[str, str]) -> Answer:
        with self._lock:
            self.seen.append(Seen("GET", path, headers))
        if self.route is not None:
            routed = self.route(self, path, headers)
            if routed is not None:
                return routed
        return self.answers.get(path, Answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}'))


class _Handler(BaseHTTPRequestHandler):
    server_obj: RecordingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        answer = self.server_obj.answer(self.path, {k.lower(): v for k, v in self.headers.items()})
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if answer.stall:
            self.wfile.write(answer.body[: len(answer.body) // 2])
            self.wfile.flush()
            self.server_obj.stalled.set()
            self.server_obj.release.wait(timeout=600)
            self.close_connection = True
            return
        self.wfile.write(answer.body)
