"""Blob-streaming throughput: the node's BlobFetcher vs a plain ssl read loop and curl.

    .venv/bin/python -m bench.blob_bench [--mib 256] [--rounds 3]

The server (the harness's HTTPSServer, `--serve`) runs in its own process so it does not
share our GIL. Prints MB/s;
not a test, so nothing here asserts a speed. (The fetcher's own docstring quotes the
numbers that chose it over an httpx stream; `python -m bench pull` measures whole pulls.)
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pullbroker_client.registry.tls import ssl_context
from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.manifest import Descriptor

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request

DIGEST = "sha256:" + "0" * 64


class CountingSink:
    """A BlobSink that keeps nothing: counts writes, and hashes them when asked to."""

    def __init__(self, hash_it: bool) -> None:
        self.digest = hashlib.sha256() if hash_it else None
        self.received = self.writes = 0

    @property
    def offset(self) -> int:
        return 0

    def write(self, data: bytes | memoryview) -> None:
        self.received += len(data)
        self.writes += 1
        if self.digest is not None:
            self.digest.update(data)

    def restart(self) -> None:
        self.received = self.writes = 0


def plain_ssl(port: int, ca_pem: str, size: int) -> float:
    """MB/s of one GET read with a blocking ssl socket into a 1 MiB buffer."""
    context = ssl.create_default_context(cadata=ca_pem)
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(b"GET /blob HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        buffer = memoryview(bytearray(1 << 20))
        received, start = 0, time.perf_counter()
        while received < size:  # headers are a few hundred bytes: noise at this size
            count = sock.recv_into(buffer)
            if not count:
                break
            received += count
        return received / (time.perf_counter() - start) / 1e6


def curl(port: int, ca_file: Path) -> float:
    """MB/s curl reports for the same GET, written to /dev/null."""
    url = f"https://127.0.0.1:{port}/v2/team/app/blobs/{DIGEST}"
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--cacert",
            str(ca_file),
            "-w",
            "%{speed_download}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out) / 1e6


def fetcher(port: int, ca_pem: str, size: int, hash_it: bool) -> tuple[float, int]:
    """MB/s and write count of BlobFetcher.fetch (optionally hashing as a pull does)."""
    blobs = BlobFetcher(f"https://127.0.0.1:{port}", ssl_context(ca_pem))
    sink = CountingSink(hash_it)
    descriptor = Descriptor("application/octet-stream", DIGEST, size)
    try:
        start = time.perf_counter()
        blobs.fetch("team/app", descriptor, None, sink, cancel=threading.Event())
        return sink.received / (time.perf_counter() - start) / 1e6, sink.writes
    finally:
        blobs.close()


def serve_blob(folder: Path, size: int) -> None:
    """Serve `size` bytes at any path until stdin closes; print the port first."""
    ca = TestCA.create(folder)
    block = memoryview(bytes(range(256)) * 4096)  # 1 MiB

    def parts(start: int) -> Iterator[memoryview]:
        left = size - start
        while left > 0:
            step = min(left, len(block))
            yield block[:step]
            left -= step

    def handler(request: Request) -> Reply:
        start = int(request.headers.get("range", "bytes=0-")[6:].rstrip("-") or 0)
        return Reply(
            206 if start else 200, {}, length=size - start, body_parts=lambda: parts(start)
        )

    with HTTPSServer(handler, ca) as server:
        print(server.port, flush=True)
        sys.stdin.read()


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--mib", type=int, default=256)
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.serve is not None:
        serve_blob(args.serve, args.mib * 1024 * 1024)
        return
    size = args.mib * 1024 * 1024
    folder = Path(tempfile.mkdtemp(prefix="bench-blob-"))
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.blob_bench", "--serve", str(folder), "--mib", str(args.mib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        ca_pem = (folder / "ca.crt").read_text()
        for round_ in range(args.rounds):
            ours, writes = fetcher(port, ca_pem, size, hash_it=False)
            hashed, _ = fetcher(port, ca_pem, size, hash_it=True)
            print(
                f"round {round_}: {args.mib} MiB  plain ssl {plain_ssl(port, ca_pem, size):6.0f}"
                f"  curl {curl(port, folder / 'ca.crt'):6.0f}  fetcher {ours:6.0f}"
                f" ({writes} writes)  fetcher+sha256 {hashed:6.0f}  MB/s"
            )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
