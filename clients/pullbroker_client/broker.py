"""Typed clients for the broker: BrokerClient (blocking) and AsyncBrokerClient (grpc.aio).

Every RPC is a generated, typed method (generated/broker_rpc.py: the request's fields as
parameters, the response message back), except `issue_pull_token` and
`issue_registry_login`, which return an `IssuedPullToken` and an `IssuedRegistryLogin` whose
token or secret is a `Secret`. Every RpcError becomes a `BrokerCallError` with the status
code and the broker's message. What is written here by hand is only what is not an RPC.
"""

from __future__ import annotations

from collections.abc import Iterator

from pullbroker.v1 import registry_pb2

from pullbroker_client.broker_async import AsyncBrokerClient
from pullbroker_client.broker_errors import REQUEST_ID_KEY, BrokerCallError, to_call_error
from pullbroker_client.broker_messages import (
    IssuedPullToken,
    IssuedRegistryLogin,
    basic_credential,
)
from pullbroker_client.broker_target import DEFAULT_TIMEOUT, BrokerTarget
from pullbroker_client.generated.broker_rpc import BrokerRpc

__all__ = [
    "DEFAULT_TIMEOUT",
    "REQUEST_ID_KEY",
    "AsyncBrokerClient",
    "BrokerCallError",
    "BrokerClient",
    "BrokerTarget",
    "IssuedPullToken",
    "IssuedRegistryLogin",
    "basic_credential",
    "to_call_error",
]


class BrokerClient(BrokerRpc):
    """Blocking client; use as a context manager or call close(). `target.address` may name
    several replicas: calls are balanced over them and safe ones retried on another
    (broker_target.py)."""

    def __init__(self, target: BrokerTarget, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._channel = target.channel()
        super().__init__(self._channel, target.address, timeout)

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def iter_registries(self, page_size: int = 0) -> Iterator[registry_pb2.Registry]:
        """Every registry, following page tokens."""
        token = ""
        while True:
            page = self.list_registries(page_size, token)
            yield from page.registries
            token = page.next_page_token
            if not token:
                return
