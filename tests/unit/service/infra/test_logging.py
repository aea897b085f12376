"""structlog JSON lines with redaction by key name and by registered secret value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pullbroker_client.secret import Secret
from pullbroker_service.infra.logging import (
    REDACTED,
    configure_logging,
    forget_secret_value,
    get_logger,
    redact_processor,
    register_secret_value,
    scrub,
)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs" / "broker.log"
    configure_logging(log_file=path, level="debug", stderr=False)
    try:
        yield path
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging(log_file=None, stderr=False)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class TestKeyRedaction:
    @pytest.mark.parametrize(
        "key", ["password", "token", "authorization", "client_secret", "new_password", "Key-Json"]
    )
    def test_secret_keys_are_redacted(self, key: str) -> None:
        """A value under a secret-sounding key is replaced, whatever it is."""
        event = redact_processor(None, "info", {"event": "x", key: "value-abc"})
        assert event[key] == REDACTED

    def test_nested_values_are_redacted(self) -> None:
        """Secret keys inside nested dicts and lists are replaced too."""
        event = redact_processor(None, "info", {"event": "x", "req": [{"password": "p1"}]})
        assert event["req"] == [{"password": REDACTED}]

    def test_innocent_keys_are_kept(self) -> None:
        """Keys like token_expires_at or scope are not secrets."""
        event = redact_processor(None, "info", {"token_expires_at": "t", "scope": "s"})
        assert event == {"token_expires_at": "t", "scope": "s"}


class TestValueRedaction:
    def test_registered_value_is_scrubbed_inside_text(self) -> None:
        """A registered secret is replaced wherever it appears inside a string."""
        register_secret_value(Secret("value-redaction-42"))
        assert scrub("header Bearer value-redaction-42!") == f"header Bearer {REDACTED}!"

    def test_forgotten_value_is_no_longer_scrubbed(self) -> None:
        """forget_secret_value stops scrubbing a deleted credential."""
        register_secret_value("forget-me-value-1")
        forget_secret_value("forget-me-value-1")
        assert scrub("forget-me-value-1") == "forget-me-value-1"

    def test_short_values_are_ignored(self) -> None:
        """Values too short to be credentials are not registered (they would blank words)."""
        register_secret_value("abc")
        assert scrub("abc abc") == "abc abc"


class TestJsonLines:
    def test_lines_are_json_with_context(self, log_file: Path) -> None:
        """Each event is one JSON line with level, timestamp and bound contextvars."""
        structlog.contextvars.bind_contextvars(request_id="r-1")
        get_logger("tests").info("thing_happened", count=2)
        [line] = lines(log_file)
        assert line["event"] == "thing_happened"
        assert line["request_id"] == "r-1"
        assert line["level"] == "info"
        assert line["logger_name"] == "tests"
        assert "timestamp" in line

    def test_secret_in_exception_is_scrubbed(self, log_file: Path) -> None:
        """A registered secret in an exception message is scrubbed from the traceback."""
        register_secret_value("exc-secret-value-7")
        try:
            raise RuntimeError("failed with exc-secret-value-7")
        except RuntimeError as exc:
            get_logger().error("call_failed", exc_info=exc)
        text = log_file.read_text()
        assert "exc-secret-value-7" not in text
        assert "RuntimeError" in text

    def test_secret_objects_never_render(self, log_file: Path) -> None:
        """A Secret passed as a value under an innocent key renders as [secure]."""
        get_logger().info("value_logged", thing=Secret("secret-object-value"))
        text = log_file.read_text()
        assert "secret-object-value" not in text
        assert "[secure]" in text

    def test_level_filter(self, tmp_path: Path) -> None:
        """Below the configured level nothing is written."""
        path = tmp_path / "quiet.log"
        configure_logging(log_file=path, level="warning", stderr=False)
        get_logger().info("ignored_event")
        get_logger().warning("kept_event")
        configure_logging(log_file=None, stderr=False)
        assert [line["event"] for line in lines(path)] == ["kept_event"]
