"""Closing what was built: everything a broker or a migration opens is closed, last built
first, by one of these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress

Closer = Callable[[], Awaitable[object]]


async def close_all(closers: list[Closer]) -> None:
    for close in reversed(closers):
        with suppress(Exception):
            await close()
