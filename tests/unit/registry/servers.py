"""Real HTTPS servers for the registry client's tests: a test CA and a scriptable handler.

Each server runs `http.server` in a thread on 127.0.0.1, port 0, with TLS from a CA made
here with `cryptography`. A test gives it a function from the recorded request to a Reply,
and reads back every request it saw (headers included) to check what the client sent.
Run as a module it serves one blob in its own process, for the throughput benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class LocalCA:
    """A CA certificate (PEM) and a server certificate it signed, as files for ssl."""

    ca_pem: str
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_ca(folder: Path, common_name: str = "pullbroker test CA") -> LocalCA:
    """A fresh CA and a server certificate for localhost, registry.test and 127.0.0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            # A name only an injected resolver knows: tests of the dial guard's pinning.
            x509.DNSName("registry.test"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    return LocalCA(ca_pem=ca_pem, cert_file=cert_file, key_file=key_file)


@dataclass(frozen=True)
class Recorded:
    """One request the server received. Header names are lowercase."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Reply:
    """What the handler answers. `body_parts` streams a large body without joining it."""

    status: int = 200
    headers: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    body: bytes = b""
    body_parts: Callable[[], Iterator[bytes | memoryview]] | None = None
    length: int | None = None
    close: bool = False
    """Close the connection after this reply (to cut a body short of its Content-Length)."""


Handler = Callable[[Recorded], Reply]


class HTTPSServer:
    """A threaded HTTP(S) server on 127.0.0.1. Use it as a context manager."""

    def __init__(self, handler: Handler, tls: LocalCA | None) -> None:
        self.handler = handler
        self.requests: list[Recorded] = []
        context = tls.server_context() if tls is not None else None
        self._server = _Server(("127.0.0.1", 0), _RequestHandler)
        self._server.owner = self
        self._server.context = context
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}"

    def __enter__(self) -> HTTPSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HTTPSServer
    context: ssl.SSLContext | None

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that abort a handshake on purpose (wrong CA tests) are expected here.
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        if self.server.context is not None:
            self.request = self.server.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            # socketserver closes the socket it accepted, which wrap_socket detached.
            self.request.close()

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        recorded = Recorded(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        owner = self.server.owner
        owner.requests.append(recorded)
        reply = owner.handler(recorded)
        self.send_response(reply.status)
        size = reply.length if reply.length is not None else len(reply.body)
        pairs = reply.headers.items() if isinstance(reply.headers, dict) else reply.headers
        for name, value in pairs:
            self.send_header(name, value)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.close_connection = self.close_connection or reply.close
        if self.command == "HEAD":
            return
        if reply.body_parts is not None:
            for part in reply.body_parts():
                self.wfile.write(part)
        else:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_blob(folder: Path, size: int) -> None:
    """Serve `size` bytes at any path until stdin closes; print the port and CA path first."""
    tls = make_ca(folder)
    (folder / "ca.crt").write_text(tls.ca_pem)
    block = memoryview(bytes(range(256)) * 4096)  # 1 MiB

    def parts(start: int) -> Iterator[memoryview]:
        left = size - start
        while left > 0:
            step = min(left, len(block))
            yield block[:step]
            left -= step

    def handler(request: Recorded) -> Reply:
        start = int(request.headers.get("range", "bytes=0-")[6:].rstrip("-") or 0)
        return Reply(
            206 if start else 200, {}, length=size - start, body_parts=lambda: parts(start)
        )

    with HTTPSServer(handler, tls) as server:
        print(server.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    arguments = argparse.ArgumentParser(description=_serve_blob.__doc__)
    arguments.add_argument("folder", type=Path)
    arguments.add_argument("--mib", type=int, default=256)
    options = arguments.parse_args()
    _serve_blob(options.folder, options.mib * 1024 * 1024)
