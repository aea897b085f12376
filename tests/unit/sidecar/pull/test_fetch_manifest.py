"""Manifests through the node's fetcher: Accept, digest verification, size, failed answers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from pullbroker_client.registry import mediatypes
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    DigestMismatch,
    ManifestUnknown,
    NotAllowed,
    RegistryProtocolError,
)
from pullbroker_client.registry.rules import MANIFEST_LIMIT
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret
from pullbroker_sidecar.pull.fetch import BlobFetcher, FetchedManifest
from pullbroker_sidecar.pull.manifest import ACCEPT

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply

TOKEN = Secret("Bearer manifest-canary-8a2c")
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
SHA512 = "sha512:" + hashlib.sha512(MANIFEST).hexdigest()
CHALLENGE = 'Bearer realm="https://auth.test/token",service="reg",scope="repository:team/app:pull"'


@pytest.fixture
def fetcher(server: HTTPSServer, test_ca: TestCA) -> Iterator[BlobFetcher]:
    """A fetcher for the recording registry, trusting the test CA only."""
    fetcher = BlobFetcher(server.url(), ssl_context(test_ca.pem), timeout=5)
    try:
        yield fetcher
    finally:
        fetcher.close()


def _serve(server: HTTPSServer, reference: str, answer: Reply) -> None:
    server.answers[f"/v2/team/app/manifests/{reference}"] = answer


def _get(fetcher: BlobFetcher, reference: str) -> FetchedManifest:
    return fetcher.fetch_manifest("team/app", reference, ACCEPT, TOKEN)


OK_HEADERS = {"Content-Type": mediatypes.OCI_MANIFEST, "Docker-Content-Digest": DIGEST}


class TestVerified:
    """A manifest is returned only when it hashes to every digest claimed for it."""

    def test_by_tag(self, fetcher: BlobFetcher, server: HTTPSServer) -> None:
        """Verified against the announced digest, asked for with every accepted media type."""
        _serve(server, "v1", Reply(body=MANIFEST, headers=OK_HEADERS))
        found = _get(fetcher, "v1")
        assert (found.media_type, found.digest, found.data) == (
            mediatypes.OCI_MANIFEST,
            DIGEST,
            MANIFEST,
        )
        [request] = server.requests
        assert request.headers["accept"] == ", ".join(ACCEPT)
        assert request.headers["authorization"] == TOKEN.reveal()

    def test_by_digest_without_header(self, fetcher: BlobFetcher, server: HTTPSServer) -> None:
        """Asked by digest, the body is hashed even with no Docker-Content-Digest; the media
        type comes from the document when Content-Type is generic."""
        _serve(server, DIGEST, Reply(body=MANIFEST, headers={"Content-Type": "application/json"}))
        found = _get(fetcher, DIGEST)
        assert (found.digest, found.media_type) == (DIGEST, mediatypes.OCI_MANIFEST)

    def test_sha512(self, fetcher: BlobFetcher, server: HTTPSServer) -> None:
        """A sha512 digest is checked with sha512."""
        _serve(server, SHA512, Reply(body=MANIFEST, headers={"Docker-Content-Digest": SHA512}))
        assert _get(fetcher, SHA512).digest == SHA512

    @pytest.mark.parametrize(
        ("reference", "body", "announced"),
        [
            ("v1", MANIFEST, "sha256:" + "0" * 64),  # the announced digest is wrong
            (DIGEST, MANIFEST + b" ", None),  # the body is not what was asked for
            (SHA512, MANIFEST + b"\n", SHA512),
        ],
    )
    def test_mismatch(
        self,
        fetcher: BlobFetcher,
        server: HTTPSServer,
        reference: str,
        body: bytes,
        announced: str | None,
    ) -> None:
        """Content that does not hash to a claimed digest is DigestMismatch."""
        headers = {"Docker-Content-Digest": announced} if announced else {}
        _serve(server, reference, Reply(body=body, headers=headers))
        with pytest.raises(DigestMismatch, match="does not match"):
            _get(fetcher, reference)

    def test_unusable_digest_header(self, fetcher: BlobFetcher, server: HTTPSServer) -> None:
        """A malformed Docker-Content-Digest is a protocol error."""
        _serve(server, "v1", Reply(body=MANIFEST, headers={"Docker-Content-Digest": "sha256:x"}))
        with pytest.raises(RegistryProtocolError, match="Docker-Content-Digest"):
            _get(fetcher, "v1")

    def test_oversized(self, fetcher: BlobFetcher, server: HTTPSServer) -> None:
        """A manifest over the shared limit is refused rather than kept."""
        _serve(server, "v1", Reply(body=b" " * (MANIFEST_LIMIT + 1)))
        with pytest.raises(RegistryProtocolError, match=f"larger than {MANIFEST_LIMIT}"):
            _get(fetcher, "v1")


class TestFailedAnswers:
    """Failed answers become the registry client's errors (rules.answer_error)."""

    def test_unknown_tag(self, fetcher: BlobFetcher, server: HTTPSServer) -> None:
        """404 MANIFEST_UNKNOWN is ManifestUnknown with the code kept, naming the tag."""
        body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
        _serve(server, "v2", Reply(404, body=body))
        with pytest.raises(ManifestUnknown, match="v2") as caught:
            _get(fetcher, "v2")
        assert caught.value.code == "MANIFEST_UNKNOWN"

    @pytest.mark.parametrize(
        ("error", "expected"),
        [("insufficient_scope", NotAllowed), ("invalid_token", AuthenticationRequired)],
    )
    def test_401_reads_the_challenge(
        self,
        fetcher: BlobFetcher,
        server: HTTPSServer,
        error: str,
        expected: type[Exception],
    ) -> None:
        """The WWW-Authenticate header reaches the rules: a scope the token lacks is NotAllowed
        (a fresh token will not help), anything else AuthenticationRequired."""
        challenge = f'{CHALLENGE},error="{error}"'
        _serve(server, "v1", Reply(401, headers={"WWW-Authenticate": challenge}))
        with pytest.raises(expected) as caught:
            _get(fetcher, "v1")
        assert type(caught.value) is expected
        assert "canary" not in str(caught.value)
