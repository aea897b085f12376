"""A registry front that announces a Docker Hub pull quota (a fixture, not a real registry).

distribution never sends Docker Hub's `ratelimit-limit` / `ratelimit-remaining` headers, so
this handler on the harness HTTPSServer does: GET /v2/ answers 200 (an open registry, as a
public kind sees it) and GET /v2/<repo>/tags/list answers one tag with the quota headers Docker Hub
documents (`100;w=21600`). Every request is recorded.
"""

from __future__ import annotations

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request, json_reply

LIMIT = 100
WINDOW = 21600


class QuotaStub:
    """The fixture server; `remaining` is what the next answer announces."""

    def __init__(self, ca: TestCA, remaining: int) -> None:
        self.remaining = remaining
        self.server = HTTPSServer(self.handle, ca, name="quota-stub")

    @property
    def paths(self) -> list[str]:
        """The path (without query) of every request, in order."""
        return [r.url_path for r in self.server.requests]

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def url(self) -> str:
        return self.server.url()

    def start(self) -> QuotaStub:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def handle(self, request: Request) -> Reply:
        if request.path == "/v2/":
            return json_reply(200, {})
        repository = request.path.removeprefix("/v2/").split("/tags/list")[0]
        window = f";w={WINDOW}"
        quota = {
            "ratelimit-limit": f"{LIMIT}{window}",
            "ratelimit-remaining": f"{self.remaining}{window}",
            "docker-ratelimit-source": "192.0.2.1",
        }
        return json_reply(200, {"name": repository, "tags": ["v1"]}, quota)
