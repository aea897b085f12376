"""The local secret store's envelopes in PostgreSQL (secrets/envelopes.py's EnvelopeTable).

It lives in store/ because it is a table of the broker's database; secrets/ never imports
it (bootstrap hands it to the secret backend factory). Rows are sealed envelopes: the
credential encrypted under a per-version data key, that key wrapped by the KEK, which stays
in its file, KMS or Vault transit and never reaches the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pullbroker_service.store.postgres_db import PostgresDatabase

Envelope = tuple[str, bytes, bytes, bytes]  # kek name, wrapped key, nonce, ciphertext


class PostgresEnvelopeTable:
    """EnvelopeTable on `secret_envelopes` and `secret_key_versions` of `db`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"PostgresEnvelopeTable({self._db!r})"

    async def insert_next_version(self, key: str, seal: Callable[[int], Envelope]) -> int:
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO secret_key_versions AS v (key, last_version) VALUES (%s, 1) "
                "ON CONFLICT (key) DO UPDATE SET last_version = v.last_version + 1 "
                "RETURNING last_version",
                (key,),
            )
            row = await cur.fetchone()
            assert row is not None  # INSERT ... RETURNING always answers a row
            version = int(row[0])
            kek, wrapped, nonce, ciphertext = seal(version)
            await conn.execute(
                "INSERT INTO secret_envelopes (key, version, kek, wrapped_key, nonce, "
                "ciphertext, created_at) VALUES (%s, %s, %s, %s, %s, %s, now())",
                (key, version, kek, wrapped, nonce, ciphertext),
            )
        return version

    async def insert_version(
        self, key: str, version: int, envelope: Envelope, created_at: datetime
    ) -> None:
        kek, wrapped, nonce, ciphertext = envelope
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO secret_key_versions AS v (key, last_version) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET "
                "last_version = GREATEST(v.last_version, EXCLUDED.last_version)",
                (key, version),
            )
            await conn.execute(
                "INSERT INTO secret_envelopes (key, version, kek, wrapped_key, nonce, "
                "ciphertext, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (key, version) DO UPDATE SET kek = EXCLUDED.kek, "
                "wrapped_key = EXCLUDED.wrapped_key, nonce = EXCLUDED.nonce, "
                "ciphertext = EXCLUDED.ciphertext, created_at = EXCLUDED.created_at",
                (key, version, kek, wrapped, nonce, ciphertext, created_at),
            )

    async def select(self, key: str, version: int) -> Envelope | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT kek, wrapped_key, nonce, ciphertext FROM secret_envelopes "
                "WHERE key = %s AND version = %s",
                (key, version),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return str(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3])

    async def update(self, key: str, version: int, envelope: Envelope) -> None:
        kek, wrapped, nonce, ciphertext = envelope
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE secret_envelopes SET kek = %s, wrapped_key = %s, nonce = %s, "
                "ciphertext = %s WHERE key = %s AND version = %s",
                (kek, wrapped, nonce, ciphertext, key, version),
            )

    async def delete(self, key: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute("DELETE FROM secret_envelopes WHERE key = %s", (key,))

    async def delete_version(self, key: str, version: int) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "DELETE FROM secret_envelopes WHERE key = %s AND version = %s", (key, version)
            )

    async def list_keys(self) -> list[str]:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT DISTINCT key FROM secret_envelopes ORDER BY key")
            return [str(r[0]) for r in await cur.fetchall()]

    async def list_versions(self, key: str) -> list[tuple[int, datetime]]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT version, created_at FROM secret_envelopes WHERE key = %s ORDER BY version",
                (key,),
            )
            return [(int(v), at) for v, at in await cur.fetchall()]

    async def not_under(self, kek: str) -> list[tuple[str, int]]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT key, version FROM secret_envelopes WHERE kek <> %s ORDER BY key, version",
                (kek,),
            )
            return [(str(k), int(v)) for k, v in await cur.fetchall()]

    async def check(self) -> None:
        await self._db.check()

    async def close(self) -> None:
        """The database is shared with the metadata stores; its owner closes it."""
