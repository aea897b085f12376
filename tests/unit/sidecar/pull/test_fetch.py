"""The threaded blob fetcher: verified writes, error mapping, the dial guard.

(Redirects, for blobs and manifests alike: test_fetch_redirects.py; manifests:
test_fetch_manifest.py.)
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    BlobUnknown,
    DialRefused,
    RegistryTLSError,
)
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret
from pullbroker_sidecar.errors import DigestMismatch, PullCancelled
from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply
from tests.harness.loopback_only import LoopbackOnly, named_server

BLOB = b"layer bytes " * 50_000
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
DESCRIPTOR = Descriptor("application/vnd.oci.image.layer.v1.tar", DIGEST, len(BLOB))
PATH = f"/v2/team/app/blobs/{DIGEST}"
TOKEN = Secret("Bearer sidecar-unit-token")


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[LoopbackOnly]:
    """A guard that lets a refused address through fails here, before any packet leaves."""
    with LoopbackOnly() as guard:
        yield guard


def _fetch(server: HTTPSServer, ca: TestCA, layout: OciLayout, read_size: int = 1 << 20) -> None:
    fetcher = BlobFetcher(server.url(), ssl_context(ca.pem), timeout=5, read_size=read_size)
    try:
        with layout.blob_writer(DESCRIPTOR) as writer:
            fetcher.fetch("team/app", DESCRIPTOR, TOKEN, writer, cancel=threading.Event())
            writer.commit()
    finally:
        fetcher.close()


def _names(layout: OciLayout) -> list[str]:
    return sorted(p.name for p in layout.blobs_dir.rglob("*") if p.is_file())


class TestFetch:
    def test_stores_a_verified_blob(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A blob whose bytes match its descriptor lands under blobs/sha256/<hex>, token sent."""
        server.answers[PATH] = Reply(body=BLOB)
        layout = OciLayout.open(tmp_path / "oci")
        _fetch(server, test_ca, layout, read_size=4096)
        assert layout.blob_path(DIGEST).read_bytes() == BLOB
        assert _names(layout) == [DIGEST.split(":")[1]]
        assert server.requests[0].headers["authorization"] == TOKEN.reveal()

    def test_wrong_bytes_are_never_committed(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """Same size, different content: DigestMismatch naming the blob; no file remains."""
        server.answers[PATH] = Reply(body=BLOB[:-1] + b"X")
        layout = OciLayout.open(tmp_path / "oci")
        with pytest.raises(DigestMismatch, match=DIGEST):
            _fetch(server, test_ca, layout)
        assert _names(layout) == []

    def test_short_body_is_never_committed(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A complete answer shorter than the descriptor's size fails on size; no file remains."""
        server.answers[PATH] = Reply(body=BLOB[:100])
        layout = OciLayout.open(tmp_path / "oci")
        with pytest.raises(DigestMismatch, match="100 bytes"):
            _fetch(server, test_ca, layout)
        assert _names(layout) == []

    def test_401_is_authentication_required(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A 401 surfaces as AuthenticationRequired so the engine can refresh the token."""
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        server.answers[PATH] = Reply(401, body=body)
        with pytest.raises(AuthenticationRequired):
            _fetch(server, test_ca, OciLayout.open(tmp_path / "oci"))

    def test_404_is_blob_unknown(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A missing blob is BlobUnknown naming the digest."""
        with pytest.raises(BlobUnknown, match=DIGEST):
            _fetch(server, test_ca, OciLayout.open(tmp_path / "oci"))

    def test_untrusted_certificate_is_a_tls_error(
        self, server: HTTPSServer, tmp_path: Path
    ) -> None:
        """Only the CA given is trusted, whatever the environment says."""
        stranger = TestCA.create(tmp_path / "other-ca", "stranger")
        with pytest.raises(RegistryTLSError):
            _fetch(server, stranger, OciLayout.open(tmp_path / "oci"))

    def test_cancel_stops_and_cleans_up(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A cancelled download raises PullCancelled and leaves no temp file."""
        server.answers[PATH] = Reply(body=BLOB)
        layout = OciLayout.open(tmp_path / "oci")
        fetcher = BlobFetcher(server.url(), ssl_context(test_ca.pem), timeout=5)
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(PullCancelled), layout.blob_writer(DESCRIPTOR) as writer:
            fetcher.fetch("team/app", DESCRIPTOR, TOKEN, writer, cancel=cancel)
        fetcher.close()
        assert _names(layout) == []


class TestDialGuard:
    """Every connection the fetcher opens passes the dial guard: redirect targets that are
    link-local or metadata addresses are refused before any connect (names resolve through
    an injected resolver, so nothing leaves this host)."""

    @pytest.mark.parametrize(
        "answers",
        [
            ["169.254.169.254"],
            ["fd00:ec2::254"],
            ["64:ff9b::a9fe:a9fe"],  # metadata through NAT64
            ["127.0.0.1", "169.254.170.2"],  # one good answer does not save the host
            ["fe80::1"],
        ],
    )
    @pytest.mark.parametrize("hops", [1, 2], ids=["first-redirect", "second-redirect"])
    def test_blob_redirect_to_refused_address(
        self,
        server: HTTPSServer,
        other: HTTPSServer,
        test_ca: TestCA,
        tmp_path: Path,
        answers: list[str],
        hops: int,
    ) -> None:
        """The blob is not fetched, the error names the host (not the signed URL), and the
        redirect target, though listening on this host, sees nothing.

        With hops=2 the registry first redirects to an allowed host (`other`, 127.0.0.1),
        which then redirects to storage.test: every hop is judged, not only the first
        redirect's. The target's certificate names storage.test, so a dial that got through
        would be served and recorded."""
        lookups: list[str] = []

        def resolve(host: str) -> list[str]:
            lookups.append(host)
            return answers

        target = named_server(test_ca, "storage.test").start()
        refused = f"https://storage.test:{target.port}/blob?sig=abc"
        other.answers["/moved"] = Reply(307, headers={"Location": refused})
        first = refused if hops == 1 else other.url() + "/moved"
        server.answers[PATH] = Reply(307, headers={"Location": first})
        via = server if hops == 1 else other
        fetcher = BlobFetcher(server.url(), ssl_context(test_ca.pem), timeout=5, resolve=resolve)
        layout = OciLayout.open(tmp_path / "oci")
        try:
            with (
                layout.blob_writer(DESCRIPTOR) as writer,
                pytest.raises(DialRefused, match=r"storage\.test resolves to") as caught,
            ):
                fetcher.fetch("team/app", DESCRIPTOR, TOKEN, writer, cancel=threading.Event())
        finally:
            fetcher.close()
            target.stop()
        assert "sig=abc" not in str(caught.value)
        assert str(caught.value).startswith(f"127.0.0.1:{via.port} redirected to storage.test")
        assert lookups == ["storage.test"]
        assert len(other.requests) == hops - 1  # the chain really went through `other`
        assert target.requests == []
        assert not layout.has_blob(DESCRIPTOR)

    def test_manifest_redirect_to_literal_metadata_address(
        self, server: HTTPSServer, test_ca: TestCA
    ) -> None:
        """A literal metadata address in Location is refused as written, without a lookup."""
        path = "/v2/team/app/manifests/v1"
        server.answers[path] = Reply(307, headers={"Location": "https://[::ffff:a9fe:a9fe]/m"})

        def resolve(host: str) -> list[str]:
            raise AssertionError(f"{host} must not be resolved")

        fetcher = BlobFetcher(server.url(), ssl_context(test_ca.pem), timeout=5, resolve=resolve)
        try:
            with pytest.raises(DialRefused, match="cloud metadata service"):
                fetcher.fetch_manifest("team/app", "v1", ["application/json"], TOKEN)
        finally:
            fetcher.close()
