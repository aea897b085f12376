"""A real broker (`pullbroker serve` in its own process) and the sidecar CLI, for tests and bench.

The broker runs exactly as an operator starts it: its own home folder (dev CA, node and
admin certificates, policy.yaml), an mTLS port picked by the OS and written to broker.json.
Registries are registered through the admin API; the sidecar runs as its console command
would, in a subprocess, so exit codes, stdout/stderr and peak RSS are its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerClient, BrokerTarget, basic_credential
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret

from tests.harness.broker_config import write_test_config
from tests.harness.process import HarnessError, log_tail, spawn, stop
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import PushedImage, StandardImages, seed_image
from tests.integration.sidecar.frontdoor import FrontDoor

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

    def register(self, name: str, url: str, ca_pem: str, username: str, password: str) -> str:
        """Create a generic registry record with a Basic credential; returns its name."""
        record = registry_pb2.Registry(
            display_name=name,
            type=registry_pb2.REGISTRY_TYPE_GENERIC,
            url=url,
            registry_ca_pem=ca_pem,
        )
        with self.admin() as admin:
            created: Any = admin.create_registry(
                record, basic_credential(username, Secret(password))
            )
        return str(created.name)


def run_sidecar(
    args: list[str], home: Path, *, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`pullbroker-sidecar ARGS --home HOME`, captured, never raising on failure."""
    env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "pullbroker_sidecar.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@dataclass(frozen=True)
class SidecarWorld:
    """What the sidecar tests pull from."""

    broker: BrokerProcess
    door: FrontDoor
    registry: TokenAuthRegistry
    images: StandardImages
    second: PushedImage  # team/sidecar:v2, a second tag to pull beside team/app:v1
    seed_dir: Path

    @property
    def home(self) -> Path:
        return self.broker.home.root

    def via_door(self, image: PushedImage, tag: str | None = None) -> str:
        """The image's reference through the front door (the host the broker record has)."""
        return f"{self.door.host}/{image.repository}:{tag or image.tag}"

    def seed(self, repository: str, tag: str, sizes: list[int]) -> PushedImage:
        """Push a fresh image (unique random layers) for a test that alters the registry."""
        return seed_image(self.registry, self.seed_dir, repository, tag, sizes)
