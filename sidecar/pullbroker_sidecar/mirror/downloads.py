"""One upstream download per blob per node, streamed to every runtime asking meanwhile.

A blob the store lacks is fetched once, on a worker thread (the pull engine's fetcher and
the store's resumable writer: hashed while written, committed only when the digest and
size match). Every request for that digest, the first one included, reads the growing
file (`sendfile` from a duplicate of the writer's file descriptor) up to what has been
written, so a second runtime (or a second kubelet retry) joins the download in flight
instead of starting another. The download belongs to no request: a client that goes away
does not stop it, and the next one finds the blob in the store.

The last byte is held back until the blob verified. When it does not verify (or the
upstream fails), every reader's connection is aborted short of its Content-Length, so the
runtime sees a failed transfer and never a complete wrong blob; the store commits nothing.
If the writer has to start over (a registry that ignored `Range` on a resumed download),
readers that already sent bytes are aborted too: the bytes under them changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from pullbroker_client.registry.errors import AuthenticationRequired, RegistryError
from pullbroker_client.secret import Secret

from pullbroker_sidecar.mirror.upstream import Upstream
from pullbroker_sidecar.mirror.wire import send_file
from pullbroker_sidecar.pull.layout import BlobWriter
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.partial import ResumableWriter
from pullbroker_sidecar.pull.store import ContentStore

WORKERS = 8
_RETRY_DELAY = 0.5
_REFRESH_WAIT = 30.0


class StreamAborted(Exception):
    """The download under a response failed or started over: abort that connection."""


class Download:
    """One blob being fetched into the store; every field changes on the loop thread only."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.written = 0
        self.generation = 0
        self.verified = False
        self.error: BaseException | None = None
        self._fd: int | None = None
        self._readers = 0
        self._changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.verified or self.error is not None

    def limit(self) -> int:
        """Bytes a reader may send now: all once verified, else all written but the last."""
        size = self.descriptor.size
        return size if self.verified else min(self.written, size - 1)

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def opened(self, fd: int, written: int) -> None:
        """The worker opened the file it writes (holding `written` bytes already)."""
        self._close_fd()
        self._fd, self.written = fd, written
        self._changed_now()

    def advanced(self, written: int, restarted: bool) -> None:
        """The worker wrote up to `written`; `restarted`: it started over from byte 0."""
        self.generation += 1 if restarted else 0
        self.written = written
        self._changed_now()

    def finish(self, error: BaseException | None) -> None:
        """The worker is done: verified and committed, or failed with `error`."""
        self.verified, self.error = error is None, error
        if self._readers == 0:
            self._close_fd()
        self._changed_now()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A request reading this download, from the moment it joins (before `ready`): the
        file stays open for it even when the download verifies while it waits."""
        self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            if self.finished and self._readers == 0:
                self._close_fd()

    async def ready(self, start: int) -> None:
        """Wait until bytes from `start` can be sent, or the download finished."""
        while not (self.finished or self.limit() > start):
            await self._changed.wait()

    async def stream(self, writer: asyncio.StreamWriter, start: int, end: int) -> None:
        """Send bytes `[start, end)` as they arrive; StreamAborted when they cannot all be.
        Called inside `reading()`."""
        file: BinaryIO | None = None
        try:
            position = start
            generation = self.generation
            while position < end:
                changed = self._changed
                if self.error is not None or self.generation != generation:
                    raise StreamAborted
                if self._fd is not None and file is None:
                    file = os.fdopen(os.dup(self._fd), "rb")
                limit = min(self.limit(), end)
                if file is not None and position < limit:
                    await send_file(writer, file, position, limit - position)
                    position = limit
                elif not self.verified:
                    await changed.wait()
                else:
                    raise StreamAborted  # verified, yet fewer bytes than announced
        finally:
            if file is not None:
                file.close()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Downloads:
    """The blobs being fetched now, by digest; `on_commit` runs after each stored blob."""

    def __init__(self, store: ContentStore, on_commit: Callable[[], None]) -> None:
        self._store = store
        self._on_commit = on_commit
        self._active: dict[str, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="mirror-blob")
        self._cancel = threading.Event()

    def find(self, digest: str) -> Download | None:
        """The download of `digest` in flight, if any."""
        return self._active.get(digest)

    def start(self, descriptor: Descriptor, upstream: Upstream) -> Download:
        """Join the download of this blob, or start it."""
        found = self._active.get(descriptor.digest)
        if found is not None:
            return found
        download = self._active[descriptor.digest] = Download(descriptor)
        task = asyncio.create_task(self._drive(download, upstream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return download

    async def _drive(self, download: Download, upstream: Upstream) -> None:
        loop = asyncio.get_running_loop()
        error: BaseException | None = None
        try:
            header = await upstream.authorization()
            worker = _Worker(self._store, upstream, download, loop, self._cancel)
            await loop.run_in_executor(self._executor, worker.run, header)
        except BaseException as exc:  # every failure ends the download
            error = exc
        finally:
            del self._active[download.descriptor.digest]
            download.finish(error)
        if error is None:
            self._on_commit()
        elif isinstance(error, asyncio.CancelledError):
            raise error

    async def close(self) -> None:
        """Stop every download (their partial files stay for the next attempt)."""
        self._cancel.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Worker:
    """The thread side of one download: fetch into the store's writer, then commit."""

    def __init__(
        self,
        store: ContentStore,
        upstream: Upstream,
        download: Download,
        loop: asyncio.AbstractEventLoop,
        cancel: threading.Event,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._download = download
        self._loop = loop
        self._cancel = cancel
        self.written = 0

    def run(self, header: Secret | None) -> None:
        descriptor = self._download.descriptor
        with self._store.blob_writer(descriptor) as writer:
            path = writer.path if isinstance(writer, ResumableWriter) else writer.temp_path
            self.written = writer.offset
            reader = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self._tell(self._download.opened, reader, writer.offset)
            self._fetch(writer, header)
            writer.commit()

    def _fetch(self, writer: ResumableWriter | BlobWriter, header: Secret | None) -> None:
        refreshed = retried = False
        sink = _Tee(writer, self)
        while True:
            try:
                self._upstream.fetcher.fetch(
                    self._upstream.repository, self._download.descriptor, header, sink,
                    cancel=self._cancel,
                )  # fmt: skip
                return
            except AuthenticationRequired:
                if refreshed:
                    raise
                refreshed = True
                header = asyncio.run_coroutine_threadsafe(
                    self._upstream.authorization(refresh=True), self._loop
                ).result(_REFRESH_WAIT)
            except RegistryError as exc:
                if retried or not exc.temporary or self._cancel.wait(_RETRY_DELAY):
                    raise
                retried = True
            if sink.offset == 0 and self.written:
                sink.restart()  # a private temp file cannot resume: start it over

    def _tell(self, method: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the daemon is stopping
            self._loop.call_soon_threadsafe(method, *args)

    def advanced(self, n: int, restarted: bool) -> None:
        self.written = 0 if restarted else self.written + n
        self._tell(self._download.advanced, self.written, restarted)


class _Tee:
    """The `BlobSink` the fetcher writes: the store's writer, reporting each chunk."""

    def __init__(self, writer: ResumableWriter | BlobWriter, worker: _Worker) -> None:
        self._writer = writer
        self._worker = worker

    @property
    def offset(self) -> int:
        return self._writer.offset

    def write(self, data: bytes | memoryview) -> None:
        self._writer.write(data)
        self._worker.advanced(len(data), False)

    def restart(self) -> None:
        self._writer.restart()
        self._worker.advanced(0, True)
