"""The daemon's Unix socket server (protocol: see protocol.py).

The socket is created with umask 0177, so it is 0600 from the first instant, and every
connection's peer uid (SO_PEERCRED) must be the daemon's own or root's: a socket file
made group-readable later by mistake still does not answer other users. A stale socket
file left by a crash is replaced; one that still answers belongs to a running daemon and
is left alone (SocketInUse). Each connection carries one request and one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from pullbroker_client.secret import Secret

from pullbroker_sidecar.daemon.login_cache import Login, Logins, NoLogin
from pullbroker_sidecar.daemon.protocol import (
    BAD_REQUEST,
    INTERNAL,
    MAX_LINE,
    MAX_SOCKET_PATH,
    VERSION,
    decode,
    encode,
)
from pullbroker_sidecar.errors import InvalidOption, SocketInUse
from pullbroker_sidecar.metrics import SidecarMetrics

log = structlog.get_logger("pullbroker_sidecar.server")

READ_TIMEOUT = 5.0
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ChannelStatus(Protocol):
    """What `status` reports about the broker channel (BrokerChannel)."""

    def status(self) -> dict[str, Any]: ...


@dataclass
class Counters:
    """What `status` reports about requests."""

    served: int = 0
    refused: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


class SidecarServer:
    """Serves helpers on `path` with `logins`; `channel` is reported by `status`."""

    def __init__(
        self,
        path: Path,
        logins: Logins,
        channel: ChannelStatus,
        metrics: SidecarMetrics | None = None,
    ) -> None:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise InvalidOption(
                f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes, the limit of Unix "
                "sockets: choose a shorter --socket"
            )
        self.path = path
        self._logins = logins
        self._channel = channel
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self.counters = Counters()

    async def start(self) -> None:
        """Bind the socket (0600) and start serving."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _clear_stale(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        """Stop accepting, let running requests finish, remove the socket file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _peer_allowed(writer):
                log.warning("request_refused", reason="peer uid not allowed")
                return
            try:
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                request = decode(line)
            except (ValueError, TimeoutError, asyncio.LimitOverrunError):
                answer: dict[str, Any] = _error(BAD_REQUEST, "send one JSON object on one line")
            else:
                answer = await self._answered(request)
            writer.write(encode(answer))
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the helper went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answered(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer to `request`; one `internal` line if answering failed unexpectedly.

        Only the error's type is logged: its text may quote what was asked (a pod's token).
        """
        try:
            answer = await self._answer(request)
        except Exception as exc:
            log.error("request_failed", op=str(request.get("op"))[:40], error=type(exc).__name__)
            answer = _error(INTERNAL, "the sidecar failed to answer this request: see its log")
        if self._metrics is not None:
            result = "ok" if answer.get("ok") else str(answer.get("error"))
            self._metrics.helper_request(request.get("op"), result)
        return answer

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            if op == "ping":
                return {"ok": True, "pid": os.getpid(), "version": VERSION}
            if op == "status":
                return self._status()
            if op == "registries":
                return {"ok": True, "registries": self._logins.registries()}
            if op == "login":
                login = await self._logins.for_host(_text(request, "host"))
                return self._served(op, login, {})
            if op == "image_login":
                pod_token = _optional_text(request, "service_account_token")
                login = await self._logins.for_image(
                    _text(request, "image"), Secret(pod_token) if pod_token else None
                )
                key = f"{login.domain}/{login.repository}"
                return self._served(op, login, {"repository": login.repository, "key": key})
        except NoLogin as exc:
            self.counters.refused += 1
            self.counters.by_code[exc.code] = self.counters.by_code.get(exc.code, 0) + 1
            log.info("login_refused", op=op, code=exc.code, reason=str(exc))
            return _error(exc.code, str(exc))
        return _error(BAD_REQUEST, f"unknown op {str(op)[:40]!r}")

    def _served(self, op: str, login: Login, extra: dict[str, str]) -> dict[str, Any]:
        self.counters.served += 1
        log.info(
            "login_served",
            op=op,
            registry=login.registry,
            repository=login.repository,
            passthrough=login.passthrough,
        )
        return {
            "ok": True,
            "registry_host": login.registry_host,
            "username": login.username,
            "secret": login.secret.reveal(),
            "expires_at": login.expires_at,
            "identity_token": login.identity_token,
            "passthrough": login.passthrough,
            "repository_scoped": login.repository_scoped,
            **extra,
        }

    def _status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "pid": os.getpid(),
            "cached": len(self._logins.cache),
            "broker_calls": self._logins.cache.broker_calls,
            "served": self.counters.served,
            "refused": self.counters.refused,
            "refused_by_code": dict(self.counters.by_code),
            **self._channel.status(),
        }


def _text(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        raise NoLogin(BAD_REQUEST, f"`{name}` must be a non-empty string")
    return _utf8(value.strip(), name)


def _optional_text(request: dict[str, Any], name: str) -> str | None:
    """`name` if the request has it as a non-empty string (e.g. a pod's token), else None."""
    value = request.get(name)
    return _utf8(value, name) if isinstance(value, str) and value else None


def _utf8(value: str, name: str) -> str:
    # JSON's \ud800 escapes decode to lone surrogates, which no protocol downstream can carry.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NoLogin(BAD_REQUEST, f"`{name}` must be valid Unicode text") from None
    return value


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return False
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return uid in (0, os.getuid())


def _clear_stale(path: Path) -> None:
    """Remove a socket file nobody answers on; refuse to take over a live one."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise InvalidOption(
            f"{path} exists and is not a socket: remove it or choose another --socket"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise SocketInUse(f"another pullbroker sidecar already serves {path}: stop it first")
