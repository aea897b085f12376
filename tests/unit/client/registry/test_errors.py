"""The registry error tree and the registry-error-body table."""

from __future__ import annotations

import json

import pytest
from pullbroker_client.errors import ClientError
from pullbroker_client.registry import errors
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    BlobUnknown,
    InvalidReference,
    ManifestUnknown,
    NameUnknown,
    NotAllowed,
    NotFoundError,
    RateLimited,
    RegistryError,
    RegistryProtocolError,
    RegistryUnreachable,
    error_for_response,
    parse_error_body,
)

CANARY = "canary-5f2b9d0e-do-not-echo"


def _body(*entries: dict[str, object]) -> bytes:
    return json.dumps({"errors": list(entries)}).encode()


class TestTree:
    """Every class hangs off ClientError, as the errors module's docstring draws it."""

    def test_every_error_is_a_client_error(self) -> None:
        """All public error classes derive from RegistryError and ClientError."""
        classes = [
            v
            for v in vars(errors).values()
            if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == errors.__name__
        ]
        assert len(classes) >= 16
        for cls in classes:
            assert issubclass(cls, RegistryError)
            assert issubclass(cls, ClientError)
            assert cls.__name__ in (errors.__doc__ or ""), cls

    def test_not_found_family(self) -> None:
        """Manifest, blob and name unknown are all NotFoundError."""
        for cls in (ManifestUnknown, BlobUnknown, NameUnknown):
            assert issubclass(cls, NotFoundError)

    def test_temporary_defaults_and_override(self) -> None:
        """Unreachable and rate-limited are temporary by default; one instance may say so too."""
        assert RegistryUnreachable("x").temporary
        assert RateLimited("x", retry_after=3).temporary
        assert not NotAllowed("x").temporary
        assert RegistryProtocolError("x", temporary=True).temporary
        assert not RegistryProtocolError("x").temporary


class TestParseErrorBody:
    """Registry bodies become (code, message) pairs, cleaned."""

    def test_codes_and_messages(self) -> None:
        """Each entry with a string code is kept, in order, codes as sent (they are quoted in
        messages; the class is chosen case-insensitively)."""
        body = _body(
            {"code": "manifest_unknown", "message": "manifest unknown", "detail": {"Tag": "x"}},
            {"code": 3},
            {"code": "DENIED"},
        )
        assert parse_error_body(body) == [("manifest_unknown", "manifest unknown"), ("DENIED", "")]
        error = error_for_response(404, body, host="h", subject="manifest a:1")
        assert isinstance(error, ManifestUnknown)
        assert error.code == "MANIFEST_UNKNOWN"

    @pytest.mark.parametrize(
        "body", [b"", b"<html>502</html>", b"[]", b'{"errors": "x"}', b"\xff\xfe", b"[" * 100_000]
    )
    def test_not_an_error_body(self, body: bytes) -> None:
        """Anything that is not the registry error shape gives no codes, and no exception."""
        assert parse_error_body(body) == []

    def test_message_is_truncated_and_cleaned(self) -> None:
        """Control characters are dropped and long messages cut to a short field."""
        [(code, message)] = parse_error_body(_body({"code": "X\n" * 100, "message": "m\x1b" * 999}))
        assert "\n" not in code
        assert len(code) <= 64
        assert "\x1b" not in message
        assert len(message) <= 200


class TestErrorForResponse:
    """The code decides the class when known; else the status does."""

    @pytest.mark.parametrize(
        ("status", "code", "cls"),
        [
            (404, "MANIFEST_UNKNOWN", ManifestUnknown),
            (404, "BLOB_UNKNOWN", BlobUnknown),
            (404, "NAME_UNKNOWN", NameUnknown),
            (401, "UNAUTHORIZED", AuthenticationRequired),
            (403, "DENIED", NotAllowed),
            (429, "TOOMANYREQUESTS", RateLimited),
            (400, "NAME_INVALID", InvalidReference),
            (400, "MANIFEST_INVALID", RegistryProtocolError),
            (403, "SOMETHING_NEW", NotAllowed),
        ],
    )
    def test_class_by_code(self, status: int, code: str, cls: type[RegistryError]) -> None:
        """A registry code maps to its class and is kept in .code."""
        exc = error_for_response(
            status, _body({"code": code, "message": "m"}), host="r.io", subject="manifest a:1"
        )
        assert type(exc) is cls
        assert exc.code == code
        assert "r.io" in str(exc)
        assert "manifest a:1" in str(exc)
        assert code in str(exc)

    def test_not_found_default_is_chosen_by_caller(self) -> None:
        """A bare 404 becomes the caller's NotFoundError class."""
        exc = error_for_response(404, b"", host="r.io", subject="blob x", not_found=BlobUnknown)
        assert type(exc) is BlobUnknown
        assert exc.code is None

    def test_rate_limited_carries_retry_after(self) -> None:
        """429 becomes RateLimited with the Retry-After the caller parsed."""
        exc = error_for_response(429, b"", host="r.io", subject="s", retry_after=7.0)
        assert isinstance(exc, RateLimited)
        assert exc.retry_after == 7.0

    @pytest.mark.parametrize(("status", "temporary"), [(503, True), (502, True), (400, False)])
    def test_server_errors_are_temporary(self, status: int, temporary: bool) -> None:
        """5xx gateway/availability answers are worth retrying; a 400 is not."""
        exc = error_for_response(status, b"oops", host="r.io", subject="s")
        assert type(exc) is RegistryProtocolError
        assert exc.temporary is temporary

    def test_known_code_wins_over_the_first_unknown(self) -> None:
        """With several entries, the first code we know decides."""
        body = _body({"code": "WEIRD"}, {"code": "NAME_UNKNOWN", "message": "repo"})
        assert type(error_for_response(404, body, host="h", subject="s")) is NameUnknown

    def test_raw_body_is_never_echoed(self) -> None:
        """Only the short code/message fields reach the message, never the rest of the body."""
        body = _body({"code": "DENIED", "message": "no", "detail": CANARY})
        assert CANARY not in str(error_for_response(403, body, host="h", subject="s"))
        html = f"<html>{CANARY}</html>".encode()
        assert CANARY not in str(error_for_response(500, html, host="h", subject="s"))
