"""Registry operations for a pull: manifests (verified against their digest) and blob streams.

Where the Authorization value comes from is the `Authorizer`'s business (the sidecar asks the
broker for a scoped token, the broker uses its own minted one); this module only asks it for
one, and once more with refresh=True when the registry answers 401.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn, Protocol

from pullbroker_client.registry.challenge import parse_www_authenticate
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    BlobUnknown,
    InvalidChallenge,
    ManifestUnknown,
    NotAllowed,
    NotFoundError,
    RegistryError,
    RegistryProtocolError,
    error_for_response,
)
from pullbroker_client.registry.mediatypes import MANIFEST_ACCEPT
from pullbroker_client.registry.reference import (
    check_digest,
    check_repository,
    check_tag,
    is_digest,
)
from pullbroker_client.registry.transport import DEFAULT_TIMEOUT, Response, Transport
from pullbroker_client.registry.verify import (
    digest_mismatch,
    manifest_media_type,
    verified_digest,
)
from pullbroker_client.secret import Secret

MANIFEST_LIMIT = 4 * 1024 * 1024
"""Largest manifest accepted (the limit containerd and most registries apply)."""

BLOB_CHUNK = 1024 * 1024
"""Blob bytes per yielded chunk: few enough chunks that per-chunk Python cost stays small."""

_ERROR_BODY_LIMIT = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


class Authorizer(Protocol):
    """Where the registry client gets its Authorization header value."""

    async def authorization(self, refresh: bool) -> Secret | None:
        """The whole header value (`Bearer abc`), None for anonymous; refresh=True after a 401."""
        ...


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry served it, with its verified digest."""

    media_type: str
    digest: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ManifestInfo:
    """What HEAD tells about a manifest without downloading it."""

    media_type: str
    digest: str
    size: int


class RegistryClient:
    """Pull-side operations against one registry (`https://host[:port]`)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_pem: str | None = None,
        authorizer: Authorizer | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: Transport | None = None,
    ) -> None:
        """`transport`, when given, is shared and not closed by `aclose()`."""
        if not base_url.startswith(("https://", "http://")):
            raise RegistryProtocolError(
                f"registry URL {base_url[:80]!r} must start with https:// (or http:// for tests)"
            )
        self.base_url = base_url.rstrip("/")
        self._authorizer = authorizer
        self._owns_transport = transport is None
        self.transport = transport or Transport(ca_pem=ca_pem, timeout=timeout)

    async def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_ACCEPT
    ) -> Manifest:
        """The manifest under a tag or digest; DigestMismatch when it does not hash to it."""
        url, subject = self._manifest_url(repository, reference)
        headers = {"Accept": ", ".join(accept)}
        async with self._authorized("GET", url, headers) as response:
            if response.status_code != 200:
                await self._fail(response, subject, ManifestUnknown)
            data = await response.read(MANIFEST_LIMIT)
            announced = response.header("docker-content-digest")
            digest = verified_digest(announced, response.host, reference, data, subject)
            media_type = manifest_media_type(response.header("content-type"), data)
        return Manifest(media_type=media_type, digest=digest, data=data)

    async def head_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_ACCEPT
    ) -> ManifestInfo:
        """Digest, media type and size of a manifest from HEAD (Docker Hub does not count HEADs)."""
        url, subject = self._manifest_url(repository, reference)
        async with self._authorized("HEAD", url, {"Accept": ", ".join(accept)}) as response:
            if response.status_code != 200:
                await self._fail(response, subject, ManifestUnknown)
        announced = response.header("docker-content-digest")
        if is_digest(reference) and announced and announced != reference:
            raise digest_mismatch(subject, expected=reference, actual=announced)
        digest = reference if is_digest(reference) else announced
        if not digest or not is_digest(digest):
            raise RegistryProtocolError(
                f"registry {response.host} sent no usable Docker-Content-Digest for {subject}:"
                " use get_manifest, which computes it"
            )
        length = response.header("content-length")
        media_type = response.header("content-type").partition(";")[0].strip()
        return ManifestInfo(media_type, digest, int(length) if length.isdigit() else -1)

    @asynccontextmanager
    async def stream_blob(
        self, repository: str, digest: str, offset: int = 0, *, chunk_size: int = BLOB_CHUNK
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes from `offset` on, in chunks of about `chunk_size`.

        The caller verifies the digest of what it assembles; a dropped connection raises
        RegistryUnreachable (temporary), and the caller may resume from a later offset.
        """
        check_repository(repository)
        check_digest(digest)
        if offset < 0:
            raise ValueError("offset must be >= 0")
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        subject = f"blob {repository}@{digest}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self._authorized("GET", url, headers) as response:
            if response.status_code not in (200, 206):
                await self._fail(response, subject, BlobUnknown)
            skip = _bytes_to_skip(response, offset, subject)
            chunks = _coalesced(response, chunk_size, skip, subject)
            try:
                yield chunks
            finally:
                await chunks.aclose()  # a consumer that stops early leaves it suspended

    @asynccontextmanager
    async def _authorized(
        self, method: str, url: str, headers: dict[str, str]
    ) -> AsyncIterator[Response]:
        authorization = await self._authorization(refresh=False)
        refreshed = self._authorizer is None
        while True:
            async with self.transport.stream(
                method, url, headers=headers, authorization=authorization
            ) as response:
                if response.status_code != 401 or refreshed:
                    yield response
                    return
            refreshed = True
            authorization = await self._authorization(refresh=True)

    async def _authorization(self, refresh: bool) -> Secret | None:
        if self._authorizer is None:
            return None
        return await self._authorizer.authorization(refresh=refresh)

    async def _fail(
        self, response: Response, subject: str, not_found: type[NotFoundError]
    ) -> NoReturn:
        if response.status_code == 401:
            raise self._unauthorized(response, subject)
        try:
            body = await response.read(_ERROR_BODY_LIMIT)
        except RegistryError:
            body = b""
        raise error_for_response(
            response.status_code,
            body,
            host=response.host,
            subject=subject,
            not_found=not_found,
            retry_after=response.retry_after,
        )

    def _unauthorized(self, response: Response, subject: str) -> RegistryError:
        errors: set[str | None] = set()
        for header in response.headers.get_list("www-authenticate"):
            try:
                errors.update(c.error for c in parse_www_authenticate(header))
            except InvalidChallenge:
                continue
        if "insufficient_scope" in errors:
            return NotAllowed(
                f"registry {response.host} refused {subject} (insufficient_scope): the token"
                " or credential does not allow pulling this repository",
                code="insufficient_scope",
            )
        advice = (
            "even with a fresh token: check the registry credential"
            if self._authorizer is not None
            else "and no credential was given: configure one for this registry"
        )
        return AuthenticationRequired(
            f"registry {response.host} answered 401 for {subject} {advice}"
        )

    def _manifest_url(self, repository: str, reference: str) -> tuple[str, str]:
        check_repository(repository)
        if ":" in reference:
            check_digest(reference)
            subject = f"manifest {repository}@{reference}"
        else:
            check_tag(reference)
            subject = f"manifest {repository}:{reference}"
        return f"{self.base_url}/v2/{repository}/manifests/{reference}", subject

    async def aclose(self) -> None:
        if self._owns_transport:
            await self.transport.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _bytes_to_skip(response: Response, offset: int, subject: str) -> int:
    if not offset or response.status_code == 200:
        return offset  # the registry ignored Range and sends the whole blob
    match = _CONTENT_RANGE.fullmatch(response.header("content-range").strip())
    if match is None or int(match.group(1)) != offset:
        raise RegistryProtocolError(
            f"registry {response.host} answered a range request for {subject}"
            f" without a Content-Range starting at {offset}"
        )
    return 0


async def _coalesced(
    response: Response, chunk_size: int, skip: int, subject: str
) -> AsyncGenerator[bytes, None]:
    # The connection delivers TLS-record-sized pieces (16 KiB); joining them into large
    # chunks keeps the consumer's per-chunk work (hash update, write) rare.
    parts: list[bytes] = []
    held = 0
    async for piece in response.iter_bytes():
        if skip:
            if len(piece) <= skip:
                skip -= len(piece)
                continue
            piece, skip = piece[skip:], 0
        parts.append(piece)
        held += len(piece)
        if held >= chunk_size:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            parts, held = [], 0
    if skip:
        raise RegistryProtocolError(f"registry {response.host} sent {subject} short of the offset")
    if parts:
        yield b"".join(parts)
