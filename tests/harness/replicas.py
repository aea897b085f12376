"""N broker replicas on one PostgreSQL database: `pullbroker serve --config same.yaml`, N times.

The one launcher of several broker processes: the replicas, failover and token-storm tests
and bench/replica_bench.py use it.

As an operator runs them: one config file for all, each process with its own state folder
(`--home`: logs, broker.json, the home lock) and its own loopback port. The TLS material is
shared files, referenced by the config's `tls:` section: one development CA made once (with
the server, admin and node leaves) before any replica starts. The local secret backend's
key file and the policy are shared files too, and the connection string is a 0600 file
(`database.url_file`), so the config holds no secret. Clients may name one replica
(`target(i)`) or all of them (`target_all()`, a multi-address target that fails over).

Replicas are started on free ports picked here (a replica restarted after `kill_9` keeps its
address), stopped by PID (SIGTERM, then SIGKILL), and `kill_9(i)` kills one at once, as a
node crash or an OOM kill would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pullbroker_client.broker import AsyncBrokerClient, BrokerClient, BrokerTarget
from pullbroker_client.home import Home
from pullbroker_client.tls import TlsFiles
from pullbroker_service.bootstrap.devca import ensure_dev_ca
from pullbroker_service.secrets.kek import FileKeyWrapper

from tests.harness.broker_config import TEST_SETTINGS
from tests.harness.postgres import PostgresServer
from tests.harness.process import HarnessError, free_port, log_tail, spawn, stop

_READY_TIMEOUT = 30.0
_ATTEMPTS = 3  # a free port can be taken between free_port() and the replica's bind
# The admin may deploy anywhere; nodes (the shared node leaf) may pull `registries`.
REPLICA_POLICY = """\
rules:
  - identity: "spiffe://pullbroker.local/admin"
    roles: [admin]
    targets: ["**"]
  - identity: "spiffe://pullbroker.local/node/*"
    roles: [node]
    registries: [{registries}]
    repositories: ["**"]
"""
PULLBROKER = str(Path(sys.executable).with_name("pullbroker"))
NO_TOKEN_LIMIT: dict[str, Any] = {
    "rate_limits": {"issue_pull_token_per_second": 1e6, "issue_pull_token_burst": 10**6}
}
"""Settings for a storm of calls from one node identity: its per-identity limit lifted."""


class Replica:
    """One `pullbroker serve` process of the set."""

    def __init__(self, index: int, home: Path, config: Path) -> None:
        self.index = index
        self.home = Home(home)
        self.config = config
        self.port = free_port()
        self.log_path = home.parent / f"{home.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        """How the last run ended once stopped: -9 after kill_9."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        for attempt in range(_ATTEMPTS):
            argv = [PULLBROKER, "serve", "--home", str(self.home.root)]
            argv += ["--config", str(self.config), "--listen", self.address]
            env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
            self.proc = spawn(argv, log_path=self.log_path, env=env)
            if self._wait_ready():
                return
            if attempt + 1 < _ATTEMPTS and "address already in use" in log_tail(self.log_path):
                self.port = free_port()
                continue
            break
        self.stop()
        raise HarnessError(f"replica {self.index} not ready:\n{log_tail(self.log_path, 40)}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                data = json.loads(self.home.broker_json.read_text())
            except (OSError, ValueError):
                data = {}
            if data.get("pid") == self.pid and data.get("address"):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it lingers; idempotent."""
        if self.proc is not None:
            stop(self.proc, timeout=10.0)
            self.exit_code = self.proc.returncode
        self.proc = None

    def kill_9(self) -> None:
        """SIGKILL: no drain, no closers; what it held (locks, sessions) dies with it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.stop()  # forget it (already reaped)

    def issued(self) -> int:
        """Tokens this replica logged as issued (its broker.log)."""
        try:
            text = self.home.broker_log.read_text(errors="replace")
        except OSError:
            return 0
        return text.count('"token_issued"')


class ReplicaSet:
    """`count` replicas of one config on one fresh database of `postgres`."""

    def __init__(
        self,
        root: Path,
        postgres: PostgresServer,
        count: int = 3,
        *,
        settings: dict[str, Any] | None = None,
        node_registries: Sequence[str] = ("*",),
    ) -> None:
        self.root = root
        self.postgres = postgres
        self.database = postgres.create_database()
        self.shared = Home(root / "shared")
        self.config_path = root / "etc" / "broker.yaml"
        self._write_shared(node_registries)
        self._write_config(settings or {})
        self.replicas = [Replica(i, root / f"replica-{i}", self.config_path) for i in range(count)]

    def _write_shared(self, node_registries: Sequence[str]) -> None:
        """The dev CA and its leaves, the policy, and the KEK: made once, before any start."""
        self.shared.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        ensure_dev_ca(self.shared, "replica-test")
        patterns = ", ".join(json.dumps(r) for r in node_registries)
        self.shared.policy_yaml.write_text(REPLICA_POLICY.format(registries=patterns))
        self.shared.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        FileKeyWrapper.open(self.shared.kek_key)

    def _write_config(self, settings: dict[str, Any]) -> None:
        """One config for all; `settings` add to it (`database` ones to its defaults)."""
        etc = self.config_path.parent
        etc.mkdir(mode=0o700, parents=True, exist_ok=True)
        url = etc / "database-url"
        url.write_text(self.postgres.dsn(self.database).reveal() + "\n")
        url.chmod(0o600)
        shared = self.shared
        # Fail fast while the database is down (the outage tests); callers may wait longer.
        database = {"url_file": str(url), "acquire_timeout_seconds": 1}
        database.update(settings.get("database", {}))
        data: dict[str, Any] = {
            **TEST_SETTINGS,
            "log_to_stderr": False,
            "policy_path": str(shared.policy_yaml),
            "tls": {
                "ca_file": str(shared.ca_cert),
                "cert_file": str(shared.cert("server")),
                "key_file": str(shared.key("server")),
            },
            "local": {"kek_file": str(shared.kek_key)},
            **settings,
            "database": database,
        }
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=True))

    def __len__(self) -> int:
        return len(self.replicas)

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def start(self) -> ReplicaSet:
        """Start every replica, one after the other (each migrates or finds nothing to do)."""
        try:
            for replica in self.replicas:
                replica.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def kill_9(self, index: int) -> None:
        self.replicas[index].kill_9()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.replicas]

    @property
    def address(self) -> str:
        """Every replica's address, as a client's --broker list."""
        return ",".join(self.addresses)

    def tls(self, role: str = "admin") -> TlsFiles:
        """The shared CA and the `role` leaf ("admin" or "node")."""
        return TlsFiles.from_home(self.shared, role)

    def target(self, index: int, role: str = "admin") -> BrokerTarget:
        return BrokerTarget(self.replicas[index].address, self.tls(role))

    def target_all(self, role: str = "node") -> BrokerTarget:
        """Every replica in one target: a client built on it spreads calls and fails over."""
        return BrokerTarget(self.address, self.tls(role))

    def client(self, index: int, role: str = "admin", timeout: float = 20.0) -> BrokerClient:
        """A blocking client of replica `index`."""
        return BrokerClient(self.target(index, role), timeout=timeout)

    def async_client(self, index: int, role: str = "admin") -> AsyncBrokerClient:
        """An async client of replica `index` (create it inside the test's event loop)."""
        return AsyncBrokerClient(self.target(index, role), timeout=20.0)

    def logs(self) -> str:
        """Every replica's log file (process output and <home>/logs/broker.log), joined."""
        parts = []
        for replica in self.replicas:
            for path in (replica.log_path, replica.home.broker_log):
                if path.exists():
                    parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)
