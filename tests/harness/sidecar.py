"""The node side, for tests and bench: `pullbroker-sidecar run` as a process, one-shot
sidecar commands, and the helpers on PATH.

Runtimes find a credential helper by its name on PATH (`docker-credential-pullbroker`);
kubelet runs a provider by path. Until the console scripts are installed, a bin folder
holds small shims that run `python -m pullbroker_sidecar.integrations.<module>`; once
they are installed, the shims run the installed scripts instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pullbroker_sidecar.daemon.protocol import SOCKET_ENV, ask
from pullbroker_sidecar.errors import DaemonUnavailable

from tests.harness.process import HarnessError, log_tail, spawn, stop

DOCKER_HELPER = "docker-credential-pullbroker"
KUBELET_PROVIDER = "pullbroker-credential-provider"
MODULES = {
    DOCKER_HELPER: "pullbroker_sidecar.integrations.docker_credential",
    KUBELET_PROVIDER: "pullbroker_sidecar.integrations.kubelet_provider",
}
_READY_TIMEOUT = 30.0


def installed(script: str) -> Path | None:
    """The console script beside this interpreter, if the package installed it."""
    path = Path(sys.executable).parent / script
    return path if path.exists() else None


def make_helper_bin(folder: Path) -> Path:
    """A folder holding `docker-credential-pullbroker` and `pullbroker-credential-provider`."""
    folder.mkdir(parents=True, exist_ok=True)
    for script, module in MODULES.items():
        target = installed(script)
        command = f'exec "{target}" "$@"' if target else f'exec "{sys.executable}" -m {module} "$@"'
        shim = folder / script
        shim.write_text(f"#!/bin/sh\n{command}\n")
        shim.chmod(0o755)
    return folder


def node_env(bin_dir: Path, socket: Path, **extra: str) -> dict[str, str]:
    """The environment runtimes run in: helpers first on PATH, the daemon's socket named."""
    env = {k: v for k, v in os.environ.items() if k not in ("PULLBROKER_HOME", "DOCKER_CONFIG")}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env[SOCKET_ENV] = str(socket)
    env.update(extra)
    return env


@dataclass
class SidecarDaemon:
    """`pullbroker-sidecar run` for one node home, serving `socket`."""

    home: Path
    socket: Path
    images: list[str] = field(default_factory=list)
    rotation_check: float = 0.2
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.socket.with_suffix(".log")

    def start(self) -> SidecarDaemon:
        argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "run", "--home", str(self.home)]
        argv += ["--socket", str(self.socket), "--rotation-check", str(self.rotation_check)]
        for image in self.images:
            argv += ["--image", image]
        argv += self.extra
        env = {k: v for k, v in os.environ.items() if k not in ("PULLBROKER_HOME", SOCKET_ENV)}
        self.proc = spawn(argv, log_path=self.log_path, env=env)
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"sidecar daemon exited:\n{log_tail(self.log_path)}")
            try:
                if ask(str(self.socket), {"op": "ping"}, timeout=2).get("ok"):
                    return self
            except DaemonUnavailable:
                time.sleep(0.05)
        self.stop()
        raise HarnessError(f"sidecar daemon not ready:\n{log_tail(self.log_path)}")

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request over the socket."""
        return ask(str(self.socket), {"op": op, **fields})

    def status(self) -> dict[str, Any]:
        return self.ask("status")

    def stop(self) -> None:
        stop(self.proc, timeout=10.0)
        self.proc = None


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
