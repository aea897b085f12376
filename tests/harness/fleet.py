"""`pullbroker serve` replicas on one PostgreSQL database: one fleet, as in production.

The replicas share one config file (the database URL from a 0600 file, TLS files from the
config's `tls:` section, one policy, one key-encryption key) and each has its own `--home`.
Used by this package's tests and by bench/replica_bench.py. Kept small on purpose: a fuller
replica harness is being built in tests/harness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pullbroker_client.broker import BrokerTarget
from pullbroker_client.home import Home
from pullbroker_client.tls import TlsFiles
from pullbroker_service.bootstrap.devca import ensure_dev_ca

from tests.harness.postgres import PostgresServer
from tests.harness.process import log_tail

PULLBROKER = str(Path(sys.executable).with_name("pullbroker"))
REPLICAS = 3
STARTUP_TIMEOUT = 30.0


@dataclass
class Replica:
    """One `pullbroker serve` process."""

    home: Home
    process: subprocess.Popen[bytes]
    address: str = ""

    def kill(self) -> None:
        """kill -9: no graceful shutdown, connections cut mid-call."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def issued(self) -> int:
        """Tokens this replica logged as issued (its broker.log)."""
        try:
            text = self.home.broker_log.read_text(errors="replace")
        except OSError:
            return 0
        return text.count('"token_issued"')


@dataclass
class Fleet:
    """REPLICAS replicas serving one database; `shared` holds the CA, certificates and policy."""

    shared: Home
    config: Path
    replicas: list[Replica] = field(default_factory=list)

    @property
    def address(self) -> str:
        """Every replica's address, as a client's --broker list."""
        return ",".join(r.address for r in self.replicas)

    def target(self, role: str = "node", address: str | None = None) -> BrokerTarget:
        return BrokerTarget(address or self.address, TlsFiles.from_home(self.shared, role))

    def start(self, name: str) -> Replica:
        home = Home(self.config.parent / name)
        log = home.root.parent / f"{name}.stderr"
        argv = [PULLBROKER, "serve", "--home", str(home.root), "--listen", "127.0.0.1:0"]
        env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*argv, "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        replica = Replica(home, process)
        self.replicas.append(replica)
        replica.address = _wait_for_address(home, process, log)
        return replica

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()


def _wait_for_address(home: Home, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pullbroker serve exited {process.returncode}:\n{log_tail(log)}")
        try:
            data = json.loads(home.broker_json.read_text())
        except (OSError, ValueError):
            data = {}
        if data.get("pid") == process.pid:
            return str(data["address"])
        time.sleep(0.05)
    raise RuntimeError(f"pullbroker serve did not write broker.json:\n{log_tail(log)}")


def write_fleet_config(root: Path, postgres: PostgresServer, **settings: Any) -> tuple[Home, Path]:
    """The shared material and the one config file every replica runs with."""
    shared = Home(root / "shared")
    shared.root.mkdir(mode=0o700, parents=True)
    ensure_dev_ca(shared)  # server certificate names localhost and 127.0.0.1
    shared.secrets_dir.mkdir(mode=0o700)
    url_file = root / "database.url"
    url_file.write_text(postgres.dsn(postgres.create_database()).reveal())
    url_file.chmod(0o600)
    fleet: dict[str, Any] = {
        "allow_loopback_registries": True,
        "database": {"url_file": str(url_file)},
        "tls": {
            "ca_file": str(shared.ca_cert),
            "cert_file": str(shared.cert("server")),
            "key_file": str(shared.key("server")),
        },
        "policy_path": str(shared.policy_yaml),
        "secret_backend": "local",
        "local": {"key_wrapper": "file", "kek_file": str(shared.secrets_dir / "kek.key")},
        # One node identity makes every call of the storm: lift its per-identity limit.
        "rate_limits": {"issue_pull_token_per_second": 1e6, "issue_pull_token_burst": 10**6},
    }
    config = root / "fleet.yaml"
    config.write_text(yaml.safe_dump({**fleet, **settings}, sort_keys=True))
    return shared, config


def start_fleet(root: Path, postgres: PostgresServer, replicas: int = REPLICAS) -> Fleet:
    """`replicas` replicas on a fresh database, started one after another (the first migrates
    and makes the key-encryption key); stop them with Fleet.stop()."""
    shared, config = write_fleet_config(root, postgres)
    made = Fleet(shared, config)
    try:
        for index in range(replicas):
            made.start(f"replica-{index}")
    except BaseException:
        made.stop()
        raise
    return made
