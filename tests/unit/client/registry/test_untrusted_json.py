"""Registry and token-endpoint bodies are read through the one bounded JSON reader: deep
nesting is refused before parsing, and only UTF-8 is JSON (RFC 8259)."""

from __future__ import annotations

import json

from pullbroker_client.registry.errors import parse_error_body

ERRORS = {"errors": [{"code": "DENIED", "message": "no"}]}


class TestErrorBodies:
    def test_utf8_error_body_is_read(self) -> None:
        assert parse_error_body(json.dumps(ERRORS).encode()) == [("DENIED", "no")]

    def test_utf16_is_not_json(self) -> None:
        """json.loads would guess UTF-16; the bounded reader refuses it (its depth check
        cannot read such bytes)."""
        assert parse_error_body(json.dumps(ERRORS).encode("utf-16")) == []

    def test_deep_nesting_is_refused_quietly(self) -> None:
        assert parse_error_body(b"[" * 100_000 + b"]" * 100_000) == []
