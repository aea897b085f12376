"""A real broker: `pullbroker serve` in its own process, as an operator starts it.

Its own home folder (dev CA, node and admin certificates, policy.yaml), an mTLS port picked
by the OS and written to broker.json. Registries are registered through the admin API.
Shared by the integration tests and the benchmarks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerClient, BrokerTarget, basic_credential
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret

from tests.harness.broker_config import write_test_config
from tests.harness.process import HarnessError, log_tail, spawn, stop

_READY_TIMEOUT = 30.0

NODE_POLICY = """\
rules:
  - identity: "spiffe://pullbroker.local/admin"
    roles: [admin]
  - identity: "spiffe://pullbroker.local/node/*"
    roles: [node]
    registries: [{registries}]
    repositories: ["**"]
"""


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class BrokerProcess:
    """`pullbroker serve --home HOME --listen 127.0.0.1:0`; nodes may pull `node_registries`."""

    def __init__(self, home: Path, *, node_registries: tuple[str, ...] = ("*",)) -> None:
        self.home = Home(home)
        self._node_registries = node_registries
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = home.parent / f"{home.name}-broker.log"

    def start(self) -> BrokerProcess:
        self.home.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        patterns = ", ".join(json.dumps(r) for r in self._node_registries)
        self.home.policy_yaml.write_text(NODE_POLICY.format(registries=patterns))
        config = write_test_config(self.home.root.parent / f"{self.home.root.name}-broker.yaml")
        argv = [_bin("pullbroker"), "serve", "--home", str(self.home.root), "--config", str(config)]
        self._proc = spawn([*argv, "--listen", "127.0.0.1:0"], log_path=self.log_path)
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HarnessError(f"pullbroker serve exited:\n{log_tail(self.log_path)}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise HarnessError(f"pullbroker serve not ready:\n{log_tail(self.log_path)}")

    def _ready(self) -> bool:
        try:
            data = json.loads(self.home.broker_json.read_text())
        except (OSError, ValueError):
            return False
        return bool(data.get("address")) and data.get("pid") == self._proc_pid()

    def _proc_pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        stop(self._proc)
        self._proc = None

    def admin(self) -> BrokerClient:
        """A blocking client with the admin certificate."""
        return BrokerClient(BrokerTarget.from_home(self.home, "admin"))

    def register(
        self, name: str, url: str, ca_pem: str, username: str, password: str,
        *, passthrough: bool = False,
    ) -> str:  # fmt: skip
        """Create a generic registry record with a Basic credential; returns its name."""
        record = registry_pb2.Registry(
            display_name=name,
            type=registry_pb2.REGISTRY_TYPE_GENERIC,
            url=url,
            registry_ca_pem=ca_pem,
            allow_basic_passthrough=passthrough,
        )
        with self.admin() as admin:
            created: Any = admin.create_registry(
                record, basic_credential(username, Secret(password))
            )
        return str(created.name)
