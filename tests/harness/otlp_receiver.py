"""A stand-in for an OpenTelemetry collector's OTLP/HTTP receiver (no collector runs here).

The scriptable server (https_server.py) in plain HTTP answers 200 at /v1/traces; `exported`
decodes what arrived as `ExportTraceServiceRequest` protobufs, as a collector would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.harness.https_server import HTTPSServer, Reply, Request

TRACES_PATH = "/v1/traces"
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy")
"""Unset them for the exporter (requests honours them): tests talk to 127.0.0.1 only."""


@dataclass(frozen=True)
class ExportedSpan:
    """One span as the receiver got it, with its resource's service.name."""

    service: str
    span: Span


@contextmanager
def otlp_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPSServer]:
    """A running plain-HTTP receiver answering every POST to /v1/traces with 200.

    For this test (and the processes it starts) the exporter goes straight to it, not through
    a proxy, and sends its batches every 50 ms rather than every 5 s.
    """
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    server = HTTPSServer(tls=None, name="otlp-receiver")
    server.answers[TRACES_PATH] = Reply(200, {"content-type": "application/x-protobuf"})
    with server:
        yield server


def exported(
    server: HTTPSServer, until: Iterable[str] = (), timeout: float = 10.0
) -> list[ExportedSpan]:
    """Every span POSTed so far, waiting up to `timeout` for spans named `until` to arrive.

    Each request must be a POST to /v1/traces of an application/x-protobuf
    ExportTraceServiceRequest.
    """
    wanted = set(until)
    deadline = time.monotonic() + timeout
    while True:
        spans = [s for request in list(server.requests) for s in _decode(request)]
        if wanted <= {s.span.name for s in spans} or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


def _decode(request: Request) -> list[ExportedSpan]:
    assert request.method == "POST", request.method
    assert request.url_path == TRACES_PATH, request.path
    assert request.headers["content-type"] == "application/x-protobuf"
    message = ExportTraceServiceRequest()
    message.ParseFromString(request.body)
    found: list[ExportedSpan] = []
    for resource_spans in message.resource_spans:
        service = next(
            (
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ),
            "",
        )
        for scope_spans in resource_spans.scope_spans:
            found += [ExportedSpan(service, span) for span in scope_spans.spans]
    return found
