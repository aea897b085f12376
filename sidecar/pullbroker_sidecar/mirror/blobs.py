"""Blobs through the mirror: from the node store when it holds them, else one download.

Answers carry the blob's size (from the store, or the registry's HEAD) as Content-Length,
`Docker-Content-Digest`, `Accept-Ranges: bytes`; a single `Range` gets 206 with
`Content-Range`.
"""

from __future__ import annotations

import asyncio
from typing import BinaryIO

from pullbroker_sidecar.errors import LayoutError, SizeLimitExceeded
from pullbroker_sidecar.metrics import SidecarMetrics
from pullbroker_sidecar.mirror.downloads import Download, Downloads, StreamAborted
from pullbroker_sidecar.mirror.routes import Route
from pullbroker_sidecar.mirror.upstream import Upstream
from pullbroker_sidecar.mirror.wire import Request, byte_range, head_bytes, send_file
from pullbroker_sidecar.pull.limits import DEFAULT_MAX_BLOB, format_size
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.store import ContentStore

OCTET_STREAM = "application/octet-stream"
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


class Blobs:
    """Answers blob requests for the mirror."""

    def __init__(
        self,
        store: ContentStore,
        downloads: Downloads,
        *,
        max_blob: int = DEFAULT_MAX_BLOB,
        metrics: SidecarMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._downloads = downloads
        self._max_blob = max_blob

    async def answer(
        self, route: Route, upstream: Upstream, request: Request, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer a GET or HEAD; False when the connection must close (an aborted body)."""
        digest = route.reference
        download = self._downloads.find(digest)
        if download is None:
            served = await self._from_store(digest, request, writer)
            if served is not None:
                return served
            download = self._downloads.find(digest)
        size = download.descriptor.size if download else await upstream.blob_size(digest)
        if size > self._max_blob:
            raise SizeLimitExceeded(
                f"blob {digest} of {route.image} is {format_size(size)}, more than the "
                f"mirror's limit of {format_size(self._max_blob)}"
            )
        if request.method == "HEAD":
            writer.write(head_bytes(200, _headers(digest, size)))
            await writer.drain()
            return True
        # Asking for the size awaited: another request may have started the download, or
        # finished it, meanwhile. A download is in `find` until the loop sees it end, and in
        # the store from its commit (on the worker thread) on, so checking both with no await
        # in between leaves no gap for a second download.
        download = download or self._downloads.find(digest)
        if download is None and self._store.stored_size(digest) is not None:
            served = await self._from_store(digest, request, writer)
            if served is not None:
                return served
        if download is None:
            download = self._downloads.start(Descriptor(OCTET_STREAM, digest, size), upstream)
            if self._metrics is not None:
                self._metrics.mirror_blob("upstream", size)
        elif self._metrics is not None:
            self._metrics.mirror_blob("store", size)  # another request's download: no new one
        return await _send_growing(download, request, writer)

    async def _from_store(
        self, digest: str, request: Request, writer: asyncio.StreamWriter
    ) -> bool | None:
        """Answer from the node store; None when the store does not hold the blob."""
        stored = await asyncio.to_thread(self._open_stored, digest)
        if stored is None:
            return None
        self._count("store", digest, request)
        with stored:
            return await _send_stored(stored, digest, request, writer)

    def _count(self, source: str, digest: str, request: Request) -> None:
        if self._metrics is not None and request.method == "GET":
            self._metrics.mirror_blob(source, self._store.stored_size(digest) or 0)

    def _open_stored(self, digest: str) -> BinaryIO | None:
        if self._store.stored_size(digest) is None:
            return None
        try:
            file = self._store.open_blob(digest)
        except LayoutError:
            return None
        self._store.touch(digest)
        return file


def _headers(digest: str, size: int) -> dict[str, str]:
    return {
        **API_VERSION,
        "Content-Type": OCTET_STREAM,
        "Docker-Content-Digest": digest,
        "Accept-Ranges": "bytes",
        "Content-Length": str(size),
    }


def _ranged(request: Request, digest: str, size: int) -> tuple[int, int, int, dict[str, str]]:
    """(status, start, end, headers) for the request's Range over a blob of `size`."""
    wanted = byte_range(request.headers.get("range"), size)
    if wanted is None:
        return 200, 0, size, _headers(digest, size)
    start, end = wanted
    headers = _headers(digest, end - start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return 206, start, end, headers


async def _send_stored(
    file: BinaryIO, digest: str, request: Request, writer: asyncio.StreamWriter
) -> bool:
    size = file.seek(0, 2)
    status, start, end, headers = _ranged(request, digest, size)
    writer.write(head_bytes(status, headers))
    if request.method == "GET":
        await send_file(writer, file, start, end - start)
    await writer.drain()
    return True


async def _send_growing(download: Download, request: Request, writer: asyncio.StreamWriter) -> bool:
    size = download.descriptor.size
    status, start, end, headers = _ranged(request, download.descriptor.digest, size)
    with download.reading():
        await download.ready(start)
        if download.error is not None:
            raise download.error  # nothing sent yet: the runtime gets the OCI error
        writer.write(head_bytes(status, headers))
        try:
            await download.stream(writer, start, end)
        except StreamAborted:
            writer.transport.abort()  # short of Content-Length: a failed transfer
            return False
    await writer.drain()
    return True
