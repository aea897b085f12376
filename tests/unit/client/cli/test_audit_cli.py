"""`pullbroker audit tail`: last events, filters, and following an appended or rotated file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pullbroker_client.cli.audit import Filters, follow, last_events, parse_line


def line(**fields: str) -> str:
    base = {"action": "token.issue", "outcome": "allowed", "identity": "spiffe://x/node/n1"}
    return json.dumps({**base, **fields}) + "\n"


class TestFilters:
    """Identity globs, registry ids or names, and outcomes combine."""

    @pytest.mark.parametrize(
        ("filters", "event", "kept"),
        [
            (Filters(identity="spiffe://*/node/*"), {"identity": "spiffe://x/node/n1"}, True),
            (Filters(identity="spiffe://*/node/*"), {"identity": "spiffe://x/admin"}, False),
            (Filters(registry="abc"), {"registry": "registries/abc"}, True),
            (Filters(registry="registries/abc"), {"registry": "registries/abc"}, True),
            (Filters(registry="abc"), {"registry": "registries/abcd"}, False),
            (Filters(outcome="denied"), {"outcome": "allowed"}, False),
            (Filters(outcome="denied", registry="t"), {"outcome": "denied", "registry": "t"}, True),
        ],
    )
    def test_match(self, filters: Filters, event: dict[str, Any], kept: bool) -> None:
        """Each filter keeps exactly the events it names."""
        assert filters.match(event) is kept

    def test_damaged_lines_are_skipped(self) -> None:
        """A line cut short by a crash, or not an object, is not an event."""
        assert parse_line('{"action": "tok') is None
        assert parse_line("[1, 2]") is None
        assert parse_line("") is None


class TestTail:
    """The last N matching events, then what is appended."""

    def test_last_events(self, tmp_path: Path) -> None:
        """Only the last `count` matching events are shown."""
        path = tmp_path / "audit.jsonl"
        path.write_text("".join(line(request_id=str(i)) for i in range(5)))
        with path.open() as file:
            kept = last_events(file, Filters(), 2)
        assert [e["request_id"] for e in kept] == ["3", "4"]

    def test_follow_appends_and_rotation(self, tmp_path: Path) -> None:
        """Appended lines (even written in pieces) arrive; a replaced file is reopened."""
        path = tmp_path / "audit.jsonl"
        path.write_text(line(request_id="old"))
        steps = [
            lambda: _append(path, line(request_id="1")[:10]),
            lambda: _append(path, line(request_id="1")[10:]),
            lambda: _rotate(path, line(request_id="2")),
        ]

        def sleep(_seconds: float) -> None:
            if steps:
                steps.pop(0)()

        seen: list[str] = []
        with path.open() as file:
            file.read()
            for event in follow(path, file, Filters(), stop=lambda: len(seen) >= 2, sleep=sleep):
                seen.append(event["request_id"])
        assert seen == ["1", "2"]


def _append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def _rotate(path: Path, text: str) -> None:
    path.rename(path.with_suffix(".1"))
    path.write_text(text)
