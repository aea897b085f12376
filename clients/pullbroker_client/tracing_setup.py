"""Turning tracing on: the OpenTelemetry SDK, an OTLP/HTTP exporter and the gRPC instrumentation.

Imported only when tracing is configured (importing the SDK, the exporter and `requests`
costs tens of milliseconds a node helper or a plain pull must not pay); tracing.py is the
seam the rest of the code calls. One `TracerProvider` per process, kept here rather than set
as OpenTelemetry's global one, so that a test process can enable, stop and enable again;
W3C trace context (`traceparent`) is OpenTelemetry's default propagator.

    handle = enable(TracingSettings("http://otel-collector:4318", "pullbroker-broker"))
    ...
    handle.shutdown()   # flushes what is queued (bounded by the export timeout), turns off

Spans are batched and exported from a thread of the SDK's own; a collector that does not
answer costs dropped spans (and an SDK warning), never a failed or slower call.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind as OtelSpanKind

from pullbroker_client import tracing
from pullbroker_client.tracing import Attribute, SpanKind, SpanLike

if TYPE_CHECKING:
    import grpc

TRACES_PATH = "/v1/traces"
EXPORT_TIMEOUT_SECONDS = 5.0
"""How long one export (retries included) may wait for the collector, by default: a process
stopping while the collector is down waits this long at most for its last spans."""

_KINDS = {"internal": OtelSpanKind.INTERNAL, "client": OtelSpanKind.CLIENT}


@dataclass(frozen=True)
class TracingSettings:
    """Where spans go and how many are kept."""

    otlp_endpoint: str
    """The collector's OTLP/HTTP base URL (http://otel-collector:4318); spans are POSTed to
    <it>/v1/traces, as with OTEL_EXPORTER_OTLP_ENDPOINT."""
    service_name: str
    """`service.name` of every span from this process."""
    sample_ratio: float = 1.0
    """Share of new traces kept (0-1); a call that arrives with a sampled parent is always
    kept, so one trace is never cut between sidecar and broker."""
    export_timeout_seconds: float = EXPORT_TIMEOUT_SECONDS
    """Longest wait for one export, retries included (also the flush at exit)."""


class _Installed:
    """tracing.Installed on an SDK TracerProvider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("pullbroker")

    def span(
        self, name: str, kind: SpanKind, attributes: Mapping[str, Attribute] | None
    ) -> AbstractContextManager[SpanLike]:
        return self._tracer.start_as_current_span(name, kind=_KINDS[kind], attributes=attributes)

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
        # The instrumentation is untyped (no annotations, no py.typed).
        interceptor = aio_server_interceptor(self.provider)  # type: ignore[no-untyped-call]
        return [cast("grpc.aio.ServerInterceptor[Any, Any]", interceptor)]

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        interceptors = aio_client_interceptors(self.provider)  # type: ignore[no-untyped-call]
        return cast("list[grpc.aio.ClientInterceptor]", interceptors)


@dataclass(frozen=True)
class TracingHandle:
    """Tracing as enabled by `enable`; `shutdown()` flushes and turns it off."""

    provider: TracerProvider
    installed: _Installed

    def shutdown(self) -> None:
        """Export what is queued (bounded by the export timeout), then stop tracing, if this
        handle's tracing is still the process's."""
        if tracing.current() is self.installed:
            tracing.install(None)
        self.provider.shutdown()


def enable(settings: TracingSettings, *, exporter: SpanExporter | None = None) -> TracingHandle:
    """Trace this process into `settings.otlp_endpoint` (or into `exporter`, exported span by
    span: tests hand an InMemorySpanExporter)."""
    resource = Resource.create({SERVICE_NAME: settings.service_name})
    sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    if exporter is None:
        timeout = settings.export_timeout_seconds
        otlp = OTLPSpanExporter(
            endpoint=settings.otlp_endpoint.rstrip("/") + TRACES_PATH, timeout=timeout
        )
        provider.add_span_processor(BatchSpanProcessor(otlp, export_timeout_millis=timeout * 1000))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    installed = _Installed(provider)
    tracing.install(installed)
    return TracingHandle(provider, installed)
