"""A real moto server (AWS Secrets Manager, KMS, ...) on a free 127.0.0.1 port, optionally TLS.

State is in memory: `restart()` brings the process back on the same port, empty.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.harness.certs import TestCA
from tests.harness.process import HarnessError, free_port, log_tail, spawn, stop

_READY_TIMEOUT = 20.0
REGION = "us-east-1"
# moto accepts any key pair; these are not credentials to anything.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"


def moto_binary() -> str:
    """The `moto_server` script from the venv or PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.is_file() else shutil.which("moto_server")
    if found is None:
        raise HarnessError("`moto_server` is not installed: pip install 'moto[server]'")
    return found


class MotoServer:
    """`moto_server -H 127.0.0.1 -p PORT` [with our CA's certificate]."""

    def __init__(self, workdir: Path, port: int, ca: TestCA | None) -> None:
        self.workdir = workdir
        self.port = port
        self.ca_file = ca.cert_path if ca else None
        self._tls = ca.issue(f"moto-{port}", ips=["127.0.0.1"], client=False) if ca else None
        self.log_path = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, workdir: Path, ca: TestCA | None = None) -> MotoServer:
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir, free_port(), ca)
        server._launch()
        return server

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _launch(self) -> None:
        argv = [moto_binary(), "-H", "127.0.0.1", "-p", str(self.port)]
        if self._tls:
            argv += ["-c", str(self._tls.cert_path), "-k", str(self._tls.key_path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = spawn(argv, log_path=self.log_path, env=env)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        with requests.Session() as session:
            session.trust_env = False
            session.verify = str(self.ca_file) if self.ca_file else True
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise HarnessError(f"moto_server exited early:\n{log_tail(self.log_path)}")
                with contextlib.suppress(requests.RequestException):
                    session.get(f"{self.url}/moto-api/", timeout=2)
                    return
                time.sleep(0.05)
        raise HarnessError(f"moto_server not ready at {self.url}:\n{log_tail(self.log_path)}")

    def reset(self) -> None:
        """Forget every resource (moto's reset API), keeping the process."""
        with requests.Session() as session:
            session.trust_env = False
            session.verify = str(self.ca_file) if self.ca_file else True
            session.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def kill(self) -> None:
        """SIGKILL the server by PID (a crash, for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port (empty: moto keeps state in memory)."""
        self.stop()
        self._launch()

    def stop(self) -> None:
        stop(self.proc)
