"""AsyncBrokerClient: BrokerClient's grpc.aio counterpart; both share the generated RPCs.

With tracing on (pullbroker_client.tracing) its channel carries the gRPC instrumentation's
client interceptors, so every call is a client span whose W3C `traceparent` goes to the broker
in the call's metadata; the blocking BrokerClient (admin commands) is not traced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pullbroker.v1 import registry_pb2

from pullbroker_client.broker_target import DEFAULT_TIMEOUT, BrokerTarget
from pullbroker_client.generated.broker_rpc import AsyncBrokerRpc


class AsyncBrokerClient(AsyncBrokerRpc):
    """grpc.aio client with the same methods as BrokerClient; `async with` or `await close()`."""

    def __init__(self, target: BrokerTarget, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._channel = target.aio_channel()
        super().__init__(self._channel, target.address, timeout)

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def iter_registries(self, page_size: int = 0) -> AsyncIterator[registry_pb2.Registry]:
        """Every registry, following page tokens."""
        token = ""
        while True:
            page = await self.list_registries(page_size, token)
            for registry in page.registries:
                yield registry
            token = page.next_page_token
            if not token:
                return
