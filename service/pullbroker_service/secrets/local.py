"""The embedded secret backend: AES-256-GCM envelopes in a SQLite file.

Every credential version gets a fresh random data key. The credential is encrypted with it
under AAD "pullbroker/v1/{registry_id}/{version}", so a ciphertext copied to another record or
version fails to decrypt; the data key is wrapped by a KeyWrapper (a 0600 KEK file, KMS, Vault
transit) with context {"registry_id": key}. The file holds only envelopes, never plaintext.

Threads: writes (each a transaction that fsyncs, synchronous=FULL) run on one dedicated
thread. `get` reads on the event loop itself, through a second, read-only connection: in WAL
mode a reader never waits for the writer, and a primary-key lookup in a small, hot file takes
microseconds, while a hop to a thread and back costs tens of them, most of a read's cost on
the token path. Reads that may scan (list_keys, list_versions, check) still go to the thread.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pullbroker_service.domain.errors import BackendUnavailable, SecretCorrupted, SecretMissing
from pullbroker_service.domain.model import SecretRef
from pullbroker_service.infra.sqlite_worker import (
    SqliteWorker,
    check_schema_version,
    open_private_database,
)
from pullbroker_service.secrets.kek import NONCE_BYTES, KeyWrapper

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS key_versions (key TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS envelopes (
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    kek TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (key, version)
);
"""

Envelope = tuple[str, bytes, bytes, bytes]  # kek name, wrapped key, nonce, ciphertext


def secret_aad(key: str, version: int) -> bytes:
    return f"pullbroker/v1/{key}/{version}".encode()


class LocalSecretBackend:
    """SecretBackend on a local SQLite file of envelopes. Versions are "1", "2", ..."""

    name = "local"

    def __init__(self, db_path: Path, wrapper: KeyWrapper) -> None:
        self._path = db_path
        self._wrapper = wrapper
        self._worker = SqliteWorker(
            db_path, _connect, what="local secret store", thread_name="pb-secrets"
        )
        self._reader: sqlite3.Cursor | None = None  # used on the event loop only

    def __repr__(self) -> str:
        return f"LocalSecretBackend({str(self._path)!r}, kek={self._wrapper.name!r})"

    async def put(self, key: str, value: bytes) -> SecretRef:
        # The data key is bound to the registry id only, so it can be made before the version
        # is known; the version counter, the encryption (AAD names the version) and the insert
        # are then one transaction on one thread hop: one fsync, and no version number is
        # consumed by a put that did not store anything.
        data_key, wrapped = await self._wrapper.new_data_key({"registry_id": key})
        kek = self._wrapper.name
        version = await self._run(
            lambda c: _store_new_version(c, key, kek, data_key, wrapped, value)
        )
        return SecretRef(backend=self.name, key=key, version=str(version))

    async def get(self, ref: SecretRef) -> bytes:
        # The token path's read: one coroutine, the row read in line (see the module docstring).
        version = self._version_of(ref)
        key = ref.key
        reader = self._reader or await self._open_reader()
        try:
            rows = reader.execute(_SELECT_ENVELOPE, (key, version)).fetchall()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        if not rows:
            raise SecretMissing(
                f"version {version} of secret {key} is not in the local secret store"
            )
        kek, wrapped, nonce, ciphertext = rows[0]
        wrapper = self._wrapper
        _check_kek(key, version, kek, wrapper)
        data_key = await wrapper.unwrap(wrapped, {"registry_id": key})
        return _decrypt(key, version, data_key, nonce, ciphertext)

    async def delete(self, key: str) -> None:
        await self._run(lambda c: _execute(c, "DELETE FROM envelopes WHERE key = ?", (key,)))

    async def delete_version(self, ref: SecretRef) -> None:
        version = self._version_of(ref)
        sql = "DELETE FROM envelopes WHERE key = ? AND version = ?"
        await self._run(lambda c: _execute(c, sql, (ref.key, version)))

    async def list_keys(self) -> list[str]:
        sql = "SELECT DISTINCT key FROM envelopes ORDER BY key"
        rows = await self._run(lambda c: c.execute(sql).fetchall())
        return [str(r[0]) for r in rows]

    async def list_versions(self, key: str) -> list[tuple[SecretRef, datetime]]:
        """Every stored version of `key` with when it was written, oldest first."""
        sql = "SELECT version, created_at FROM envelopes WHERE key = ? ORDER BY version"
        rows = await self._run(lambda c: c.execute(sql, (key,)).fetchall())
        return [
            (SecretRef(self.name, key, str(v)), datetime.fromisoformat(str(at))) for v, at in rows
        ]

    async def check(self) -> None:
        """The file answers and the key wrapper makes a data key (a KMS or Vault transit KEK
        is a remote service this backend cannot work without)."""
        await self._run(lambda c: c.execute("SELECT count(*) FROM envelopes").fetchone())
        await self._wrapper.new_data_key({"registry_id": "pullbroker-health-check"})

    async def rewrap(self, new_wrapper: KeyWrapper) -> int:
        """Re-encrypt every envelope under a fresh data key wrapped by `new_wrapper` (KEK
        rotation); returns how many changed. Resumable: envelopes already under it are skipped.
        """
        sql = "SELECT key, version FROM envelopes WHERE kek != ? ORDER BY key, version"
        pending = await self._run(lambda c: c.execute(sql, (new_wrapper.name,)).fetchall())
        for key, version in pending:
            row = await self._run(partial(_select, key=key, version=version))
            if row is None:
                continue  # deleted meanwhile
            plaintext = await self._open(key, version, row, self._wrapper)
            data_key, wrapped = await new_wrapper.new_data_key({"registry_id": key})
            envelope = _seal(key, version, plaintext, new_wrapper.name, data_key, wrapped)
            await self._run(partial(_update, key=key, version=version, envelope=envelope))
        self._wrapper = new_wrapper
        return len(pending)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.connection.close()
            self._reader = None
        await self._worker.close()
        close_wrapper = getattr(self._wrapper, "close", None)  # a KMS client has connections
        if close_wrapper is not None:
            await close_wrapper()

    def _version_of(self, ref: SecretRef) -> int:
        if ref.backend != self.name or not ref.version.isdigit():
            raise SecretMissing(
                f"secret reference {ref.backend}:{ref.key}@{ref.version} is not one of the "
                "local secret store"
            )
        return int(ref.version)

    async def _open(self, key: str, version: int, row: Envelope, wrapper: KeyWrapper) -> bytes:
        kek, wrapped, nonce, ciphertext = row
        _check_kek(key, version, kek, wrapper)
        data_key = await wrapper.unwrap(wrapped, {"registry_id": key})
        return _decrypt(key, version, data_key, nonce, ciphertext)

    async def _open_reader(self) -> sqlite3.Cursor:
        # One cursor, kept: making a cursor per read costs as much as a third of the read.
        try:
            await self._run(lambda c: None)  # the writer creates the file and schema first
            if self._reader is None:  # another get may have opened it meanwhile
                self._reader = _connect_reader(self._path).cursor()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return self._reader

    def _unavailable(self, exc: sqlite3.Error) -> BackendUnavailable:
        return self._worker.unavailable(exc)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._worker.run(fn)


def _connect(path: Path) -> sqlite3.Connection:
    conn = open_private_database(path, synchronous="FULL")
    conn.executescript(_SCHEMA)
    check_schema_version(conn, path, SCHEMA_VERSION, what="local secret store")
    return conn


def _connect_reader(path: Path) -> sqlite3.Connection:
    # Opened on the event loop's thread and only used there; check_same_thread=False because
    # a backend may outlive one loop in tests (SQLite itself is built serialised).
    conn = sqlite3.connect(path, isolation_level=None, timeout=1.0, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    return conn


def _seal(
    key: str, version: int, value: bytes, kek: str, data_key: bytes, wrapped: bytes
) -> Envelope:
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, value, secret_aad(key, version))
    return kek, wrapped, nonce, ciphertext


def _store_new_version(
    conn: sqlite3.Connection, key: str, kek: str, data_key: bytes, wrapped: bytes, value: bytes
) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # A counter rather than max(version)+1: a version number is never reused, even after
        # the newest version was deleted.
        (version,) = conn.execute(
            "INSERT INTO key_versions (key, last_version) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET last_version = last_version + 1 "
            "RETURNING last_version",
            (key,),
        ).fetchall()[0]
        _, _, nonce, ciphertext = _seal(key, version, value, kek, data_key, wrapped)
        conn.execute(
            "INSERT INTO envelopes (key, version, kek, wrapped_key, nonce, ciphertext, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, version, kek, wrapped, nonce, ciphertext, datetime.now(UTC).isoformat()),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return int(version)


def _update(conn: sqlite3.Connection, key: str, version: int, envelope: Envelope) -> None:
    kek, wrapped, nonce, ciphertext = envelope
    conn.execute(
        "UPDATE envelopes SET kek = ?, wrapped_key = ?, nonce = ?, ciphertext = ? "
        "WHERE key = ? AND version = ?",
        (kek, wrapped, nonce, ciphertext, key, version),
    )


# Read with fetchall, not fetchone: it runs the statement to its end, so no read transaction
# stays open on the connection between calls.
_SELECT_ENVELOPE = (
    "SELECT kek, wrapped_key, nonce, ciphertext FROM envelopes WHERE key = ? AND version = ?"
)


def _select(conn: sqlite3.Connection, key: str, version: int) -> Envelope | None:
    rows = conn.execute(_SELECT_ENVELOPE, (key, version)).fetchall()
    if not rows:
        return None
    row = rows[0]
    return str(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3])


def _check_kek(key: str, version: int, kek: str, wrapper: KeyWrapper) -> None:
    if kek != wrapper.name:
        raise SecretCorrupted(
            f"version {version} of secret {key} was wrapped by KEK {kek}, but this broker "
            f"has KEK {wrapper.name}: restore the KEK file it was written with"
        )


def _decrypt(key: str, version: int, data_key: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    try:
        return AESGCM(data_key).decrypt(nonce, ciphertext, secret_aad(key, version))
    except InvalidTag as exc:
        raise SecretCorrupted(
            f"version {version} of secret {key} fails authentication: the stored envelope "
            "was tampered with or copied from another record or version"
        ) from exc


def _execute(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> None:
    conn.execute(sql, params)
