"""Download a set of blobs into a layout, a bounded number at a time, all verified.

Each blob runs on a worker thread (see fetch.py for why); the event loop only hands out
authorization headers and waits. When one blob fails, the others are told to stop, every
temp file is removed before this returns, and the first failure is raised. A 401 is
answered once per blob with a token the broker minted afresh (`force_refresh`); a
temporary failure (connection reset, 5xx) is retried once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pullbroker_client.registry.errors import AuthenticationRequired, RegistryError
from pullbroker_client.secret import Secret

from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.layout import BlobStore, OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.progress import Progress
from pullbroker_sidecar.tokens import BrokerAuthorizer

DEFAULT_CONCURRENCY = 6
_RETRY_DELAY = 0.5


if TYPE_CHECKING:
    # A bare `BlobJob` means one that downloads into an OCI layout (no node store). Type
    # parameter defaults reach `typing` in 3.13 only, hence typing_extensions for mypy.
    from typing_extensions import TypeVar as DefaultingTypeVar

    Store = DefaultingTypeVar("Store", bound=BlobStore, default=OciLayout)
else:
    Store = TypeVar("Store", bound=BlobStore)


@dataclass(frozen=True)
class BlobJob(Generic[Store]):
    """Everything a download needs besides the descriptor; `layout` is where blobs land
    (an OCI layout, or the node store)."""

    fetcher: BlobFetcher
    authorizer: BrokerAuthorizer
    layout: Store
    repository: str
    progress: Progress


async def download_blobs(
    job: BlobJob[Any],
    blobs: Sequence[Descriptor],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    present: int = 0,
) -> int:
    """Fetch every blob not already in the layout; returns how many were fetched.

    `present` counts blobs the caller already found stored (for the progress line only).
    """
    # Largest first: the biggest blob is the critical path, so it must not wait for a slot.
    held = await asyncio.to_thread(lambda: [job.layout.has_blob(d) for d in blobs])
    todo = sorted((d for d, h in zip(blobs, held, strict=True) if not h), key=lambda d: -d.size)
    resumed = await asyncio.to_thread(lambda: sum(job.layout.partial_size(d) for d in todo))
    job.progress.start(
        len(todo), sum(d.size for d in todo), present + len(blobs) - len(todo), resumed
    )
    if not todo:
        job.progress.finish()
        return 0
    cancel = threading.Event()
    slots = asyncio.Semaphore(concurrency)
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="blob")
    tasks = [asyncio.create_task(_one(job, d, slots, executor, cancel)) for d in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        cancel.set()
        job.fetcher.abort()
        for task in tasks:
            task.cancel()
        # Collect every outcome, so a second failure is not reported later as "never
        # retrieved"; the first one is what the caller sees.
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        # Blocking on purpose: every worker must have removed its temp file before the
        # failure (or success) is reported; abort() has woken any that were reading.
        executor.shutdown(wait=True)
        job.progress.finish()
    return len(todo)


async def _one(
    job: BlobJob[Any],
    descriptor: Descriptor,
    slots: asyncio.Semaphore,
    executor: ThreadPoolExecutor,
    cancel: threading.Event,
) -> None:
    loop = asyncio.get_running_loop()
    async with slots:
        header = await job.authorizer.authorization(refresh=False)
        refreshed = retried = False
        while True:
            try:
                await loop.run_in_executor(executor, _fetch, job, descriptor, header, cancel)
                break
            except AuthenticationRequired:
                if refreshed:
                    raise
                refreshed = True
                header = await job.authorizer.authorization(refresh=True)
            except RegistryError as exc:
                if retried or not exc.temporary or cancel.is_set():
                    raise
                retried = True
                await asyncio.sleep(_RETRY_DELAY)
    job.progress.blob_done(descriptor)


def _fetch(
    job: BlobJob[Any], descriptor: Descriptor, header: Secret | None, cancel: threading.Event
) -> None:
    """Worker thread: stream one blob into a temp file and commit it if it verifies."""
    with job.layout.blob_writer(descriptor) as writer:
        job.fetcher.fetch(
            job.repository,
            descriptor,
            header,
            writer,
            cancel=cancel,
            on_bytes=job.progress.advance,
        )
        writer.commit()
