"""Tracing for a running broker: the OpenTelemetry SDK, imported only when `tracing` is set.

With `BrokerConfig.tracing` (config/tracing.py) the broker exports spans over OTLP/HTTP: a
server span per RPC (the gRPC instrumentation, continuing a sidecar's `traceparent`), a
`pullbroker.mint` span per token minted on a cache miss, and a `registry.token_request`
span per token endpoint call (pullbroker_client.tracing says what their attributes may hold).
Without it nothing here imports OpenTelemetry and the server has no interceptor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pullbroker_client import tracing

from pullbroker_service.config.broker import BrokerConfig, ConfigError
from pullbroker_service.infra.logging import get_logger

_log = get_logger("pullbroker_service.bootstrap.tracing")


def start_tracing(config: BrokerConfig) -> Callable[[], Awaitable[None]] | None:
    """Enable tracing as configured; the closer that flushes and stops it (None: off)."""
    settings = config.tracing
    if settings is None:
        return None
    try:
        handle = tracing.turn_on(
            settings.otlp_endpoint, settings.service_name, settings.sample_ratio
        )
    except ValueError as exc:  # the tracing extra is not installed
        raise ConfigError(f"tracing.otlp_endpoint is set, but {exc}") from None
    _log.info(
        "tracing_enabled",
        otlp_endpoint=settings.otlp_endpoint,
        service_name=settings.service_name,
        sample_ratio=settings.sample_ratio,
    )

    async def stop() -> None:
        await asyncio.to_thread(handle.shutdown)

    return stop
