"""The mirror's HTTP server: on the daemon's event loop, beside the helpers' socket.

Why asyncio and not a thread per connection: the daemon already runs an event loop that
owns the broker channel, so token requests need no bridge; bodies go out by `sendfile(2)`
from the store (or the file a download is writing), so no request holds a thread or a
buffer while it waits for upstream bytes. Upstream I/O stays on the pull engine's threaded
fetcher (see pull/fetch.py for why), one worker per blob being downloaded.

Every connection is admitted once: a loopback client must belong to an allowed local user
(`peers.py`; default root, which is what containerd and dockerd run as); a remote one is
served only with `allow_remote`. Others get 403 DENIED to their first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import structlog

from pullbroker_sidecar.errors import MirrorRefusal
from pullbroker_sidecar.metrics import SidecarMetrics
from pullbroker_sidecar.mirror.answers import error_body, refusal_for
from pullbroker_sidecar.mirror.blobs import API_VERSION, Blobs
from pullbroker_sidecar.mirror.collect import Collector
from pullbroker_sidecar.mirror.config import MirrorConfig
from pullbroker_sidecar.mirror.downloads import Downloads
from pullbroker_sidecar.mirror.manifests import Manifests, accepted
from pullbroker_sidecar.mirror.peers import socket_owner
from pullbroker_sidecar.mirror.routes import route
from pullbroker_sidecar.mirror.upstream import Upstreams
from pullbroker_sidecar.mirror.wire import LINE_LIMIT, Request, read_request, send
from pullbroker_sidecar.pull.store import ContentStore
from pullbroker_sidecar.tokens import PullTokenIssuer

log = structlog.get_logger("pullbroker_sidecar.mirror")


class MirrorServer:
    """The node-local registry mirror (read side of the OCI distribution API)."""

    def __init__(
        self,
        config: MirrorConfig,
        broker: PullTokenIssuer,
        store: ContentStore,
        metrics: SidecarMetrics | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._upstreams = Upstreams(broker, timeout=config.timeout, broker_wait=config.broker_wait)
        self._collector = Collector(store, config.store_max_size)
        self._downloads = Downloads(store, self._collector.request)
        self._manifests = Manifests(store, serve_stale=config.serve_stale)
        self.blobs = Blobs(store, self._downloads, metrics=metrics)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Listen (OSError when the address is taken) and collect the store once."""
        self._server = await asyncio.start_server(
            self._connection, self._config.host, self._config.port, limit=LINE_LIMIT
        )
        self._collector.request()

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose for port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, end open connections and downloads."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._downloads.close()
        await self._collector.close()
        self._upstreams.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            refusal = await self._admission(writer)
            while await self._one(reader, writer, refusal):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        refusal: MirrorRefusal | None,
    ) -> bool:
        """Answer one request; False when the connection ends."""
        try:
            request = await read_request(reader)
        except MirrorRefusal as bad:
            await _refuse(writer, bad, head=False)
            return False
        if request is None:
            return False
        if refusal is not None:
            await _refuse(writer, refusal, head=request.method == "HEAD")
            return False
        return await self._answer(request, writer) and request.keep_alive

    async def _answer(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        started, seen = time.perf_counter(), _Seen()
        try:
            return await self._answered(request, writer, seen)
        finally:
            if self._metrics is not None:
                elapsed = time.perf_counter() - started
                self._metrics.mirror_request(seen.kind, seen.status, elapsed)

    async def _answered(self, request: Request, writer: asyncio.StreamWriter, seen: _Seen) -> bool:
        head = request.method == "HEAD"
        try:
            where = route(request.path, request.query.get("ns"))
            seen.kind = where.kind
            if where.kind == "base":
                await send(
                    writer, 200, {**API_VERSION, "Content-Type": "application/json"}, b"{}", head
                )
                return True
            upstream = await self._upstreams.get(where.host, where.repository)
            if where.kind == "blob":
                return await self.blobs.answer(where, upstream, request, writer)
            found = await self._manifests.get(
                where, upstream, accepted(request.headers.get("accept"))
            )
            headers = {
                **API_VERSION,
                "Content-Type": found.media_type,
                "Docker-Content-Digest": found.digest,
            }
            await send(writer, 200, headers, found.data, head)
            return True
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # every failure becomes an OCI answer
            refusal = refusal_for(exc)
            if refusal is None:
                log.error(
                    "mirror_request_failed", path=request.path[:200], error=type(exc).__name__
                )
                refusal = MirrorRefusal(500, "UNKNOWN", "the mirror failed; see the sidecar's log")
            seen.status = refusal.status
            log.info(
                "mirror_refused", path=request.path[:200], status=refusal.status, code=refusal.code
            )
            await _refuse(writer, refusal, head=head)
            return True

    async def _admission(self, writer: asyncio.StreamWriter) -> MirrorRefusal | None:
        """None when this connection may be served, else the refusal its requests get."""
        peer, ours = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        # Every connection's owner is looked up, whatever its address: a local user reaching
        # a mirror bound beyond loopback through the node's own address is still local.
        uid = await asyncio.to_thread(socket_owner, tuple(peer), tuple(ours))
        refusal = admission(peer, uid, self._config.allowed_uids, self._config.allow_remote)
        if refusal is not None and uid is not None:
            log.warning("mirror_user_refused", uid=uid)
        return refusal


def admission(
    peer: object, uid: int | None, allowed_uids: Collection[int], allow_remote: bool
) -> MirrorRefusal | None:
    """Who may use the mirror: a local socket's owner only when allowed; a socket with no
    local owner (another host) only with `allow_remote`; a loopback peer whose owner cannot
    be found is refused (fail closed)."""
    if uid is not None:
        if uid in allowed_uids:
            return None
        return MirrorRefusal(
            403,
            "DENIED",
            f"local user {uid} may not use this mirror: it pulls with the node's identity "
            "(allow a runtime's user with --mirror-allow-uid)",
        )
    if not _is_loopback(peer) and allow_remote:
        return None
    return MirrorRefusal(403, "DENIED", "this mirror serves the node's own runtimes only")


def _is_loopback(peer: object) -> bool:
    try:
        host = str(peer[0]) if isinstance(peer, tuple | list) else ""
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass
class _Seen:
    """What one request turned out to be, for its metrics (an aborted body still counts 200:
    the answer had started)."""

    kind: str = "other"
    status: int = 200


async def _refuse(writer: asyncio.StreamWriter, refusal: MirrorRefusal, *, head: bool) -> None:
    headers = {**API_VERSION, "Content-Type": "application/json"}
    if refusal.retry_after is not None:
        headers["Retry-After"] = str(refusal.retry_after)
    await send(writer, refusal.status, headers, error_body(refusal), head, refusal.message)
