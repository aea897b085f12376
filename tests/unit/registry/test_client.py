"""RegistryClient against a real local HTTPS server speaking the distribution API."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from pullbroker_client.registry import mediatypes
from pullbroker_client.registry.client import RegistryClient
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    BlobUnknown,
    DigestMismatch,
    InvalidReference,
    ManifestUnknown,
    NameUnknown,
    NotAllowed,
    RegistryProtocolError,
    RegistryUnreachable,
)
from pullbroker_client.secret import Secret

from tests.unit.registry.conftest import Serve
from tests.unit.registry.servers import HTTPSServer, LocalCA, Recorded, Reply

FRESH = "Bearer fresh-canary-0d4c"
STALE = "Bearer stale-canary-77e1"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
MANIFEST_SHA512 = "sha512:" + hashlib.sha512(MANIFEST).hexdigest()
BLOB = os.urandom(3 * 1024 * 1024 + 123)
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
CHALLENGE = (
    'Bearer realm="https://auth.example/token",service="reg",scope="repository:team/app:pull"'
)


@dataclass
class FakeRegistry:
    """A scriptable registry: team/app with one manifest (tag v1) and one blob."""

    accepted: set[str] = field(default_factory=lambda: {FRESH})
    manifest_headers: dict[str, str] = field(
        default_factory=lambda: {
            "Content-Type": mediatypes.OCI_MANIFEST,
            "Docker-Content-Digest": MANIFEST_DIGEST,
        }
    )
    manifest_body: bytes = MANIFEST
    honour_range: bool = True
    content_range: str | None = None
    cut_after: int | None = None
    blob_location: str | None = None
    unauthorized_error: str = ""

    def __call__(self, request: Recorded) -> Reply:
        if request.headers.get("authorization") not in self.accepted:
            challenge = CHALLENGE + self.unauthorized_error
            return Reply(
                401, {"WWW-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
            )
        parts = request.path.split("/")
        if parts[:4] != ["", "v2", "team", "app"]:
            return _error(404, "NAME_UNKNOWN")
        if parts[4] == "manifests":
            if parts[5] not in ("v1", MANIFEST_DIGEST, MANIFEST_SHA512):
                return _error(404, "MANIFEST_UNKNOWN")
            return Reply(200, dict(self.manifest_headers), self.manifest_body)
        if parts[4] == "blobs" and parts[5] == BLOB_DIGEST:
            if self.blob_location:
                return Reply(307, {"Location": self.blob_location})
            return self.blob(request)
        return _error(404, "BLOB_UNKNOWN")

    def blob(self, request: Recorded) -> Reply:
        asked = request.headers.get("range")
        start = int(asked[6:-1]) if asked and self.honour_range else 0
        body = BLOB[start:]
        headers = {"Content-Type": "application/octet-stream"}
        if start:
            headers["Content-Range"] = (
                self.content_range or f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"
            )
        if self.cut_after is not None:
            return Reply(
                206 if start else 200, headers, body[: self.cut_after], length=len(body), close=True
            )
        return Reply(206 if start else 200, headers, body)


def _error(status: int, code: str) -> Reply:
    return Reply(
        status,
        {"Content-Type": "application/json"},
        json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode(),
    )


class CountingAuthorizer:
    """Returns a stale value first and the fresh one when asked to refresh; records calls."""

    def __init__(self, first: str = STALE, refreshed: str = FRESH) -> None:
        self.first, self.refreshed = first, refreshed
        self.calls: list[bool] = []

    async def authorization(self, refresh: bool) -> Secret | None:
        self.calls.append(refresh)
        return Secret(self.refreshed if refresh else self.first)


async def _read(
    client: RegistryClient, offset: int = 0, chunk_size: int = 1 << 20
) -> tuple[bytes, list[int]]:
    sizes: list[int] = []
    parts: list[bytes] = []
    async with client.stream_blob("team/app", BLOB_DIGEST, offset, chunk_size=chunk_size) as stream:
        async for chunk in stream:
            sizes.append(len(chunk))
            parts.append(chunk)
    return b"".join(parts), sizes


@pytest.fixture
def registry() -> FakeRegistry:
    """The registry's behaviour, adjustable per test."""
    return FakeRegistry()


@pytest.fixture
def server(serve: Serve, registry: FakeRegistry) -> HTTPSServer:
    """The registry on a real HTTPS port."""
    return serve(registry)


@pytest.fixture
async def client(server: HTTPSServer, local_ca: LocalCA) -> AsyncIterator[RegistryClient]:
    """A client holding the fresh token from the start."""
    async with RegistryClient(
        server.url(), ca_pem=local_ca.ca_pem, authorizer=CountingAuthorizer(FRESH, FRESH)
    ) as client:
        yield client


class TestManifests:
    """get_manifest and head_manifest: Accept, digest verification, errors."""

    async def test_by_tag(self, client: RegistryClient, server: HTTPSServer) -> None:
        """The manifest comes back verified, asked for with every manifest media type."""
        manifest = await client.get_manifest("team/app", "v1")
        assert (manifest.media_type, manifest.digest, manifest.data) == (
            mediatypes.OCI_MANIFEST,
            MANIFEST_DIGEST,
            MANIFEST,
        )
        [request] = server.requests
        assert request.path == "/v2/team/app/manifests/v1"
        assert request.headers["accept"] == ", ".join(
            [
                mediatypes.OCI_INDEX,
                mediatypes.OCI_MANIFEST,
                mediatypes.DOCKER_MANIFEST_LIST,
                mediatypes.DOCKER_MANIFEST,
            ]
        )
        assert request.headers["authorization"] == FRESH

    async def test_by_digest_without_header(
        self, client: RegistryClient, registry: FakeRegistry
    ) -> None:
        """Asked by digest, the body is hashed and compared even with no Docker-Content-Digest."""
        registry.manifest_headers = {"Content-Type": "application/json"}
        manifest = await client.get_manifest("team/app", MANIFEST_DIGEST)
        assert manifest.digest == MANIFEST_DIGEST
        assert manifest.media_type == mediatypes.OCI_MANIFEST  # from the JSON mediaType field

    async def test_announced_digest_mismatch(
        self, client: RegistryClient, registry: FakeRegistry
    ) -> None:
        """A Docker-Content-Digest the body does not hash to is DigestMismatch."""
        wrong = "sha256:" + "0" * 64
        registry.manifest_headers["Docker-Content-Digest"] = wrong
        with pytest.raises(DigestMismatch) as caught:
            await client.get_manifest("team/app", "v1")
        assert (caught.value.expected, caught.value.actual) == (wrong, MANIFEST_DIGEST)

    async def test_tampered_body_by_digest(
        self, client: RegistryClient, registry: FakeRegistry
    ) -> None:
        """Content that does not hash to the digest asked for is DigestMismatch."""
        registry.manifest_body = MANIFEST + b" "
        registry.manifest_headers.pop("Docker-Content-Digest")
        with pytest.raises(DigestMismatch, match="does not match"):
            await client.get_manifest("team/app", MANIFEST_DIGEST)

    async def test_sha512_reference(self, client: RegistryClient, registry: FakeRegistry) -> None:
        """A sha512 digest is checked with sha512, both asked for and announced."""
        registry.manifest_headers["Docker-Content-Digest"] = MANIFEST_SHA512
        assert (await client.get_manifest("team/app", MANIFEST_SHA512)).digest == MANIFEST_SHA512
        assert (await client.get_manifest("team/app", "v1")).digest == MANIFEST_SHA512
        registry.manifest_body = MANIFEST + b"\n"
        with pytest.raises(DigestMismatch):
            await client.get_manifest("team/app", "v1")

    async def test_unusable_digest_header(
        self, client: RegistryClient, registry: FakeRegistry
    ) -> None:
        """A malformed Docker-Content-Digest is a protocol error."""
        registry.manifest_headers["Docker-Content-Digest"] = "sha256:nope"
        with pytest.raises(RegistryProtocolError, match="Docker-Content-Digest"):
            await client.get_manifest("team/app", "v1")

    async def test_unknown_tag_and_repository(self, client: RegistryClient) -> None:
        """Registry codes become ManifestUnknown / NameUnknown with the code kept."""
        with pytest.raises(ManifestUnknown) as caught:
            await client.get_manifest("team/app", "v2")
        assert caught.value.code == "MANIFEST_UNKNOWN"
        assert "team/app:v2" in str(caught.value)
        with pytest.raises(NameUnknown):
            await client.get_manifest("team/other", "v1")

    async def test_oversized_manifest(self, client: RegistryClient, registry: FakeRegistry) -> None:
        """A manifest over 4 MiB is refused rather than buffered."""
        registry.manifest_body = b" " * (4 * 1024 * 1024 + 1)
        with pytest.raises(RegistryProtocolError, match="over"):
            await client.get_manifest("team/app", "v1")

    @pytest.mark.parametrize(
        ("repository", "reference"),
        [("Team/app", "v1"), ("team/../x", "v1"), ("team/app", "sha256:xyz"), ("team/app", "-v")],
    )
    async def test_invalid_names_send_nothing(
        self, client: RegistryClient, server: HTTPSServer, repository: str, reference: str
    ) -> None:
        """Invalid repositories, tags or digests raise InvalidReference before any request."""
        with pytest.raises(InvalidReference):
            await client.get_manifest(repository, reference)
        assert server.requests == []

    async def test_head(self, client: RegistryClient, server: HTTPSServer) -> None:
        """HEAD gives digest, media type and size without a body."""
        info = await client.head_manifest("team/app", "v1")
        assert (info.digest, info.media_type, info.size) == (
            MANIFEST_DIGEST,
            mediatypes.OCI_MANIFEST,
            len(MANIFEST),
        )
        assert server.requests[0].method == "HEAD"

    async def test_head_mismatch_and_unknown(
        self, client: RegistryClient, registry: FakeRegistry
    ) -> None:
        """HEAD by digest with another announced digest is DigestMismatch; 404 ManifestUnknown."""
        registry.manifest_headers["Docker-Content-Digest"] = "sha256:" + "1" * 64
        with pytest.raises(DigestMismatch):
            await client.head_manifest("team/app", MANIFEST_DIGEST)
        with pytest.raises(ManifestUnknown):
            await client.head_manifest("team/app", "nope")


class TestAuthorizationRetry:
    """On 401 the authorizer is asked once more with refresh=True, then the call fails."""

    async def test_refresh_then_success(self, server: HTTPSServer, local_ca: LocalCA) -> None:
        """Stale token -> 401 -> refreshed token -> 200; two requests, two authorizer calls."""
        authorizer = CountingAuthorizer()
        async with RegistryClient(
            server.url(), ca_pem=local_ca.ca_pem, authorizer=authorizer
        ) as client:
            manifest = await client.get_manifest("team/app", "v1")
        assert manifest.data == MANIFEST
        assert authorizer.calls == [False, True]
        assert [r.headers["authorization"] for r in server.requests] == [STALE, FRESH]

    async def test_refresh_does_not_help(self, server: HTTPSServer, local_ca: LocalCA) -> None:
        """401 after the refresh is AuthenticationRequired, after exactly one retry."""
        authorizer = CountingAuthorizer(STALE, STALE)
        async with RegistryClient(
            server.url(), ca_pem=local_ca.ca_pem, authorizer=authorizer
        ) as client:
            with pytest.raises(AuthenticationRequired, match="fresh token") as caught:
                await client.get_manifest("team/app", "v1")
        assert authorizer.calls == [False, True]
        assert len(server.requests) == 2
        assert "canary" not in str(caught.value)

    async def test_insufficient_scope(
        self, server: HTTPSServer, registry: FakeRegistry, local_ca: LocalCA
    ) -> None:
        """A 401 whose challenge says insufficient_scope is NotAllowed."""
        registry.unauthorized_error = ',error="insufficient_scope"'
        authorizer = CountingAuthorizer(STALE, STALE)
        async with RegistryClient(
            server.url(), ca_pem=local_ca.ca_pem, authorizer=authorizer
        ) as client:
            with pytest.raises(NotAllowed) as caught:
                await client.get_manifest("team/app", "v1")
        assert caught.value.code == "insufficient_scope"

    async def test_anonymous_gets_no_retry(self, server: HTTPSServer, local_ca: LocalCA) -> None:
        """Without an authorizer a 401 fails at once, saying no credential was given."""
        async with RegistryClient(server.url(), ca_pem=local_ca.ca_pem) as client:
            with pytest.raises(AuthenticationRequired, match="no credential"):
                await client.get_manifest("team/app", "v1")
        assert len(server.requests) == 1
        assert "authorization" not in server.requests[0].headers

    async def test_blob_refresh(self, server: HTTPSServer, local_ca: LocalCA) -> None:
        """stream_blob retries a 401 with the refreshed value too."""
        authorizer = CountingAuthorizer()
        async with RegistryClient(
            server.url(), ca_pem=local_ca.ca_pem, authorizer=authorizer
        ) as client:
            data, _ = await _read(client)
        assert data == BLOB
        assert authorizer.calls == [False, True]


class TestBlobs:
    """stream_blob: large chunks, ranges, redirects, failures."""

    async def test_whole_blob_in_large_chunks(
        self, client: RegistryClient, server: HTTPSServer
    ) -> None:
        """The bytes arrive complete, in chunks of at least chunk_size except the last."""
        data, sizes = await _read(client, chunk_size=256 * 1024)
        assert data == BLOB
        assert all(size >= 256 * 1024 for size in sizes[:-1])
        assert len(sizes) <= 13
        assert server.requests[0].path == f"/v2/team/app/blobs/{BLOB_DIGEST}"
        assert "range" not in server.requests[0].headers

    async def test_range(self, client: RegistryClient, server: HTTPSServer) -> None:
        """offset sends Range: bytes=N- and yields the bytes from N."""
        data, _ = await _read(client, offset=1_000_000)
        assert data == BLOB[1_000_000:]
        assert server.requests[0].headers["range"] == "bytes=1000000-"

    async def test_range_ignored(self, client: RegistryClient, registry: FakeRegistry) -> None:
        """A registry that answers 200 to a Range request has the prefix skipped for us."""
        registry.honour_range = False
        data, _ = await _read(client, offset=70_000)
        assert data == BLOB[70_000:]

    async def test_wrong_content_range(
        self, client: RegistryClient, registry: FakeRegistry
    ) -> None:
        """A 206 starting elsewhere than the offset is a protocol error."""
        registry.content_range = "bytes 0-99/100"
        with pytest.raises(RegistryProtocolError, match="Content-Range"):
            await _read(client, offset=5)

    async def test_unknown_blob(self, client: RegistryClient) -> None:
        """404 BLOB_UNKNOWN is BlobUnknown."""
        with pytest.raises(BlobUnknown):
            async with client.stream_blob("team/app", "sha256:" + "2" * 64):
                pass

    async def test_redirect_to_storage_drops_authorization(
        self, serve: Serve, registry: FakeRegistry, client: RegistryClient
    ) -> None:
        """A blob redirected to another host is fetched there without the registry token."""
        storage = serve(lambda r: Reply(200, {}, BLOB))
        registry.blob_location = storage.url("localhost") + "/bucket/blob?sig=abc"
        data, _ = await _read(client)
        assert data == BLOB
        assert "authorization" not in storage.requests[0].headers

    async def test_dropped_connection_then_resume(
        self, client: RegistryClient, registry: FakeRegistry
    ) -> None:
        """A connection cut mid-blob raises a temporary error; resuming at the offset finishes."""
        registry.cut_after = 1_500_000
        received = bytearray()

        async def read_until_cut() -> None:
            async with client.stream_blob("team/app", BLOB_DIGEST, chunk_size=64 * 1024) as stream:
                async for chunk in stream:
                    received.extend(chunk)

        with pytest.raises(RegistryUnreachable) as caught:
            await read_until_cut()
        assert caught.value.temporary
        assert 0 < len(received) <= 1_500_000
        registry.cut_after = None
        rest, _ = await _read(client, offset=len(received))
        assert hashlib.sha256(bytes(received) + rest).hexdigest() == BLOB_DIGEST[7:]

    async def test_consumer_stops_early(self, client: RegistryClient) -> None:
        """Leaving the stream after one chunk closes it cleanly; the client stays usable."""
        async with client.stream_blob("team/app", BLOB_DIGEST, chunk_size=1024) as stream:
            first = await anext(aiter(stream))
        assert first == BLOB[: len(first)]
        assert (await _read(client))[0] == BLOB

    async def test_invalid_digest(self, client: RegistryClient, server: HTTPSServer) -> None:
        """An invalid digest raises InvalidReference before any request."""
        with pytest.raises(InvalidReference):
            async with client.stream_blob("team/app", "sha256:short"):
                pass
        assert server.requests == []


class TestConstruction:
    """The client refuses URLs it cannot use."""

    def test_scheme_required(self) -> None:
        """A URL without http(s):// is refused with a message saying so."""
        with pytest.raises(RegistryProtocolError, match="https://"):
            RegistryClient("registry.example.com")
