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


def validate_token_cache(config: TokenCacheConfig) -> None:
    """Every limit must be positive: a zero cache or deadline would refuse every pull."""
    for name in ("max_entries", "max_bytes", "mint_deadline_seconds"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"token_cache.{name} must be more than 0")
