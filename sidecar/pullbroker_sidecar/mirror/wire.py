"""HTTP/1.1 for the mirror: read one request head, write answers, stream files zero-copy.

Only what runtimes send to a registry mirror: GET and HEAD without a body, keep-alive by
default (HTTP/1.1), headers bounded (a line of at most `LINE_LIMIT` bytes, at most
`MAX_HEADERS` of them) so a local client cannot make the daemon hold arbitrary memory.
Bodies from files go through `loop.sendfile` (the kernel's `sendfile(2)` on a plain TCP
socket), so a 256 MiB layer never passes through Python buffers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from pullbroker_sidecar.errors import MirrorRefusal

LINE_LIMIT = 8 << 10
MAX_HEADERS = 100
HEAD_TIMEOUT = 60.0
"""An idle keep-alive connection (or a client that stops half-way through a head) is
closed after this long."""


@dataclass(frozen=True)
class Request:
    """One request head; header names lower-case."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    keep_alive: bool


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection; None when the client closed it (or idled)."""
    try:
        line = await asyncio.wait_for(reader.readline(), HEAD_TIMEOUT)
        if not line:
            return None
        head = [line]
        while len(head) <= MAX_HEADERS + 1:
            line = await asyncio.wait_for(reader.readline(), HEAD_TIMEOUT)
            if line in (b"\r\n", b"\n", b""):
                return _parse(head)
            head.append(line)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None
    except asyncio.LimitOverrunError:
        raise MirrorRefusal(431, "UNSUPPORTED", "request header line too long") from None
    except ValueError:  # StreamReader reports an over-long line so
        raise MirrorRefusal(431, "UNSUPPORTED", "request header line too long") from None
    raise MirrorRefusal(431, "UNSUPPORTED", f"more than {MAX_HEADERS} request headers")


def _parse(head: list[bytes]) -> Request:
    try:
        method, target, version = head[0].decode("ascii").split()
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, value = line.decode("latin-1").split(":", 1)
            key = name.strip().lower()
            # Go clients (podman, skopeo) send one Accept line per media type.
            seen = headers.get(key)
            headers[key] = f"{seen}, {value.strip()}" if seen else value.strip()
    except ValueError:
        raise MirrorRefusal(400, "UNSUPPORTED", "malformed request head") from None
    if method not in ("GET", "HEAD"):
        raise MirrorRefusal(405, "UNSUPPORTED", "this mirror is read-only (GET and HEAD)")
    if headers.get("transfer-encoding") or headers.get("content-length", "0") != "0":
        raise MirrorRefusal(400, "UNSUPPORTED", "requests to this mirror carry no body")
    parts = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return Request(method, unquote(parts.path), query, headers, keep_alive)


REASON_LIMIT = 200
"""Characters of a refusal's message carried in the status line's reason phrase."""


def reason_phrase(status: int, detail: str = "") -> str:
    """The status line's reason: the standard phrase, then `detail` when given.

    A runtime resolving a tag sends HEAD, whose answer has no body; containerd and the
    kubelet then show only the status line ("403 Forbidden"). Carrying the refusal's message
    there makes the pod's event say why. The detail is cut to printable ASCII (no CR/LF can
    split the head) and `REASON_LIMIT` characters.
    """
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
    clean = " ".join("".join(c if " " <= c <= "~" else " " for c in detail).split())
    if not clean:
        return phrase
    if len(clean) > REASON_LIMIT:
        clean = clean[: REASON_LIMIT - 3] + "..."
    return f"{phrase}: {clean}"


def head_bytes(status: int, headers: Mapping[str, str], detail: str = "") -> bytes:
    """A status line and headers, ready to write; `detail` extends the reason phrase.

    A header value outside printable ASCII is a bug upstream of here (values come from
    registries' documents): it raises rather than let a CR/LF add a header to the answer.
    """
    lines = [f"HTTP/1.1 {status} {reason_phrase(status, detail)}"]
    for name, value in headers.items():
        if not all(" " <= c <= "~" for c in f"{name}{value}"):
            raise ValueError(f"header {name!r} has a character a head may not carry")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send(
    writer: asyncio.StreamWriter,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    head: bool,
    detail: str = "",
) -> None:
    """A whole answer held in memory (manifests, errors); `head`: headers only; `detail`
    extends the reason phrase (see `reason_phrase`)."""
    writer.write(head_bytes(status, {**headers, "Content-Length": str(len(body))}, detail))
    if not head:
        writer.write(body)
    await writer.drain()


async def send_file(writer: asyncio.StreamWriter, file: BinaryIO, offset: int, count: int) -> None:
    """`count` bytes of `file` from `offset`, by sendfile(2) where the transport allows."""
    if count <= 0:
        return
    await writer.drain()
    loop = asyncio.get_running_loop()
    await loop.sendfile(writer.transport, file, offset, count)


def byte_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The `[start, end)` a single `Range: bytes=a-b` asks for; None for the whole blob.

    MirrorRefusal 416 for a range outside the blob (multi-ranges are answered whole, which
    RFC 9110 allows).
    """
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].strip().partition("-")
    try:
        if first:
            start, end = int(first), (int(last) + 1 if last else size)
        else:
            start, end = max(0, size - int(last)), size
    except ValueError:
        return None
    end = min(end, size)
    if start >= size or start >= end:
        raise MirrorRefusal(416, "RANGE_INVALID", f"the blob has {size} bytes")
    return start, end
