"""The tracing seam: free while off, OpenTelemetry imported only when it is turned on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pullbroker_client import tracing
from pullbroker_client.tracing_setup import TracingSettings, enable

_UNUSED = "http://127.0.0.1:9"  # never dialled: these tests hand spans to memory


class TestOff:
    def test_span_is_one_shared_no_op(self) -> None:
        """Without tracing, span() hands back the same no-op every time, and no gRPC
        interceptor is offered."""
        assert not tracing.enabled()
        first = tracing.span("a", attributes={"k": "v"})
        assert first is tracing.span("b")
        with first as span:
            span.set_attribute("k", "v")
        assert tracing.server_interceptors() == []
        assert tracing.client_interceptors() is None

    def test_start_without_endpoint_is_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No flag and no OTEL_EXPORTER_OTLP_ENDPOINT: start() turns nothing on."""
        monkeypatch.delenv(tracing.ENDPOINT_ENV, raising=False)
        assert tracing.start(None, "x") is None
        assert not tracing.enabled()

    def test_start_names_the_source_of_a_bad_endpoint(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bad URL is a ValueError naming the flag, or the variable it came from."""
        with pytest.raises(ValueError, match=r"^--otlp-endpoint: "):
            tracing.start("localhost:4318", "x")
        monkeypatch.setenv(tracing.ENDPOINT_ENV, "localhost:4318")
        with pytest.raises(ValueError, match=f"^{tracing.ENDPOINT_ENV}: "):
            tracing.start(None, "x")
        assert not tracing.enabled()

    def test_node_paths_import_no_opentelemetry(self) -> None:
        """The node helpers, the sidecar's CLI and pull engine, the broker client and the
        broker's composition root import no OpenTelemetry until tracing is configured."""
        code = (
            "import sys, pullbroker_sidecar.integrations.docker_credential, "
            "pullbroker_sidecar.integrations.kubelet_provider, pullbroker_sidecar.cli, "
            "pullbroker_sidecar.pull.engine, pullbroker_client.broker, "
            "pullbroker_service.bootstrap.main; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.stdout.strip() == "[]", done.stderr

    def test_helpers_import_no_opentelemetry_even_when_configured(self) -> None:
        """With OTEL_EXPORTER_OTLP_ENDPOINT set (as on a traced node), the credential helper
        and kubelet provider still import none of it: they never start tracing."""
        code = (
            "import sys, pullbroker_sidecar.integrations.docker_credential, "
            "pullbroker_sidecar.integrations.kubelet_provider; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
        )
        env = {**os.environ, tracing.ENDPOINT_ENV: "http://127.0.0.1:9"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert done.stdout.strip() == "[]", done.stderr

    def test_missing_extra_says_how_to_install_it(self) -> None:
        """Without the OpenTelemetry packages, turning tracing on is a ValueError naming the
        `pullbroker[tracing]` extra, not an ImportError traceback."""
        code = (
            "import sys; sys.modules['opentelemetry'] = None\n"
            "from pullbroker_client import tracing\n"
            "try:\n    tracing.turn_on('http://127.0.0.1:9', 'x')\n"
            "except ValueError as exc:\n    print(exc)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "pip install 'pullbroker[tracing]'" in done.stdout, done.stderr


class TestOn:
    def test_spans_nest_and_carry_attributes(self) -> None:
        """Once enabled, span() records real spans, children of the current one, with their
        kind and attributes; shutdown turns tracing off again."""
        exporter = InMemorySpanExporter()
        handle = enable(TracingSettings(_UNUSED, "unit"), exporter=exporter)
        try:
            assert tracing.enabled()
            with (
                tracing.span("outer", attributes={"a": "1"}),
                tracing.span("inner", kind="client") as inner,
            ):
                inner.set_attribute("http.response.status_code", 200)
            assert len(tracing.server_interceptors()) == 1
            assert tracing.client_interceptors()
        finally:
            handle.shutdown()
        assert not tracing.enabled()
        inner_span, outer_span = exporter.get_finished_spans()
        assert inner_span.kind is SpanKind.CLIENT
        assert inner_span.parent is not None
        assert inner_span.parent.span_id == outer_span.context.span_id
        assert dict(inner_span.attributes or {}) == {"http.response.status_code": 200}
        assert outer_span.resource.attributes["service.name"] == "unit"

    def test_sample_ratio_zero_keeps_no_new_trace(self) -> None:
        """sample_ratio 0 records no new trace (a sampled parent's would still be kept)."""
        exporter = InMemorySpanExporter()
        handle = enable(TracingSettings(_UNUSED, "unit", 0.0), exporter=exporter)
        try:
            with tracing.span("dropped"):
                pass
        finally:
            handle.shutdown()
        assert exporter.get_finished_spans() == ()

    def test_dead_collector_delays_exit_by_the_export_timeout_at_most(self) -> None:
        """Spans for a collector that refuses connections are dropped: the flush at exit
        (a one-shot pull's) gives up within its export timeout instead of retrying on."""
        with socket.socket() as probe:  # a loopback port nothing listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        handle = tracing.turn_on(f"http://127.0.0.1:{port}", "unit", export_timeout=1.0)
        with tracing.span("lost"):
            pass
        started = time.monotonic()
        handle.shutdown()
        assert time.monotonic() - started < 2.5
        assert not tracing.enabled()
