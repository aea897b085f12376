"""A broker's state in its home folder: private folders, broker.json, and the home lock.

Brokers hold the lock shared and a secrets migration holds it exclusively; the migration
marker keeps a broker from starting on half-migrated secrets.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import suppress
from pathlib import Path

from pullbroker_client.home import Home

from pullbroker_service.domain.errors import HomeInUse


def prepare_home(home: Home) -> None:
    """Create the home folder and its private subfolders (0700)."""
    for folder in (home.root, home.secrets_dir, home.logs_dir, home.tls_dir):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_broker_json(home: Home, address: str) -> None:
    """Atomically replace broker.json, so a client never reads half a file."""
    tmp = home.broker_json.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid()}) + "\n", encoding="utf-8")
    os.replace(tmp, home.broker_json)


def remove_broker_json(home: Home, address: str) -> None:
    # Only our own: a second broker may have taken over the home folder since.
    with suppress(OSError, ValueError):
        data = json.loads(home.broker_json.read_text(encoding="utf-8"))
        if data.get("address") == address and data.get("pid") == os.getpid():
            home.broker_json.unlink()


class HomeLock:
    """flock on <home>/home.lock: brokers hold it shared, a migration exclusively. The kernel
    drops it when the process dies, so a crash never leaves the home locked."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Home, *, exclusive: bool) -> HomeLock:
        home.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(home.root / "home.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HomeInUse(
                f"a broker is running on {home.root}: stop it first (the migration works on "
                "the stopped broker's files)"
                if exclusive
                else f"`pullbroker secrets migrate` is running on {home.root}: let it finish"
            ) from None
        return cls(fd)

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the lock
            self._fd = None


def migration_marker(home: Home) -> Path:
    """Present while a migration runs, and after one was interrupted: no broker starts then."""
    return home.secrets_dir / "migration.json"


def database_move_record(home: Home) -> Path:
    """Written when `secrets migrate --to-database` verified its copy: from then on the
    database is the newer copy, and a re-run (which would overwrite it with the SQLite
    files' older records) is refused."""
    return home.secrets_dir / "moved-to-database.json"
