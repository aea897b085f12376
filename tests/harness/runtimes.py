"""Real container runtimes on private sockets and folders (REAL_COMPONENTS.md): dockerd,
containerd, podman. Each is started by the tests and stopped by its PID.

Unix socket paths are limited to 107 bytes, so every runtime lives under a short
`/tmp/pbn-XXXX` folder rather than pytest's long tmp paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.process import HarnessError, log_tail, spawn, stop

_READY_TIMEOUT = 30.0
DOCKERD_HINT = "apt-get install -y docker.io containerd runc (dockerd, containerd, ctr, runc)"
PODMAN_HINT = "apt-get install -y podman"


def missing(*tools: str) -> list[str]:
    """The tools not on PATH."""
    return [t for t in tools if shutil.which(t) is None]


def short_dir(prefix: str) -> Path:
    """A fresh folder under /tmp with a short path (room for socket names)."""
    return Path(tempfile.mkdtemp(prefix=f"pbn-{prefix}-", dir="/tmp"))


def run(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120.0, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a client command, captured; never raises on a non-zero exit."""
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


@dataclass
class Dockerd:
    """dockerd with its own data-root, exec-root, pidfile and socket; no networking changes."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    def start(self) -> Dockerd:
        config = {
            "data-root": str(self.root / "data"),
            "exec-root": str(self.root / "exec"),
            "pidfile": str(self.root / "docker.pid"),
            "hosts": [self.host],
            "storage-driver": "overlay2",
            "iptables": False,
            "ip6tables": False,
            "bridge": "none",
            "ip-masq": False,
            "userland-proxy": False,
        }
        (self.root / "daemon.json").write_text(json.dumps(config))
        argv = ["dockerd", "--config-file", str(self.root / "daemon.json")]
        self.proc = spawn(argv, log_path=self.log_path)
        _wait(lambda: self.docker(["version", "--format", "{{.Server.Version}}"]).returncode == 0,
              self.proc, self.log_path, "dockerd")  # fmt: skip
        return self

    def docker(
        self, args: list[str], *, config: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this dockerd; `config` is its DOCKER_CONFIG folder."""
        environ = dict(env or os.environ)
        environ["DOCKER_HOST"] = self.host
        if config is not None:
            environ["DOCKER_CONFIG"] = str(config)
        return run(["docker", *args], env=environ)

    def stop(self) -> None:
        stop(self.proc, timeout=15.0)
        self.proc = None


# The CRI plugin would read /etc/cni and listen on TCP: off unless a test asks for it.
_NO_CRI = ['disabled_plugins = ["io.containerd.grpc.v1.cri"]']


@dataclass
class Containerd:
    """containerd with its own root, state and socket.

    The CRI plugin (`runtime.v1.ImageService`, what the kubelet calls) is off unless
    `cri_hosts_dir` is given: then it is on, reads registry hosts from that folder
    (`config_path`, where `mirror-config` writes hosts.toml) and CNI config only from
    folders under `root`, and serves no TCP streaming port. Image pulls (all the tests
    make) need neither CNI nor a pause image.
    """

    root: Path
    cri_hosts_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def log_path(self) -> Path:
        return self.root / "containerd.log"

    def start(self) -> Containerd:
        lines = [
            "version = 2",
            f'root = "{self.root / "root"}"',
            f'state = "{self.root / "state"}"',
            *([] if self.cri_hosts_dir else _NO_CRI),  # a top-level key: before any table
            "[grpc]",
            f'  address = "{self.socket}"',
            "[ttrpc]",
            f'  address = "{self.root / "ttrpc.sock"}"',
            *self._cri_config(),
        ]
        (self.root / "config.toml").write_text("\n".join([*lines, ""]))
        argv = ["containerd", "--config", str(self.root / "config.toml")]
        self.proc = spawn(argv, log_path=self.log_path)
        _wait(self._ready, self.proc, self.log_path, "containerd")
        return self

    def _cri_config(self) -> list[str]:
        if self.cri_hosts_dir is None:
            return []
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        return [
            f"{cri}]",
            '  sandbox_image = "registry.k8s.io/pause:3.9"',
            "  disable_tcp_service = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            f"{cri}.cni]",
            f'  conf_dir = "{self.root / "cni" / "conf"}"',
            f'  bin_dir = "{self.root / "cni" / "bin"}"',
            f"{cri}.registry]",
            f'  config_path = "{self.cri_hosts_dir}"',
        ]

    def _ready(self) -> bool:
        """The socket answers, and with CRI on, the CRI plugin loaded (`ok`, not `error`)."""
        if self.cri_hosts_dir is None:
            return self.ctr(["version"]).returncode == 0
        listed = self.ctr(["plugins", "ls"])
        return listed.returncode == 0 and any(
            line.split()[1:2] == ["cri"] and line.split()[-1] == "ok"
            for line in listed.stdout.splitlines()
        )

    def ctr(
        self, args: list[str], namespace: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`ctr` against this containerd."""
        argv = ["ctr", "--address", str(self.socket)]
        if namespace is not None:
            argv += ["--namespace", namespace]
        return run([*argv, *args])

    def stop(self) -> None:
        stop(self.proc, timeout=15.0)
        self.proc = None


@dataclass
class Podman:
    """podman with its own storage (--root/--runroot); no daemon."""

    root: Path
    extra: list[str] = field(default_factory=list)

    def podman(
        self, args: list[str], *, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = ["podman", "--root", str(self.root / "root"), "--runroot", str(self.root / "run")]
        argv += ["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs"]
        argv += ["--events-backend", "none", *self.extra]
        return run([*argv, *args], env=env)

    def stop(self) -> None:
        # Overlay mounts under --root must go before the folder can be removed.
        self.podman(["system", "reset", "--force"])


def direct_hosts_toml(host: str, ca_file: Path) -> str:
    """A containerd hosts.toml that sends `host`'s pulls straight to the registry, trusting
    `ca_file`: a node without pullbroker.

    containerd 1.6 cannot decode a hosts.toml without a [host] table ("invalid `host` tree")
    and then falls back to plain HTTP for a loopback host, so the registry is named twice.
    """
    return (
        f"server = {json.dumps(f'https://{host}')}\n\n[host.{json.dumps(f'https://{host}')}]\n"
        f'  capabilities = ["pull", "resolve"]\n  ca = {json.dumps(str(ca_file))}\n'
    )


def _wait(ready: object, proc: subprocess.Popen[bytes], log: Path, name: str) -> None:
    assert callable(ready)
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{name} exited ({proc.returncode}):\n{log_tail(log)}")
        if ready():
            return
        time.sleep(0.1)
    stop(proc)
    raise HarnessError(f"{name} did not become ready:\n{log_tail(log)}")


def remove_tree(path: Path) -> None:
    """Remove a runtime's folder once it stopped (best effort)."""
    shutil.rmtree(path, ignore_errors=True)
