"""Broker fixtures: a real broker in this process (own thread and event loop) or as a subprocess.

The in-process broker runs on a free port in a tmp home with its dev CA, so blocking clients
(BrokerClient) and async ones (AsyncBrokerClient, in the test's loop) can both call it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from pullbroker_client.broker import BrokerClient, BrokerTarget
from pullbroker_client.home import Home
from pullbroker_client.tls import TlsFiles
from pullbroker_service.bootstrap.devca import CertificateAuthority, LeafSpec
from pullbroker_service.bootstrap.main import Broker, start_broker
from pullbroker_service.config.broker import load_config

from tests.harness.broker_config import write_test_config
from tests.harness.postgres import PostgresServer

PULLBROKER = str(Path(sys.executable).with_name("pullbroker"))
STARTUP_TIMEOUT = 30.0


@dataclass
class RunningBroker:
    """A broker serving `address` from `home`."""

    home: Home
    address: str
    insecure_address: str | None = None
    metrics_url: str | None = None
    """http://HOST:PORT/metrics when the broker was made with metrics_listen."""

    def target(self, role: str = "admin", tls: TlsFiles | None = None) -> BrokerTarget:
        """Where to call, presenting the home's `role` certificate (or `tls`)."""
        return BrokerTarget(self.address, tls or TlsFiles.from_home(self.home, role))

    def client(self, role: str = "admin", tls: TlsFiles | None = None) -> BrokerClient:
        return BrokerClient(self.target(role, tls), timeout=20.0)

    def issue_client_cert(
        self, name: str, *, uri: str | None = None, cn: str, uris: tuple[str, ...] = ()
    ) -> TlsFiles:
        """A client certificate from this home's dev CA (uri: a SPIFFE ID, or none)."""
        ca = CertificateAuthority.load(self.home.ca_cert, self.home.ca_key)
        spec = LeafSpec(cn, uris=((uri,) if uri else ()) + uris, client=True)
        return self.write_client_cert(name, *ca.issue(spec))

    def write_client_cert(self, name: str, cert_pem: bytes, key_pem: bytes) -> TlsFiles:
        """TlsFiles for a client certificate and key made elsewhere (e.g. a crafted one)."""
        folder = self.home.root.parent / "extra-certs"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.crt").write_bytes(cert_pem)
        key_path = folder / f"{name}.key"
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
        return TlsFiles(ca=self.home.ca_cert, cert=folder / f"{name}.crt", key=key_path)


class BrokerThread:
    """start_broker() on an event loop of its own, in a daemon thread."""

    def __init__(self, home: Home, **overrides: Any) -> None:
        config = replace(
            load_config(home=home, listen="127.0.0.1:0"),
            log_to_stderr=False,
            shutdown_grace_seconds=0.5,
            **{"allow_loopback_registries": True, **overrides},
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_broker(config), self._loop)
        try:
            self.broker: Broker = future.result(STARTUP_TIMEOUT)
        except BaseException:
            self._close_loop()
            raise

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.broker.stop(0.5), self._loop).result(30)
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., RunningBroker]]:
    """Factory: start an in-process broker in a fresh home; `policy` is written first if given."""
    running: list[BrokerThread] = []

    def make(policy: str | None = None, **overrides: Any) -> RunningBroker:
        home = Home(tmp_path / f"home-{len(running)}")
        home.root.mkdir(mode=0o700)
        if policy is not None:
            home.policy_yaml.write_text(policy)
        thread = BrokerThread(home, **overrides)
        running.append(thread)
        broker = thread.broker
        return RunningBroker(
            home, broker.address, broker.server.insecure_address, broker.metrics_url
        )

    try:
        yield make
    finally:
        for thread in running:
            thread.stop()


@pytest.fixture
def broker(make_broker: Callable[..., RunningBroker]) -> RunningBroker:
    """An in-process broker with the development policy (admin -> admin, node/* -> node)."""
    return make_broker()


@pytest.fixture
def admin_client(broker: RunningBroker) -> Iterator[BrokerClient]:
    with broker.client("admin") as client:
        yield client


@pytest.fixture
def node_client(broker: RunningBroker) -> Iterator[BrokerClient]:
    with broker.client("node") as client:
        yield client


@dataclass
class ServeProcess:
    """`pullbroker serve` as a subprocess; its stderr goes to a file the test can read."""

    home: Home
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def address(self) -> str:
        return self.home.read_address()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_serve(home: Path, *extra: str, env: dict[str, str] | None = None) -> ServeProcess:
    """Start `pullbroker serve --home HOME` on a free port; wait until broker.json names it."""
    out, err = home.parent / f"{home.name}.stdout", home.parent / f"{home.name}.stderr"
    config = write_test_config(home.parent / f"{home.name}-broker.yaml")
    args = [PULLBROKER, "serve", "--home", str(home), "--listen", "127.0.0.1:0"]
    args += ["--config", str(config), *extra]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(args, stdout=stdout, stderr=stderr, env=env)
    served = ServeProcess(Home(home), process, out, err)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pullbroker serve exited {process.returncode}: {err.read_text()}")
        if _serving(served.home, process.pid):
            return served
        time.sleep(0.05)
    served.stop()
    raise RuntimeError(f"pullbroker serve did not write broker.json: {err.read_text()}")


def _serving(home: Home, pid: int) -> bool:
    try:
        return bool(json.loads(home.broker_json.read_text()).get("pid") == pid)
    except (OSError, ValueError):
        return False


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Factory: `pullbroker serve` subprocesses in tmp homes, stopped (SIGTERM) afterwards."""
    started: list[ServeProcess] = []

    def start(home: Path | None = None, *extra: str) -> ServeProcess:
        folder = home or tmp_path / f"serve-home-{len(started)}"
        env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
        served = start_serve(folder, *extra, env=env)
        started.append(served)
        return served

    try:
        yield start
    finally:
        for served in started:
            served.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (tests each take a fresh database)."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()
