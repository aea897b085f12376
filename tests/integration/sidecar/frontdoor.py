"""An HTTPS reverse proxy in front of the real registry, for what it will not do on demand.

Everything is forwarded to the registry unchanged (auth is still the registry's and the
token server's), except, when asked:
- `redirect_to`: blob GETs are answered with a 307 to another host (`localhost`, a
  different origin), which serves the registry's bytes and records the headers it got,
  the way registries hand blobs to object storage;
- `revoke_first_token`: the first bearer token seen on a blob GET is treated as revoked
  (401 invalid_token, as a registry says for a token it no longer accepts), so a client
  must get a fresh one mid-pull;
- `stall_blobs`: blob bodies stop half-way (`stalled` is set) until `release` is set, so a
  test can interrupt a pull while bytes are in flight.
"""

from __future__ import annotations

import http.client
import re
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness.certs import TestCA
from tests.harness.registry import Registry
from tests.unit.sidecar.https_server import Answer, RecordingServer

_BLOB = re.compile(r"^/v2/.+/blobs/sha256:[a-f0-9]{64}$")
_FORWARD_REQUEST = ("authorization", "accept", "range", "user-agent")
_FORWARD_RESPONSE = (
    "content-type",
    "docker-content-digest",
    "www-authenticate",
    "location",
    "docker-distribution-api-version",
)


class FrontDoor:
    """A proxy on 127.0.0.1 for `registry`; `url`/`host` are what the broker record uses."""

    def __init__(self, registry: Registry, ca: TestCA) -> None:
        self.registry = registry
        cert = ca.issue("frontdoor", dns=["localhost"], ips=["127.0.0.1"], client=False)
        self._server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_tls.load_cert_chain(cert.cert_path, cert.key_path)
        self._upstream_tls = ssl.create_default_context(cadata=ca.pem)
        self.redirect_to: RecordingServer | None = None
        self.revoke_first_token = False
        self.revoked: str | None = None
        self.blob_authorizations: list[str | None] = []
        self.rejected = 0
        self.stall_blobs = False
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FrontDoor:
        handler = type("_Bound", (_Handler,), {"door": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.socket = self._server_tls.wrap_socket(httpd.socket, server_side=True)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def host(self) -> str:
        assert self._httpd is not None
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def forward(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        """Send the request to the registry and return its answer."""
        conn = http.client.HTTPSConnection(
            "127.0.0.1", int(self.registry.host.rsplit(":", 1)[1]), context=self._upstream_tls
        )
        try:
            sent = {k: v for k, v in headers.items() if k in _FORWARD_REQUEST}
            conn.request(method, path, headers=sent)
            resp = conn.getresponse()
            body = resp.read()
            kept = {k: v for k, v in resp.getheaders() if k.lower() in _FORWARD_RESPONSE}
            if method == "HEAD":  # the size of the body a GET would send
                kept["X-Length"] = resp.getheader("Content-Length") or "0"
            return Answer(resp.status, body, kept)
        finally:
            conn.close()

    def blob(self, path: str, headers: dict[str, str]) -> Answer:
        """A blob GET: maybe revoked, maybe redirected, else forwarded."""
        authorization = headers.get("authorization")
        with self._lock:
            self.blob_authorizations.append(authorization)
            if self.revoke_first_token and self.revoked is None and authorization:
                self.revoked = authorization
            revoked = authorization is not None and authorization == self.revoked
            if revoked:
                self.rejected += 1
        if revoked:
            return _invalid_token()
        answer = self.forward("GET", path, headers)
        if self.redirect_to is None or answer.status != 200:
            return answer
        signed = f"/storage/{secrets.token_hex(8)}?X-Signature={secrets.token_hex(8)}"
        self.redirect_to.answers[signed] = Answer(200, answer.body)
        return Answer(307, b"", {"Location": self.redirect_to.url("localhost") + signed})


def _invalid_token() -> Answer:
    challenge = 'Bearer realm="https://127.0.0.1/token",error="invalid_token"'
    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"token revoked"}]}'
    return Answer(401, body, {"WWW-Authenticate": challenge, "Content-Type": "application/json"})


class _Handler(BaseHTTPRequestHandler):
    door: FrontDoor
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        if _BLOB.match(self.path.split("?", 1)[0]):
            answer = self.door.blob(self.path, headers)
            if self.door.stall_blobs and answer.status == 200:
                self._stall(answer)
            else:
                self._send(answer, body=True)
        else:
            self._send(self.door.forward("GET", self.path, headers), body=True)

    def do_HEAD(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._send(self.door.forward("HEAD", self.path, headers), body=False)

    def _stall(self, answer: Answer) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body[: len(answer.body) // 2])
        self.wfile.flush()
        self.door.stalled.set()
        self.door.release.wait(timeout=30)
        self.close_connection = True

    def _send(self, answer: Answer, *, body: bool) -> None:
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            if key != "X-Length":
                self.send_header(key, value)
        length = len(answer.body) if body else answer.headers.get("X-Length", "0")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if body:
            self.wfile.write(answer.body)
