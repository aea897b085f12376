"""The mirror's HTTP/1.1 request heads and Range arithmetic."""

from __future__ import annotations

import asyncio

import pytest
from pullbroker_sidecar.errors import MirrorRefusal
from pullbroker_sidecar.mirror.wire import (
    MAX_HEADERS,
    REASON_LIMIT,
    Request,
    byte_range,
    head_bytes,
    read_request,
    reason_phrase,
)


def _read(raw: bytes) -> Request | None:
    async def go() -> Request | None:
        reader = asyncio.StreamReader(limit=8192)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_request(reader)

    return asyncio.run(go())


class TestRequestHead:
    """Heads are parsed, bounded, and GET/HEAD only."""

    def test_repeated_headers_are_joined(self) -> None:
        """Go clients send one Accept line per media type: all of them count."""
        request = _read(
            b"GET /v2/a/b/manifests/v1?ns=h.io HTTP/1.1\r\nAccept: x/a\r\nAccept: x/b\r\n\r\n"
        )
        assert request is not None
        assert request.headers["accept"] == "x/a, x/b"
        assert request.query == {"ns": "h.io"}
        assert request.keep_alive is True

    def test_write_methods_refused(self) -> None:
        """The mirror is read-only."""
        with pytest.raises(MirrorRefusal) as caught:
            _read(b"PUT /v2/a/b/manifests/v1 HTTP/1.1\r\n\r\n")
        assert caught.value.status == 405

    def test_too_many_headers(self) -> None:
        """A head with more than MAX_HEADERS lines is refused, not held."""
        lines = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS + 5))
        with pytest.raises(MirrorRefusal) as caught:
            _read(b"GET /v2/ HTTP/1.1\r\n" + lines + b"\r\n")
        assert caught.value.status == 431

    def test_closed_connection(self) -> None:
        """EOF before a request: None (the connection ends quietly)."""
        assert _read(b"") is None


class TestByteRange:
    """Single ranges become [start, end); anything else is the whole blob."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("bytes=0-", (0, 100)),
            ("bytes=10-19", (10, 20)),
            ("bytes=90-500", (90, 100)),
            ("bytes=-10", (90, 100)),
            ("bytes=0-1,5-6", None),
            ("items=0-1", None),
        ],
    )
    def test_ranges(self, value: str | None, expected: tuple[int, int] | None) -> None:
        """As RFC 9110 reads them, clipped to the blob."""
        assert byte_range(value, 100) == expected

    def test_past_the_end(self) -> None:
        """A start at or past the end is 416."""
        with pytest.raises(MirrorRefusal) as caught:
            byte_range("bytes=100-", 100)
        assert caught.value.status == 416


class TestReasonPhrase:
    """A HEAD answer has no body: the refusal's message rides in the status line."""

    def test_standard_phrase_without_detail(self) -> None:
        assert head_bytes(404, {}).startswith(b"HTTP/1.1 404 Not Found\r\n")

    def test_detail_follows_the_phrase(self) -> None:
        head = head_bytes(403, {"A": "b"}, "the broker refused: team/other is not allowed")
        assert head.startswith(b"HTTP/1.1 403 Forbidden: the broker refused: team/other is")
        assert head.endswith(b"\r\nA: b\r\n\r\n")

    def test_line_breaks_and_non_ascii_cannot_split_the_head(self) -> None:
        phrase = reason_phrase(403, "a\r\nSet-Cookie: x=1\x00 \u00e9t\u00e9")
        assert phrase == "Forbidden: a Set-Cookie: x=1 t"
        assert head_bytes(403, {}, "a\r\nB: c").count(b"\r\n") == 2

    def test_long_detail_is_cut(self) -> None:
        phrase = reason_phrase(503, "x" * 1000)
        assert phrase.startswith("Service Unavailable: xxx")
        assert phrase.endswith("...")
        assert len(phrase) == len("Service Unavailable: ") + REASON_LIMIT

    def test_blank_detail_keeps_the_standard_phrase(self) -> None:
        assert reason_phrase(429, " \r\n ") == "Too Many Requests"


class TestHeaderValues:
    def test_a_value_with_a_line_break_is_refused(self) -> None:
        """A CR/LF in a value (a registry document's text) would add a header: refused."""
        with pytest.raises(ValueError, match="Content-Type"):
            head_bytes(200, {"Content-Type": "a/b\r\nDocker-Content-Digest: sha256:0"})

    def test_non_ascii_is_refused(self) -> None:
        with pytest.raises(ValueError, match="Content-Type"):
            head_bytes(200, {"Content-Type": "a/\u00e9"})
