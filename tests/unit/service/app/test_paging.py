"""The List RPCs' shared pagination: size clamp, opaque cursor, last page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from pullbroker_service.app.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    paged,
)
from pullbroker_service.domain.errors import InvalidArgument


@dataclass(frozen=True)
class Row:
    id: str


ROWS = [Row(f"r{i:05d}") for i in range(2500)]


async def fetch(limit: int, after: str | None) -> Sequence[Row]:
    """The store's contract: rows ordered by id, after `after`, at most `limit`."""
    return [r for r in ROWS if after is None or r.id > after][:limit]


class TestPaged:
    """Sizes are clamped, cursors continue exactly where the page ended."""

    async def test_zero_means_the_default_size(self) -> None:
        """page_size 0 gives DEFAULT_PAGE_SIZE rows and a token."""
        page, token = await paged(0, "", fetch)
        assert len(page) == DEFAULT_PAGE_SIZE
        assert token

    async def test_size_is_clamped(self) -> None:
        """A page never holds more than MAX_PAGE_SIZE rows."""
        page, _ = await paged(10**6, "", fetch)
        assert len(page) == MAX_PAGE_SIZE

    async def test_walking_the_tokens_sees_every_row_once(self) -> None:
        """Following next tokens returns each row exactly once, then an empty token."""
        seen: list[Row] = []
        token = ""
        while True:
            page, token = await paged(MAX_PAGE_SIZE, token, fetch)
            seen += page
            if not token:
                break
        assert seen == ROWS

    async def test_bad_input_is_invalid_argument(self) -> None:
        """A negative size or a token this broker did not issue is InvalidArgument."""
        with pytest.raises(InvalidArgument, match="negative"):
            await paged(-1, "", fetch)
        with pytest.raises(InvalidArgument, match="not one this broker issued"):
            await paged(10, "%%%not-base64", fetch)

    def test_token_round_trips(self) -> None:
        """A cursor decodes to the id it was made from."""
        assert decode_page_token(encode_page_token("r00042")) == "r00042"
