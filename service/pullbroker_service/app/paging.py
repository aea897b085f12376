"""List pagination shared by the List RPCs (AIP-158): a size clamp and an opaque cursor.

A page is asked for with one extra row; if it arrives, the last row of the page becomes the
next cursor. Cursors are the last id, base64url-encoded: opaque to callers, not a secret.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from pullbroker_service.domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=HasId)


async def paged(
    page_size: int,
    page_token: str,
    fetch: Callable[[int, str | None], Awaitable[Sequence[R]]],
) -> tuple[list[R], str]:
    """One page from `fetch(limit, after_id)` and the token of the next ("" at the end)."""
    if page_size < 0:
        raise InvalidArgument(
            f"page_size must not be negative (0 means {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE})"
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    found = await fetch(size + 1, decode_page_token(page_token) if page_token else None)
    page = list(found[:size])
    return page, encode_page_token(page[-1].id) if len(found) > size else ""


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(
            "page_token is not one this broker issued: start again without it"
        ) from exc
