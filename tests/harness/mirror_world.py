"""The node-local mirror for the runtime tests: a `run --mirror` daemon and raw HTTP to it."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.process import free_port
from tests.harness.runtimes import run
from tests.harness.sidecar import SidecarDaemon

__all__ = ["Answer", "ask", "free_port", "mirror_config", "mirror_daemon"]


def mirror_daemon(home: Path, folder: Path, name: str, *extra: str) -> tuple[SidecarDaemon, int]:
    """`pullbroker-sidecar run --mirror 127.0.0.1:PORT` for `home`, started and its mirror
    listening; (daemon, port). The daemon answers on its socket before the mirror's port
    may be open: tests that asked at once were refused now and then."""
    port = free_port()
    daemon = SidecarDaemon(
        home, folder / f"{name}.sock", extra=["--mirror", f"127.0.0.1:{port}", *extra]
    )
    daemon.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return daemon, port
        except OSError:
            if time.monotonic() > deadline:
                daemon.stop()
                raise
            time.sleep(0.05)


def mirror_config(*args: str) -> str:
    """`pullbroker-sidecar mirror-config ARGS`; its stdout (fails the test on an error)."""
    done = run([sys.executable, "-m", "pullbroker_sidecar.cli", "mirror-config", *args])
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass(frozen=True)
class Answer:
    """What the mirror answered to one raw request."""

    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool

    def error(self) -> dict[str, str]:
        """The first OCI error of the body."""
        errors: list[dict[str, str]] = json.loads(self.body)["errors"]
        return errors[0]


def ask(
    port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> Answer:
    """One request to the mirror; `complete` is False when the body stopped short."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        try:
            body, complete = resp.read(), True
        except http.client.IncompleteRead as exc:
            body, complete = exc.partial, False
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, complete)
    finally:
        conn.close()
