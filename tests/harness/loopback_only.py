"""Loopback-only sockets for dial-guard tests, and a redirect target that would accept a dial.

A dial-guard test feeds the guard a refused answer (169.254.169.254, fd00:ec2::254, fe80::1)
and asserts the target saw nothing. With a broken guard, an answer set holding only refused
addresses would be dialled for real: off this host, and the `requests == []` assertion
could not fail. `LoopbackOnly` makes every connect to anything but a loopback address raise
at once, in-process, and records it; leaving the block with an attempt recorded fails, so a
broken guard fails the test even when the product swallows the connect error.

`named_server` is a local HTTPS server whose certificate names a host only an injected
resolver knows (storage.test): a broken guard that connects to it gets through TLS and its
request is recorded, so "the refused target got no request" is an assertion that can fail.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import secrets
import socket
import ssl
from collections.abc import Callable
from contextlib import ExitStack
from types import TracebackType
from typing import Any
from unittest import mock

from tests.harness.certs import TestCA
from tests.harness.https_server import Handler, HTTPSServer

__all__ = ["LoopbackOnly", "is_loopback", "named_server"]

_LOCAL_NAMES = frozenset({"localhost"})


def is_loopback(host: object) -> bool:
    """Whether `host` (an address literal, maybe with a %scope, or a name) is this host only.
    Names other than localhost count as remote: connecting to one would ask DNS."""
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class LoopbackOnly:
    """While entered, connects to non-loopback addresses raise ENETUNREACH and are recorded
    in `attempts` (as "host:port"); __exit__ fails if any was attempted.

    Covers socket.socket.connect / connect_ex (http.client, socket.create_connection and the
    selector event loop all end there), socket.create_connection itself, and the asyncio
    loop's create_connection / sock_connect (anyio, hence httpx's AnyIOBackend, dials through
    loop.create_connection). Unix sockets pass.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._stack = ExitStack()

    def _refuse(self, host: object, port: object) -> OSError:
        where = f"{host}:{port}"
        self.attempts.append(where)
        return OSError(errno.ENETUNREACH, f"loopback_only: refused a connect to {where}")

    def _check(self, address: object) -> None:
        if isinstance(address, tuple) and address:
            host, port = address[0], address[1] if len(address) > 1 else None
            if not is_loopback(host):
                raise self._refuse(host, port)

    def __enter__(self) -> LoopbackOnly:
        check = self._check
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_create_connection = socket.create_connection
        loop_class = asyncio.base_events.BaseEventLoop
        real_loop_create_connection: Callable[..., Any] = loop_class.create_connection
        real_sock_connect: Callable[..., Any] = (
            asyncio.selector_events.BaseSelectorEventLoop.sock_connect
        )

        def connect(sock: socket.socket, address: Any) -> None:
            check(address)
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            check(address)
            return real_connect_ex(sock, address)

        def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
            check(address)
            return real_create_connection(address, *args, **kwargs)

        async def loop_create_connection(
            loop: asyncio.AbstractEventLoop, protocol_factory: Any, host: Any = None,
            port: Any = None, *args: Any, **kwargs: Any,
        ) -> Any:  # fmt: skip
            if host is not None:
                check((host, port))
            return await real_loop_create_connection(
                loop, protocol_factory, host, port, *args, **kwargs
            )

        async def sock_connect(
            loop: asyncio.AbstractEventLoop, sock: socket.socket, address: Any
        ) -> None:
            check(address)
            await real_sock_connect(loop, sock, address)

        stack = self._stack
        stack.enter_context(mock.patch.object(socket.socket, "connect", connect))
        stack.enter_context(mock.patch.object(socket.socket, "connect_ex", connect_ex))
        stack.enter_context(mock.patch.object(socket, "create_connection", create_connection))
        stack.enter_context(
            mock.patch.object(loop_class, "create_connection", loop_create_connection)
        )
        stack.enter_context(
            mock.patch.object(
                asyncio.selector_events.BaseSelectorEventLoop, "sock_connect", sock_connect
            )
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        if exc_type is None:
            assert self.attempts == [], (
                f"connects to non-loopback addresses were attempted: {self.attempts} "
                "(the dial guard let a refused address through)"
            )


def named_server(ca: TestCA, host: str, handler: Handler | None = None) -> HTTPSServer:
    """An HTTPS server on 127.0.0.1 (not started) whose certificate names `host` and
    127.0.0.1, so a client dialling `host` at this address passes TLS and is recorded."""
    cert = ca.issue(f"{host}-{secrets.token_hex(4)}", dns=[host], ips=["127.0.0.1"], client=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    return HTTPSServer(handler, context, name=host)
