"""The `token_cache` section: how many minted tokens each replica keeps in memory, and how
long one shared mint may take before its waiters get UNAVAILABLE."""

from __future__ import annotations

from dataclasses import dataclass

from pullbroker_service.config.errors import ConfigError


@dataclass(frozen=True)
class TokenCacheConfig:
    """Tokens live only in each replica's memory, least recently used first out."""

    max_entries: int = 10_000
    """Tokens kept (one per registry, repository scope and credential version)."""

    max_bytes: int = 64 * 1024 * 1024
    """Bytes of token text kept; a registry answering with huge tokens cannot grow the
    broker past this."""

    mint_deadline_seconds: float = 30.0
    """One mint (the registry's token endpoint, however slowly it answers) is cancelled after
    this long; its waiters get UNAVAILABLE with retry-after."""


_RANGES: dict[str, tuple[float, float, str]] = {
    "max_entries": (1, 1_000_000, "1 and 1000000"),
    "max_bytes": (64 * 1024, 1024**3, "65536 (64 KiB) and 1073741824 (1 GiB)"),
    "mint_deadline_seconds": (1.0, 600.0, "1 and 600 seconds"),
}
"""Bounds of each limit: a zero cache or deadline would refuse every pull, an unbounded
cache or an endless mint would let one registry hold the broker's memory or its waiters."""


def validate_token_cache(config: TokenCacheConfig) -> None:
    """Every limit within its bounds (`_RANGES`)."""
    for name, (low, high, words) in _RANGES.items():
        value = getattr(config, name)
        if not low <= value <= high:
            raise ConfigError(f"token_cache.{name} is {value}: it must be between {words}")
