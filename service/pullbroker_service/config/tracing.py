"""The broker's `tracing:` section: OpenTelemetry spans to an OTLP/HTTP collector, off unless set.

    tracing:
      otlp_endpoint: http://otel-collector:4318   # or --otlp-endpoint, $OTEL_EXPORTER_OTLP_ENDPOINT
      service_name: pullbroker-broker             # optional
      sample_ratio: 0.1                           # optional, share of new traces kept

Precedence: `--otlp-endpoint`, then the file's `tracing.otlp_endpoint`, then
$OTEL_EXPORTER_OTLP_ENDPOINT; with none of them there is no `TracingConfig` and the
OpenTelemetry SDK is never imported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pullbroker_client.tracing import check_endpoint, endpoint_from_env

from pullbroker_service.config.errors import ConfigError

DEFAULT_SERVICE_NAME = "pullbroker-broker"


@dataclass(frozen=True)
class TracingConfig:
    """Where the broker's spans go (see the module docstring for what turns it on)."""

    otlp_endpoint: str = ""
    """The collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318 (spans are POSTed
    to <it>/v1/traces, as with OTEL_EXPORTER_OTLP_ENDPOINT). No user, password or query:
    collector credentials go in OTEL_EXPORTER_OTLP_HEADERS."""

    service_name: str = DEFAULT_SERVICE_NAME
    """`service.name` on the broker's spans (one per deployment, e.g. pullbroker-prod)."""

    sample_ratio: float = 1.0
    """Share of new traces kept, 0 to 1. A call whose caller (a sidecar) sampled its trace is
    always kept, so a trace is never cut in two."""


def resolve_tracing(configured: TracingConfig | None, flag: str | None) -> TracingConfig | None:
    """The tracing settings after the flag and the environment, validated; None: off."""
    endpoint = flag or (configured.otlp_endpoint if configured else "") or endpoint_from_env()
    if not endpoint:
        if configured is not None:
            raise ConfigError(
                "tracing needs otlp_endpoint, e.g. tracing: {otlp_endpoint: "
                "http://otel-collector:4318} (or --otlp-endpoint, or OTEL_EXPORTER_OTLP_ENDPOINT)"
            )
        return None
    source = (
        "--otlp-endpoint"
        if flag
        else "tracing.otlp_endpoint"
        if configured and configured.otlp_endpoint
        else "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    try:
        endpoint = check_endpoint(endpoint)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    config = replace(configured or TracingConfig(), otlp_endpoint=endpoint)
    if not 0.0 <= config.sample_ratio <= 1.0:
        raise ConfigError(
            f"tracing.sample_ratio {config.sample_ratio} must be between 0 and 1 "
            "(1 keeps every trace)"
        )
    if not config.service_name.strip():
        raise ConfigError("tracing.service_name must not be empty (or leave it out)")
    return config
