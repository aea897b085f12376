"""The node's fetcher follows redirects by the registry rules, for manifests and blobs alike.

Each test runs on both paths a node pulls through (a manifest GET and a blob download)
against real HTTPS servers on 127.0.0.1: the registry, and another origin (another port,
or another name for it) standing in for object storage, which records what arrived.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pullbroker_client.registry.errors import RegistryProtocolError
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret
from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply

TOKEN = Secret("Bearer redirect-canary-31d9")
MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
).encode()
BLOB = b"blob bytes " * 10_000


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Route:
    """One of the two things a node fetches: where the registry serves it, and how to get it."""

    name: str
    path: str
    body: bytes
    fetch: Callable[[BlobFetcher, Path], bytes]


def _manifest(fetcher: BlobFetcher, tmp: Path) -> bytes:
    return fetcher.fetch_manifest("team/app", "v1", ["application/json"], TOKEN).data


def _blob(fetcher: BlobFetcher, tmp: Path) -> bytes:
    descriptor = Descriptor("application/octet-stream", _digest(BLOB), len(BLOB))
    layout = OciLayout.open(tmp / "oci")
    with layout.blob_writer(descriptor) as writer:
        fetcher.fetch("team/app", descriptor, TOKEN, writer, cancel=threading.Event())
        writer.commit()
    return layout.blob_path(descriptor.digest).read_bytes()


ROUTES = [
    Route("manifest", "/v2/team/app/manifests/v1", MANIFEST, _manifest),
    Route("blob", f"/v2/team/app/blobs/{_digest(BLOB)}", BLOB, _blob),
]


@pytest.fixture(params=ROUTES, ids=[r.name for r in ROUTES])
def route(request: pytest.FixtureRequest) -> Route:
    """Each test runs once for a manifest and once for a blob."""
    chosen: Route = request.param
    return chosen


def _get(route: Route, server: HTTPSServer, ca: TestCA, tmp: Path) -> bytes:
    fetcher = BlobFetcher(server.url(), ssl_context(ca.pem), timeout=5)
    try:
        return route.fetch(fetcher, tmp)
    finally:
        fetcher.close()


class TestAuthorizationOnRedirect:
    """The registry's token goes to the registry's own origin only."""

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
    def test_other_origin_gets_no_authorization(
        self,
        route: Route,
        host: str,
        server: HTTPSServer,
        other: HTTPSServer,
        test_ca: TestCA,
        tmp_path: Path,
    ) -> None:
        """Redirected to another port (and name): the content arrives, the token does not."""
        server.answers[route.path] = Reply(
            307, headers={"Location": other.url(host) + "/bucket/x?sig=abc"}
        )
        other.answers["/bucket/x?sig=abc"] = Reply(body=route.body)
        assert _get(route, server, test_ca, tmp_path) == route.body
        assert server.requests[0].headers["authorization"] == TOKEN.reveal()
        [arrived] = other.requests
        assert arrived.path == "/bucket/x?sig=abc"
        assert "authorization" not in arrived.headers

    def test_same_origin_keeps_authorization(
        self, route: Route, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A redirect within the registry's origin still carries the token."""
        server.answers[route.path] = Reply(302, headers={"Location": "/moved"})
        server.answers["/moved"] = Reply(body=route.body)
        assert _get(route, server, test_ca, tmp_path) == route.body
        assert [s.headers.get("authorization") for s in server.requests] == [TOKEN.reveal()] * 2

    def test_back_at_the_registry_it_stays_dropped(
        self,
        route: Route,
        server: HTTPSServer,
        other: HTTPSServer,
        test_ca: TestCA,
        tmp_path: Path,
    ) -> None:
        """registry -> storage -> registry: the registry's second request has no token."""
        server.answers[route.path] = Reply(307, headers={"Location": other.url() + "/hop"})
        other.answers["/hop"] = Reply(307, headers={"Location": server.url() + "/final"})
        server.answers["/final"] = Reply(body=route.body)
        assert _get(route, server, test_ca, tmp_path) == route.body
        assert [s.path for s in server.requests] == [route.path, "/final"]
        assert "authorization" not in server.requests[1].headers
        assert "authorization" not in other.requests[0].headers


class TestRefusedRedirects:
    """Redirects the fetcher does not follow: nothing more is sent."""

    def test_downgrade_to_plain_http(
        self, route: Route, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """https -> http is refused before anything is sent to the plain-HTTP URL."""
        server.answers[route.path] = Reply(307, headers={"Location": "http://127.0.0.1:1/x"})
        with pytest.raises(RegistryProtocolError, match="refusing the downgrade"):
            _get(route, server, test_ca, tmp_path)

    def test_without_location(
        self, route: Route, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A redirect with no Location fails at once, naming the registry (one request)."""
        server.answers[route.path] = Reply(302)
        with pytest.raises(RegistryProtocolError, match=f"127.0.0.1:{server.port}"):
            _get(route, server, test_ca, tmp_path)
        assert len(server.requests) == 1

    def test_too_many_redirects(
        self, route: Route, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """Five redirects are followed, the sixth is refused: six requests in all."""
        server.answers[route.path] = Reply(302, headers={"Location": "/again"})
        server.answers["/again"] = Reply(302, headers={"Location": "/again"})
        with pytest.raises(RegistryProtocolError, match="more than 5"):
            _get(route, server, test_ca, tmp_path)
        assert len(server.requests) == 6
