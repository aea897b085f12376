"""The embedded secret backend: AES-256-GCM envelopes in a SQLite file or PostgreSQL.

Every credential version gets a fresh random data key. The credential is encrypted with it
under AAD "pullbroker/v1/{registry_id}/{version}", so a ciphertext copied to another record or
version fails to decrypt; the data key is wrapped by a KeyWrapper (a 0600 KEK file, KMS, Vault
transit) with context {"registry_id": key}. The table (envelopes.py: a SQLite file in the home
folder, or the broker's PostgreSQL database) holds only envelopes, never plaintext, and never
the KEK.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pullbroker_service.domain.errors import SecretCorrupted, SecretMissing
from pullbroker_service.domain.model import SecretRef
from pullbroker_service.secrets.envelopes import Envelope, EnvelopeTable
from pullbroker_service.secrets.kek import NONCE_BYTES, KeyWrapper
from pullbroker_service.secrets.sqlite_envelopes import SqliteEnvelopeTable


def secret_aad(key: str, version: int) -> bytes:
    return f"pullbroker/v1/{key}/{version}".encode()


class LocalSecretBackend:
    """SecretBackend on a table of envelopes (a SQLite file at `where`, or any
    EnvelopeTable). Versions are "1", "2", ..."""

    name = "local"

    def __init__(self, where: Path | EnvelopeTable, wrapper: KeyWrapper) -> None:
        self._table: EnvelopeTable = (
            SqliteEnvelopeTable(where) if isinstance(where, Path) else where
        )
        self._wrapper = wrapper

    def __repr__(self) -> str:
        return f"LocalSecretBackend({self._table!r}, kek={self._wrapper.name!r})"

    async def put(self, key: str, value: bytes) -> SecretRef:
        # The data key is bound to the registry id only, so it can be made before the version
        # is known; the table then allots the version and stores the sealed value in one
        # transaction, so no version number is consumed by a put that did not store anything.
        data_key, wrapped = await self._wrapper.new_data_key({"registry_id": key})
        kek = self._wrapper.name

        def seal(version: int) -> Envelope:
            return _seal(key, version, value, kek, data_key, wrapped)

        version = await self._table.insert_next_version(key, seal)
        return SecretRef(backend=self.name, key=key, version=str(version))

    async def get(self, ref: SecretRef) -> bytes:
        version = self._version_of(ref)
        row = await self._table.select(ref.key, version)
        if row is None:
            raise SecretMissing(
                f"version {version} of secret {ref.key} is not in the local secret store"
            )
        return await self._open(ref.key, version, row, self._wrapper)

    async def delete(self, key: str) -> None:
        await self._table.delete(key)

    async def delete_version(self, ref: SecretRef) -> None:
        await self._table.delete_version(ref.key, self._version_of(ref))

    async def list_keys(self) -> list[str]:
        return await self._table.list_keys()

    async def list_versions(self, key: str) -> list[tuple[SecretRef, datetime]]:
        """Every stored version of `key` with when it was written, oldest first."""
        return [
            (SecretRef(self.name, key, str(v)), at)
            for v, at in await self._table.list_versions(key)
        ]

    async def check(self) -> None:
        """The table answers and the key wrapper makes a data key (a KMS or Vault transit KEK
        is a remote service this backend cannot work without)."""
        await self._table.check()
        await self._wrapper.new_data_key({"registry_id": "pullbroker-health-check"})

    async def rewrap(self, new_wrapper: KeyWrapper) -> int:
        """Re-encrypt every envelope under a fresh data key wrapped by `new_wrapper` (KEK
        rotation); returns how many changed. Resumable: envelopes already under it are skipped.
        """
        pending = await self._table.not_under(new_wrapper.name)
        for key, version in pending:
            row = await self._table.select(key, version)
            if row is None:
                continue  # deleted meanwhile
            plaintext = await self._open(key, version, row, self._wrapper)
            data_key, wrapped = await new_wrapper.new_data_key({"registry_id": key})
            envelope = _seal(key, version, plaintext, new_wrapper.name, data_key, wrapped)
            await self._table.update(key, version, envelope)
        self._wrapper = new_wrapper
        return len(pending)

    async def close(self) -> None:
        await self._table.close()
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


def _seal(
    key: str, version: int, value: bytes, kek: str, data_key: bytes, wrapped: bytes
) -> Envelope:
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, value, secret_aad(key, version))
    return kek, wrapped, nonce, ciphertext


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
