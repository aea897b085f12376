"""A real PostgreSQL server for tests: Debian's binaries, a throwaway cluster, a free port.

initdb refuses to run as root, so when the tests run as root the cluster belongs to the
`postgres` user (created by Debian's package) and its commands run through `runuser`; the
folder is made under /tmp (not pytest's 0700 tree, which that user cannot enter) and owned
by it. The server listens on 127.0.0.1 only, with trust authentication for the one user `pb`
(nothing but loopback can reach it), and is stopped by its postmaster PID. fsync is off:
these clusters are thrown away.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from pullbroker_client.secret import Secret

from tests.harness.process import HarnessError, free_port, log_tail

USER = "pb"
_READY_TIMEOUT = 30.0
_LIVE: set[PostgresServer] = set()
INSTALL_HINT = "run `make debs` (installs Debian's postgresql package)"


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.close()


def postgres_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder, or HarnessError saying how to
    install one."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if not found:
        raise HarnessError(f"PostgreSQL's server binaries are not installed: {INSTALL_HINT}")
    return Path(found[-1]).parent


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class PostgresServer:
    """One cluster in its own folder; `stop()` and `start()` keep its data and port."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="pb-postgres-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        if self.as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        _LIVE.add(self)
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, check=False, cwd=self.root, timeout=60)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise HarnessError(f"{tool} failed ({done.returncode}):\n{output}")

    def start(self) -> None:
        options = (
            f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        try:
            self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log_path),
                      "-w", "-t", str(int(_READY_TIMEOUT)), "start")  # fmt: skip
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{log_tail(self.log_path)}") from None

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster: sessions are cut, open transactions roll
        back), waiting until it is gone."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        _LIVE.discard(self)
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> Secret:
        return Secret(f"host=127.0.0.1 port={self.port} user={USER} dbname={database}")

    def create_database(self) -> str:
        """A fresh, empty database; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn().reveal(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return name

    def execute(self, database: str, sql: str) -> list[tuple[object, ...]]:
        """Run one statement as the superuser (for a test to look or meddle)."""
        with psycopg.connect(self.dsn(database).reveal(), autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description else []
