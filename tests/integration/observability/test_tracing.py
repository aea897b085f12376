"""One trace from the sidecar's pull through the broker to the registry's token endpoint.

No OpenTelemetry collector runs here. The trace test hands spans to the SDK's
InMemorySpanExporter: the same provider, sampler, propagation and gRPC instrumentation a
configured process uses, only the exporter differs. A real broker (in this process, on its own
thread and event loop, reached over mTLS) and the sidecar's pull engine pull from the
harness's token-auth registry. The exporter itself is checked against the harness's scriptable
HTTP server standing in for a collector's OTLP/HTTP receiver at /v1/traces.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pullbroker_client import tracing
from pullbroker_client.broker import AsyncBrokerClient, BrokerCallError
from pullbroker_client.tracing_setup import TracingSettings, enable
from pullbroker_service.config.broker import TracingConfig
from pullbroker_sidecar.pull.destinations import parse_destination
from pullbroker_sidecar.pull.engine import PullEngine

from tests.harness.canary import find_in_text
from tests.harness.https_server import HTTPSServer
from tests.harness.otlp_receiver import exported, otlp_receiver
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, StandardImages
from tests.integration.conftest import RunningBroker
from tests.integration.test_api_pull import add_registry

pytestmark = pytest.mark.integration

ISSUE = "/pullbroker.v1.PullService/IssuePullToken"


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this process (broker and sidecar alike), spans kept in memory."""
    exporter = InMemorySpanExporter()
    handle = enable(TracingSettings("http://127.0.0.1:9", "pullbroker-test"), exporter=exporter)
    try:
        yield exporter
    finally:
        handle.shutdown()


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPSServer]:
    """The OTLP/HTTP receiver stand-in."""
    with otlp_receiver(monkeypatch) as server:
        yield server


def _finished(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The finished spans once there are `count` (a broker span may end a moment after its
    caller has the answer: an aborted call's status is sent before the handler returns)."""
    deadline = time.monotonic() + 10
    while len(exporter.get_finished_spans()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(exporter.get_finished_spans())


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind | None = None) -> ReadableSpan:
    found = [s for s in spans if s.name == name and (kind is None or s.kind is kind)]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _parent_is(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and child.parent.span_id == parent.context.span_id


def _every_value(spans: list[ReadableSpan]) -> list[str]:
    """Every attribute value of every span and span event, as text."""
    values: list[str] = []
    for span in spans:
        sources = [span.attributes or {}] + [e.attributes or {} for e in span.events]
        for attributes in sources:
            values += [str(v) for v in attributes.values()]
        values += [e.name for e in span.events]
    return values


class TestOneTrace:
    async def test_pull_broker_and_token_request_share_one_trace(
        self,
        traced: InMemorySpanExporter,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
        tmp_path: Path,
    ) -> None:
        """The sidecar's pull span, its IssuePullToken client span, the broker's server span
        (continued from the traceparent in the call's metadata), the mint and the upstream
        token request are one trace, each the parent of the next; no attribute holds the
        token, the registry password or a query string."""
        broker = make_broker()  # after tracing is on: its server carries the interceptor
        with broker.client("admin") as admin:
            add_registry(admin, "team", token_registry, ALICE)
        image = pushed_images.app.reference
        async with AsyncBrokerClient(broker.target("node")) as node:
            engine = PullEngine(node, store=tmp_path / "store")
            result = await engine.pull(image, parse_destination(f"oci:{tmp_path / 'out'}"))
            token = await node.issue_pull_token(image)  # the cached token the pull used
        spans = list(traced.get_finished_spans())

        pull = _one(spans, "pullbroker.pull")
        trace = [s for s in spans if s.context.trace_id == pull.context.trace_id]
        client = _one(trace, ISSUE, SpanKind.CLIENT)
        server = _one(trace, ISSUE, SpanKind.SERVER)
        mint = _one(trace, "pullbroker.mint")
        request = _one(trace, "registry.token_request")
        assert _parent_is(client, pull)
        assert _parent_is(server, client)
        assert server.parent is not None
        assert server.parent.is_remote  # it came in the call's metadata
        assert _parent_is(mint, server)
        assert _parent_is(request, mint)
        assert request.kind is SpanKind.CLIENT

        assert pull.attributes is not None
        assert pull.attributes["pullbroker.repository"] == pushed_images.app.repository
        assert pull.attributes["pullbroker.image.digest"] == result.digest
        assert pull.attributes["pullbroker.pull.dest"] == "oci"
        assert mint.attributes is not None
        assert mint.attributes["pullbroker.registry.kind"] == "generic"
        assert request.attributes is not None
        assert request.attributes["http.response.status_code"] == 200
        assert request.attributes["server.address"] == "127.0.0.1"
        assert request.attributes["pullbroker.repository"] == (pushed_images.app.repository,)
        assert server.attributes is not None
        assert server.attributes["rpc.grpc.status_code"] == 0

        values = _every_value(spans)
        secret = token.authorization()
        assert secret is not None
        bearer = secret.reveal().removeprefix("Bearer ")
        assert bearer
        password = token_registry.users[ALICE]
        for value in values:
            assert bearer not in value
            assert not find_in_text(value, password)
            assert "?" not in value, value
            assert "scope=" not in value, value

    async def test_refused_pull_marks_its_spans_as_errors(
        self,
        traced: InMemorySpanExporter,
        make_broker: Callable[..., RunningBroker],
        tmp_path: Path,
    ) -> None:
        """A pull the broker refuses (no registry serves the host) ends the server span with
        its gRPC status (set through the CallGuard's abort) and the pull span as an error."""
        broker = make_broker()
        async with AsyncBrokerClient(broker.target("node")) as node:
            engine = PullEngine(node, store=tmp_path / "store")
            with pytest.raises(BrokerCallError):
                await engine.pull(
                    "registry.invalid/team/app:v1", parse_destination(f"oci:{tmp_path / 'o'}")
                )
        spans = _finished(traced, 3)  # the broker's thread ends its span after the abort
        pull = _one(spans, "pullbroker.pull")
        server = _one(spans, ISSUE, SpanKind.SERVER)
        assert server.context.trace_id == pull.context.trace_id
        assert server.attributes is not None
        assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
        # Per the RPC conventions a server span is an error only for server faults
        # (INTERNAL, UNAVAILABLE, ...); NOT_FOUND is the caller's, so only the code says so.
        assert server.status.status_code is StatusCode.UNSET
        assert pull.status.status_code is StatusCode.ERROR
        assert [e.name for e in pull.events] == ["exception"]

    async def test_untraced_broker_has_no_server_spans(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A broker started while tracing is off has no interceptor: even if tracing is
        turned on later in the process, its calls make no server span."""
        assert not tracing.enabled()
        broker = make_broker()
        assert not tracing.enabled()
        exporter = InMemorySpanExporter()
        handle = enable(TracingSettings("http://127.0.0.1:9", "late"), exporter=exporter)
        try:
            with broker.client("admin") as admin:
                add_registry(admin, "team", token_registry, ALICE)
            with broker.client("node") as node:
                node.issue_pull_token(pushed_images.app.reference)
        finally:
            handle.shutdown()
        assert [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER] == []


class TestOtlpExport:
    def test_configured_broker_posts_spans_to_the_collector(
        self,
        collector: HTTPSServer,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A broker with tracing.otlp_endpoint set POSTs ExportTraceServiceRequest protobufs
        to <endpoint>/v1/traces with its server spans, under its service.name."""
        broker = make_broker(
            tracing=TracingConfig(collector.url(), service_name="pullbroker-otlp-test")
        )
        with broker.client("admin") as admin:
            add_registry(admin, "team", token_registry, ALICE)
        with broker.client("node") as node:
            node.issue_pull_token(pushed_images.app.reference)
        spans = exported(collector, until=[ISSUE, "registry.token_request"])
        names = {s.span.name for s in spans}
        assert ISSUE in names
        assert "registry.token_request" in names
        assert {s.service for s in spans} == {"pullbroker-otlp-test"}
        body = b"".join(r.body for r in collector.requests)
        assert token_registry.users[ALICE].encode() not in body
