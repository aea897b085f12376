"""Just enough of the Docker Engine API, over its Unix socket, to load and inspect images.

No docker CLI and no docker SDK: `POST /images/load` takes the image archive as a chunked
request body, written straight from the node store into the socket, and `GET
/images/{name}/json` confirms what dockerd now holds. Only `unix://` hosts are spoken to;
a TCP DOCKER_HOST would need TLS client certificates this module does not handle.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import quote

from pullbroker_sidecar.errors import DestinationError

DEFAULT_HOST = "unix:///var/run/docker.sock"
_UNIX = "unix://"
_MAX_BODY = 1 << 20


def socket_path(host: str | None = None) -> str:
    """The socket path of `host` (else $DOCKER_HOST, else /var/run/docker.sock)."""
    chosen = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    if chosen.startswith(_UNIX):
        return chosen[len(_UNIX) :]
    if chosen.startswith("/"):
        return chosen
    raise DestinationError(
        f"docker host {chosen!r} is not a unix:// socket: the sidecar loads images only "
        "through dockerd's local socket (e.g. docker-daemon:unix:///var/run/docker.sock)"
    )


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _ChunkedBody:
    """A write-only file that frames what it is given as HTTP/1.1 chunks."""

    def __init__(self, conn: _UnixConnection) -> None:
        self._conn = conn

    def write(self, data: bytes) -> int:
        if data:
            self._conn.send(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        return len(data)

    def flush(self) -> None:
        pass

    def end(self) -> None:
        self._conn.send(b"0\r\n\r\n")


class DockerEngine:
    """A dockerd reached through its Unix socket."""

    def __init__(self, host: str | None = None, *, timeout: float = 300.0) -> None:
        self.path = socket_path(host)
        self._timeout = timeout

    def load(self, write_archive: Callable[[IO[bytes]], None]) -> list[str]:
        """`POST /images/load` with the archive `write_archive` streams; the names loaded."""
        conn = self._connect("load the image")
        try:
            conn.putrequest("POST", "/images/load?quiet=1")
            conn.putheader("Content-Type", "application/x-tar")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            body = _ChunkedBody(conn)
            try:
                write_archive(body)  # type: ignore[arg-type]
                body.end()
            except (BrokenPipeError, ConnectionResetError):
                pass  # dockerd gave up early: its answer below says why
            resp = conn.getresponse()
            data = resp.read(_MAX_BODY)
        except OSError as exc:
            raise self._unreachable("load the image", exc) from None
        finally:
            conn.close()
        if resp.status != 200:
            raise DestinationError(f"dockerd refused the image ({resp.status}): {_message(data)}")
        return _loaded(data)

    def image(self, name: str) -> dict[str, Any] | None:
        """`GET /images/{name}/json`, or None when dockerd has no such image."""
        conn = self._connect("inspect the image")
        try:
            conn.request("GET", f"/images/{quote(name, safe='')}/json")
            resp = conn.getresponse()
            data = resp.read(_MAX_BODY)
        except OSError as exc:
            raise self._unreachable("inspect the image", exc) from None
        finally:
            conn.close()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise DestinationError(f"dockerd could not inspect {name} ({resp.status})")
        document: dict[str, Any] = json.loads(data)
        return document

    def _connect(self, what: str) -> _UnixConnection:
        conn = _UnixConnection(self.path, self._timeout)
        try:
            conn.connect()
        except OSError as exc:
            raise self._unreachable(what, exc) from None
        return conn

    def _unreachable(self, what: str, exc: OSError) -> DestinationError:
        return DestinationError(
            f"cannot {what} through dockerd at {self.path} ({exc.strerror or exc}): is dockerd "
            "running, and may this user use its socket? (set DOCKER_HOST or docker-daemon:SOCKET)"
        )


def _loaded(data: bytes) -> list[str]:
    """The `Loaded image: NAME` / `Loaded image ID: ID` lines of dockerd's JSON stream."""
    names: list[str] = []
    for line in data.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if "error" in event or "errorDetail" in event:
            raise DestinationError(f"dockerd refused the image: {_event_error(event)}")
        stream = event.get("stream")
        if isinstance(stream, str) and stream.startswith("Loaded image"):
            names.append(stream.split(":", 1)[1].strip())
    return names


def _event_error(event: dict[str, Any]) -> str:
    detail = event.get("errorDetail")
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        return str(detail["message"])[:300]
    return str(event.get("error", "unknown error"))[:300]


def _message(data: bytes) -> str:
    try:
        document = json.loads(data)
    except ValueError:
        return data[:300].decode("utf-8", "replace").strip() or "no message"
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return str(document["message"])[:300]
    return "no message"
