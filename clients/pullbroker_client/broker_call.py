"""How one RPC is made: deadline, request id, and RpcError -> BrokerCallError, in one place.

The generated per-RPC methods (generated/broker_rpc.py) call these two bases; BrokerClient
and AsyncBrokerClient add the channel and the conveniences that are not RPCs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import grpc

from pullbroker_client.broker_errors import to_call_error
from pullbroker_client.broker_target import call_metadata

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class RpcCaller:
    """Blocking calls: unary ones under the client's timeout unless the call names one."""

    def __init__(self, address: str, timeout: float) -> None:
        self._address = address
        self._timeout = timeout

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        request_id: str | None,
        timeout: float | None,
    ) -> Resp:
        try:
            return method(
                request, timeout=timeout or self._timeout, metadata=call_metadata(request_id)
            )
        except grpc.RpcError as exc:
            raise to_call_error(exc, self._address) from None

    def _stream(
        self,
        method: grpc.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        request_id: str | None,
        timeout: float | None,
    ) -> Iterator[Resp]:
        """Messages until the server ends the stream; no deadline unless `timeout` is given."""
        stream = method(request, timeout=timeout, metadata=call_metadata(request_id))
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise to_call_error(exc, self._address) from None
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it unannotated


class AsyncRpcCaller:
    """grpc.aio calls, alike. `timeout` is the RPC's own deadline, sent to the server too,
    which asyncio.timeout would not do: hence the parameters (ASYNC109)."""

    def __init__(self, address: str, timeout: float) -> None:
        self._address = address
        self._timeout = timeout

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        request_id: str | None,
        timeout: float | None,  # noqa: ASYNC109 - the gRPC deadline (see the class)
    ) -> Resp:
        try:
            return await method(
                request, timeout=timeout or self._timeout, metadata=call_metadata(request_id)
            )
        except grpc.RpcError as exc:
            raise to_call_error(exc, self._address) from None

    async def _stream(
        self,
        method: grpc.aio.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        request_id: str | None,
        timeout: float | None,  # noqa: ASYNC109 - the gRPC deadline (see the class)
    ) -> AsyncIterator[Resp]:
        """Messages until the server ends the stream (bound it with `timeout` or asyncio)."""
        stream = method(request, timeout=timeout, metadata=call_metadata(request_id))
        try:
            async for item in stream:
                yield item
        except grpc.RpcError as exc:
            raise to_call_error(exc, self._address) from None
        finally:
            stream.cancel()
