"""An HTTPS reverse proxy in front of the real registry, for what it will not do on demand.

A handler on the harness HTTPSServer, which does the serving, recording and stalling.

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
from dataclasses import replace

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request
from tests.harness.registry import Registry

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
        self.server = HTTPSServer(self.handle, ca, name="frontdoor")
        self._upstream_tls = ssl.create_default_context(cadata=ca.pem)
        self.redirect_to: HTTPSServer | None = None
        self.revoke_first_token = False
        self.revoked: str | None = None
        self.blob_authorizations: list[str | None] = []
        self.rejected = 0
        self.stall_blobs = False
        self._lock = threading.Lock()

    def start(self) -> FrontDoor:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def stalled(self) -> threading.Event:
        """Set when a stalled blob body has sent its first half."""
        return self.server.stalled

    @property
    def release(self) -> threading.Event:
        """Set to let stalled blob bodies end (the connection closes short of the length)."""
        return self.server.release

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def url(self) -> str:
        return self.server.url()

    def handle(self, request: Request) -> Reply:
        if request.method == "GET" and _BLOB.match(request.url_path):
            reply = self.blob(request)
            return replace(reply, stall=self.stall_blobs and reply.status == 200)
        if request.method in ("GET", "HEAD"):
            return self.forward(request.method, request.path, request.headers)
        return Reply(405)

    def forward(self, method: str, path: str, headers: dict[str, str]) -> Reply:
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
            # A HEAD announces the size of the body a GET would send.
            length = int(resp.getheader("Content-Length") or 0) if method == "HEAD" else None
            return Reply(resp.status, kept, body, length=length)
        finally:
            conn.close()

    def blob(self, request: Request) -> Reply:
        """A blob GET: maybe revoked, maybe redirected, else forwarded."""
        authorization = request.authorization
        with self._lock:
            self.blob_authorizations.append(authorization)
            if self.revoke_first_token and self.revoked is None and authorization:
                self.revoked = authorization
            revoked = authorization is not None and authorization == self.revoked
            if revoked:
                self.rejected += 1
        if revoked:
            return _invalid_token()
        reply = self.forward("GET", request.path, request.headers)
        if self.redirect_to is None or reply.status != 200:
            return reply
        signed = f"/storage/{secrets.token_hex(8)}?X-Signature={secrets.token_hex(8)}"
        self.redirect_to.answers[signed] = Reply(200, body=reply.body)
        return Reply(307, {"Location": self.redirect_to.url("localhost") + signed})


def _invalid_token() -> Reply:
    challenge = 'Bearer realm="https://127.0.0.1/token",error="invalid_token"'
    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"token revoked"}]}'
    return Reply(401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, body)
