"""Pooled keep-alive connections: reused while open, never trusted once the peer closed them.

Registries keep connections alive and close idle ones when they like (an idle timeout, a
load balancer), mostly without announcing it. The harness server does the same: HTTP/1.1
keep-alive, and `Reply(close=True)` closes after the answer without a `Connection: close`
header. Each connection is served on its own thread, so the thread's name tells
connections apart.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pullbroker_client.registry import mediatypes
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret
from pullbroker_sidecar.errors import PullCancelled
from pullbroker_sidecar.pull import fetch
from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import ACCEPT, Descriptor

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request

BLOB = b"keep-alive layer " * 20_000
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
DESCRIPTOR = Descriptor("application/vnd.oci.image.layer.v1.tar", DIGEST, len(BLOB))
BLOB_PATH = f"/v2/team/app/blobs/{DIGEST}"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
MANIFEST_PATH = "/v2/team/app/manifests/v1"
MANIFEST_HEADERS = {
    "Content-Type": mediatypes.OCI_MANIFEST,
    "Docker-Content-Digest": MANIFEST_DIGEST,
}
TOKEN = Secret("Bearer keepalive-unit-token")


class Registry:
    """Answers by (method, path); records which connection (server thread) each came on."""

    def __init__(self, server: HTTPSServer) -> None:
        self.connections: list[str] = []
        self.replies: dict[tuple[str, str], Reply] = {
            ("HEAD", BLOB_PATH): Reply(body=BLOB),
            ("GET", BLOB_PATH): Reply(body=BLOB),
            ("GET", MANIFEST_PATH): Reply(body=MANIFEST, headers=MANIFEST_HEADERS),
        }
        server.handler = self.answer

    def answer(self, request: Request) -> Reply:
        self.connections.append(threading.current_thread().name)
        return self.replies[(request.method, request.url_path)]


@pytest.fixture
def registry(server: HTTPSServer) -> Registry:
    return Registry(server)


@pytest.fixture
def fetcher(server: HTTPSServer, test_ca: TestCA) -> Iterator[BlobFetcher]:
    fetcher = BlobFetcher(server.url(), ssl_context(test_ca.pem), timeout=5)
    try:
        yield fetcher
    finally:
        fetcher.close()


def _head_get_get(fetcher: BlobFetcher, tmp_path: Path) -> None:
    """What the mirror does: HEAD a blob, GET a manifest, GET the blob into the store."""
    assert fetcher.blob_size("team/app", DIGEST, TOKEN) == len(BLOB)
    assert fetcher.fetch_manifest("team/app", "v1", ACCEPT, TOKEN).data == MANIFEST
    layout = OciLayout.open(tmp_path / "oci")
    with layout.blob_writer(DESCRIPTOR) as writer:
        fetcher.fetch("team/app", DESCRIPTOR, TOKEN, writer, cancel=threading.Event())
        writer.commit()
    assert layout.blob_path(DIGEST).read_bytes() == BLOB


class TestKeepAlive:
    def test_head_then_gets_share_one_connection(
        self, fetcher: BlobFetcher, registry: Registry, tmp_path: Path
    ) -> None:
        """A HEAD's answer has no body: its connection goes back to the pool, and the GETs
        after it (manifest, then a blob read to the end) reuse it."""
        _head_get_get(fetcher, tmp_path)
        assert fetcher.fetch_manifest("team/app", "v1", ACCEPT, TOKEN).data == MANIFEST
        assert len(registry.connections) == 4
        assert len(set(registry.connections)) == 1

    @pytest.mark.parametrize("announced", [False, True], ids=["silent", "connection-close"])
    @pytest.mark.parametrize("method", ["HEAD", "GET"])
    def test_connection_the_registry_closed_after_an_answer(
        self,
        fetcher: BlobFetcher,
        registry: Registry,
        tmp_path: Path,
        method: str,
        announced: bool,
    ) -> None:
        """The registry closes the connection after an answer, with `Connection: close` or
        without a word: the next requests go out on a new connection and succeed."""
        path = BLOB_PATH if method == "HEAD" else MANIFEST_PATH
        first = registry.replies[(method, path)]
        headers = {**dict(first.headers), **({"Connection": "close"} if announced else {})}
        registry.replies[(method, path)] = Reply(body=first.body, headers=headers, close=True)
        if method == "GET":
            assert fetcher.fetch_manifest("team/app", "v1", ACCEPT, TOKEN).data == MANIFEST
        _head_get_get(fetcher, tmp_path)
        assert registry.connections[0] != registry.connections[1]

    def test_request_on_a_connection_closed_after_the_check_is_sent_again(
        self,
        fetcher: BlobFetcher,
        registry: Registry,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The peer may close an idle connection between the pool's check and the request
        (an idle timeout firing just then): the request fails before any answer, and is
        sent once more on a new connection instead of failing the pull."""
        monkeypatch.setattr(fetch, "_reusable", lambda conn: conn.sock is not None)
        for key, reply in list(registry.replies.items()):
            registry.replies[key] = Reply(body=reply.body, headers=reply.headers, close=True)
        _head_get_get(fetcher, tmp_path)
        assert len(registry.connections) == 3
        assert len(set(registry.connections)) == 3

    def test_abort_wakes_a_read_on_a_connection_close_answer(
        self, server: HTTPSServer, test_ca: TestCA, registry: Registry, tmp_path: Path
    ) -> None:
        """An answer with `Connection: close` owns the socket (http.client takes it from
        the connection): abort() still shuts it down, so a stalled read ends at once."""
        # A long read timeout: only abort() can end the stalled read within the test.
        fetcher = BlobFetcher(server.url(), ssl_context(test_ca.pem), timeout=600)
        registry.replies[("GET", BLOB_PATH)] = Reply(
            body=BLOB, headers={"Connection": "close"}, stall=True
        )
        layout = OciLayout.open(tmp_path / "oci")
        failures: list[BaseException] = []

        def download() -> None:
            try:
                with layout.blob_writer(DESCRIPTOR) as writer:
                    fetcher.fetch("team/app", DESCRIPTOR, TOKEN, writer, cancel=threading.Event())
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=download)
        thread.start()
        try:
            assert server.stalled.wait(10)
            fetcher.abort()
            thread.join(5)
            assert not thread.is_alive()
            assert len(failures) == 1
            assert isinstance(failures[0], PullCancelled)
        finally:
            server.release.set()
            thread.join(10)
            fetcher.close()
