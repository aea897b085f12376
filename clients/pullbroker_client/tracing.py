"""Optional OpenTelemetry tracing: the seam code calls, which costs nothing while tracing is off.

Tracing is off unless an operator names an OTLP/HTTP endpoint (the broker's `tracing:`
section or `--otlp-endpoint`, the sidecar's `--otlp-endpoint`, or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`). Only then does `tracing_setup.enable()` import the SDK and
install itself here. This module imports nothing from OpenTelemetry, so the node helpers and a
one-shot `pullbroker-sidecar pull` without tracing load none of it, and while nothing is
installed:

- `span()` returns one shared no-op context manager (no allocation, no context switch);
- `server_interceptors()` / `client_interceptors()` return nothing, so gRPC servers and
  channels are built exactly as without this module: no interceptor sits on the token path.

Span attributes are chosen where spans are made and never hold a token, a credential, a
password, a URL's query string or a service-account token: registry hosts, registry kinds,
repositories, digests and HTTP/gRPC status codes only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import grpc

SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""The standard variable operators set for every OpenTelemetry SDK: the collector's OTLP/HTTP
base URL (spans go to <it>/v1/traces)."""

Attribute = str | int | float | bool | Sequence[str]
SpanKind = Literal["internal", "client"]


class SpanLike(Protocol):
    """What code may do with the span it is in: add an attribute (never a secret)."""

    def set_attribute(self, key: str, value: Attribute) -> None: ...


class Installed(Protocol):
    """What `tracing_setup.enable()` installs: a tracer and the gRPC instrumentation."""

    def span(
        self, name: str, kind: SpanKind, attributes: Mapping[str, Attribute] | None
    ) -> AbstractContextManager[SpanLike]: ...

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor[Any, Any]]: ...

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]: ...


class Stoppable(Protocol):
    def shutdown(self) -> None:
        """Flush what is queued (bounded by the export timeout) and turn tracing off."""
        ...


class _NoSpan:
    __slots__ = ()

    def set_attribute(self, key: str, value: Attribute) -> None:
        return None


# nullcontext is reentrant and reusable: one instance serves every call while tracing is off.
_NO_SPAN: AbstractContextManager[SpanLike] = nullcontext(_NoSpan())
_installed: Installed | None = None


def enabled() -> bool:
    """Whether spans are being recorded in this process."""
    return _installed is not None


def span(
    name: str, *, kind: SpanKind = "internal", attributes: Mapping[str, Attribute] | None = None
) -> AbstractContextManager[SpanLike]:
    """A span around the `with` block, child of the current one (a no-op while off).

    An exception leaving the block marks the span as an error and is recorded with its
    message: this project's error messages never carry a secret.
    """
    installed = _installed
    if installed is None:
        return _NO_SPAN
    return installed.span(name, kind, attributes)


def server_interceptors() -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """For `grpc.aio.server(interceptors=...)`: a server span per RPC, continuing the caller's
    W3C `traceparent`; [] while tracing is off."""
    return [] if _installed is None else _installed.server_interceptors()


def client_interceptors() -> list[grpc.aio.ClientInterceptor] | None:
    """For `grpc.aio.secure_channel(interceptors=...)`: a client span per RPC, its
    `traceparent` sent in the call's metadata; None while tracing is off."""
    return None if _installed is None else _installed.client_interceptors()


def install(installed: Installed | None) -> Installed | None:
    """Make `installed` the process's tracing (None: off again); the one it replaces."""
    global _installed
    previous, _installed = _installed, installed
    return previous


def current() -> Installed | None:
    return _installed


def check_endpoint(url: str) -> str:
    """`url` as an OTLP/HTTP base URL (`http(s)://host[:port][/prefix]`), else ValueError.

    No user, password, query or fragment: the URL is logged and shown, so it must not hold a
    credential (collectors that want one take the standard OTEL_EXPORTER_OTLP_HEADERS). The
    errors never repeat the value: a refused one may be exactly such a credential.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("the OTLP endpoint is not a URL (check its host and port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "the OTLP endpoint must be an http:// or https:// URL of an OTLP/HTTP collector, "
            "e.g. http://otel-collector:4318"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "the OTLP endpoint must not hold a user or password (it is logged): give the "
            "collector's credentials in OTEL_EXPORTER_OTLP_HEADERS"
        )
    if parts.query or parts.fragment:
        raise ValueError("the OTLP endpoint must not have a query string or fragment")
    del port  # read only to have urlsplit validate it
    return url.rstrip("/")


def endpoint_from_env() -> str | None:
    """$OTEL_EXPORTER_OTLP_ENDPOINT, when set and not empty."""
    return os.environ.get(ENDPOINT_ENV) or None


def start(
    flag: str | None, service_name: str, *, export_timeout: float | None = None
) -> Stoppable | None:
    """Tracing for a command (the sidecar's `run` and `pull`): `--otlp-endpoint`, else
    $OTEL_EXPORTER_OTLP_ENDPOINT; None, importing nothing, when neither is set.

    `service.name` is $OTEL_SERVICE_NAME when set, else `service_name`; `export_timeout`
    bounds each export and the flush at exit (None: tracing_setup's default). ValueError
    (naming the flag or variable) for an endpoint that is not an OTLP/HTTP base URL.
    """
    endpoint = flag or endpoint_from_env()
    if not endpoint:
        return None
    try:
        endpoint = check_endpoint(endpoint)
    except ValueError as exc:
        raise ValueError(f"{'--otlp-endpoint' if flag else ENDPOINT_ENV}: {exc}") from None
    name = os.environ.get(SERVICE_NAME_ENV) or service_name
    return turn_on(endpoint, name, export_timeout=export_timeout)


def turn_on(
    endpoint: str,
    service_name: str,
    sample_ratio: float = 1.0,
    *,
    export_timeout: float | None = None,
) -> Stoppable:
    """Trace this process into the OTLP/HTTP collector at `endpoint` (checked already).

    ValueError when OpenTelemetry is not installed (the `pullbroker[tracing]` extra).
    """
    try:
        # Here, not at the top: without tracing nothing of OpenTelemetry is imported.
        from pullbroker_client.tracing_setup import TracingSettings, enable
    except ModuleNotFoundError as exc:
        raise ValueError(
            f"tracing needs OpenTelemetry, which is not installed here (no module {exc.name}): "
            "install pullbroker with its tracing extra, pip install 'pullbroker[tracing]'"
        ) from None
    settings = TracingSettings(endpoint, service_name, sample_ratio)
    if export_timeout is not None:
        settings = replace(settings, export_timeout_seconds=export_timeout)
    return enable(settings)
