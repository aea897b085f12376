"""The plain-HTTP listener broker and sidecar serve their Prometheus metrics on.

prometheus-client's own WSGI server, on a daemon thread, bound to the configured HOST:PORT
and serving one `CollectorRegistry` (never the process-global default, so tests can run
several brokers in one process). It answers `/metrics` (and, as the library does, any
other path) with the text exposition format; scrapes run on that thread and read the
metric values under prometheus-client's own locks, never the event loop.

No TLS and no authentication, as Prometheus exporters usually run: nothing served there is
a secret (no label holds a token, an identity, a tag or a digest), and the listener is off
unless an operator names an address. In Kubernetes that is typically `0.0.0.0:9090` behind
a NetworkPolicy; on a host, `127.0.0.1:PORT`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


def parse_listen(text: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` (`[::1]:9090` for IPv6); ValueError naming the problem."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} must be HOST:PORT, e.g. 127.0.0.1:9090 or 0.0.0.0:9090")
    return host, int(port)


@dataclass
class MetricsServer:
    """A running metrics listener; `address` is HOST:PORT with the port actually bound."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(listen: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` on `listen` (HOST:PORT, port 0 picks a free one); OSError if taken."""
    host, port = parse_listen(listen)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
