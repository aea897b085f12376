"""A request joining a download receives the whole verified blob, however the download's
last steps interleave with its wait (real sockets and sendfile, no registry needed)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path

from pullbroker_sidecar.mirror.downloads import Download
from pullbroker_sidecar.pull.manifest import Descriptor

LAYER = "application/vnd.oci.image.layer.v1.tar"


async def read_through(download: Download, path: Path, worker_done: asyncio.Event) -> bytes:
    """One reader joins, waits for byte 0, the 'worker' writes and verifies meanwhile, then
    the reader streams; what arrived at the other end of the socket."""
    ours, theirs = socket.socketpair()
    _reader, writer = await asyncio.open_connection(sock=ours)
    size = download.descriptor.size

    async def serve() -> None:
        with download.reading():
            await download.ready(0)
            await download.stream(writer, 0, size)
        writer.close()

    async def worker() -> None:
        await asyncio.sleep(0)  # the reader is waiting in ready() now
        download.opened(os.open(path, os.O_RDONLY), 0)
        download.advanced(size, restarted=False)
        download.finish(None)  # verified: the last byte may go
        worker_done.set()

    await asyncio.gather(serve(), worker())
    theirs.settimeout(5)
    received = b""
    while len(received) < size:
        chunk = theirs.recv(65536)
        if not chunk:
            break
        received += chunk
    theirs.close()
    return received


class TestLateReaders:
    async def test_a_reader_waiting_when_the_blob_verifies_gets_every_byte(
        self, tmp_path: Path
    ) -> None:
        """A one-byte blob: no byte may go before verification, so the reader is still in
        ready() when the download finishes. It must not find the file closed."""
        path = tmp_path / "blob"
        path.write_bytes(b"x")
        digest = "sha256:" + hashlib.sha256(b"x").hexdigest()
        download = Download(Descriptor(LAYER, digest, 1))
        done = asyncio.Event()
        assert await read_through(download, path, done) == b"x"
        assert done.is_set()
