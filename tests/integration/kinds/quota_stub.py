"""A registry front that announces a Docker Hub pull quota (a fixture, not a real registry).

distribution never sends Docker Hub's `ratelimit-limit` / `ratelimit-remaining` headers, so
this small HTTPS handler does: GET /v2/ answers 200 (an open registry, as a public kind
sees it) and GET /v2/<repo>/tags/list answers one tag with the quota headers Docker Hub
documents (`100;w=21600`). Every request is recorded.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.harness.certs import TestCA
from tests.harness.token_wire import TLSServer

LIMIT = 100
WINDOW = 21600


class QuotaStub:
    """The fixture server; `remaining` is what the next answer announces."""

    def __init__(self, ca: TestCA, remaining: int) -> None:
        self.remaining = remaining
        self.paths: list[str] = []
        cert = ca.issue(f"quota-stub-{secrets.token_hex(4)}", ips=["127.0.0.1"], client=False)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert.cert_path, cert.key_path)
        handler = type("_Handler", (_Handler,), {"stub": self})
        self._httpd = TLSServer(("127.0.0.1", 0), handler, context)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def start(self) -> QuotaStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    stub: QuotaStub

    def do_GET(self) -> None:
        self.stub.paths.append(self.path.split("?")[0])
        if self.path == "/v2/":
            self._answer({}, {})
            return
        repository = self.path.removeprefix("/v2/").split("/tags/list")[0]
        window = f";w={WINDOW}"
        quota = {
            "ratelimit-limit": f"{LIMIT}{window}",
            "ratelimit-remaining": f"{self.stub.remaining}{window}",
            "docker-ratelimit-source": "192.0.2.1",
        }
        self._answer({"name": repository, "tags": ["v1"]}, quota)

    def _answer(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `paths`."""
