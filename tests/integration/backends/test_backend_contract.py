"""The SecretBackend port's behaviour, the same for every backend and key wrapper.

Vault (dev and raft+TLS, AppRole with a prefix-limited policy), AWS Secrets Manager (moto,
TLS), and the local envelope store with its file, KMS and Vault-transit key wrappers.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pullbroker_service.domain.errors import SecretMissing
from pullbroker_service.domain.model import SecretRef
from pullbroker_service.secrets.aws import AwsSecretsManagerBackend
from pullbroker_service.secrets.base import SecretBackend
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.kek_kms import KmsKeyWrapper
from pullbroker_service.secrets.kek_vault import VaultTransitKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.secrets.vault import VaultSecretBackend
from pullbroker_service.store.postgres_db import PostgresDatabase
from pullbroker_service.store.postgres_envelopes import PostgresEnvelopeTable

from tests.harness.moto_server import MotoServer
from tests.integration.backends.conftest import KMS_ALIAS, VaultWorld, aws_connection
from tests.integration.store.conftest import migrated

pytestmark = pytest.mark.integration

CASES = [
    "vault-dev", "vault-raft-tls", "aws", "local-file", "local-kms", "local-vault-transit",
    "local-postgres",
]  # fmt: skip


@dataclass
class Case:
    """A backend under test and a version id that it never issued."""

    backend: SecretBackend
    missing_version: str
    database: PostgresDatabase | None = None


async def _make_case(name: str, request: pytest.FixtureRequest, prefix: str, tmp: Path) -> Case:
    if name.startswith("vault"):
        world: VaultWorld = request.getfixturevalue(
            "vault_dev" if name == "vault-dev" else "vault_raft"
        )
        return Case(VaultSecretBackend(world.approle_session(), prefix=prefix), "9999")
    moto: MotoServer | None = None
    if name in ("aws", "local-kms"):
        moto = request.getfixturevalue("moto")
    if name == "aws":
        assert moto is not None
        backend = AwsSecretsManagerBackend(
            aws_connection(moto), kms_key_id=KMS_ALIAS, prefix=prefix, recovery_window_days=None
        )
        return Case(backend, str(uuid.uuid4()))
    if name == "local-kms":
        assert moto is not None
        wrapper: object = KmsKeyWrapper(aws_connection(moto), KMS_ALIAS)
    elif name == "local-vault-transit":
        world = request.getfixturevalue("vault_raft")
        wrapper = VaultTransitKeyWrapper(world.approle_session())
    else:
        wrapper = FileKeyWrapper.open(tmp / "kek.key")
    if name == "local-postgres":  # envelopes in PostgreSQL, the KEK still in its file
        db = await migrated(request.getfixturevalue("postgres"))
        in_postgres = LocalSecretBackend(PostgresEnvelopeTable(db), wrapper)  # type: ignore[arg-type]
        return Case(in_postgres, "9999", db)
    return Case(LocalSecretBackend(tmp / "secrets.db", wrapper), "9999")  # type: ignore[arg-type]


@pytest.fixture(params=CASES)
async def case(request: pytest.FixtureRequest, prefix: str, tmp_path: Path) -> AsyncIterator[Case]:
    """One backend, fresh (own prefix or own database), closed afterwards."""
    made = await _make_case(request.param, request, prefix, tmp_path)
    yield made
    await made.backend.close()
    if made.database is not None:
        await made.database.close()


def _value() -> bytes:
    return os.urandom(8) + bytes(range(256)) + uuid.uuid4().bytes


class TestPutAndGet:
    """Versions are written and read back exactly."""

    async def test_round_trip(self, case: Case) -> None:
        """A stored value reads back byte for byte, and the reference names the backend."""
        value = _value()
        ref = await case.backend.put("reg1", value)
        assert ref.backend == case.backend.name
        assert await case.backend.get(ref) == value

    async def test_rotation_keeps_each_version(self, case: Case) -> None:
        """A second put makes a new version; each reference reads its own value."""
        first, second = _value(), _value()
        ref1 = await case.backend.put("reg1", first)
        ref2 = await case.backend.put("reg1", second)
        assert ref1.key == ref2.key
        assert ref1.version != ref2.version
        assert await case.backend.get(ref1) == first
        assert await case.backend.get(ref2) == second

    async def test_concurrent_puts_are_all_kept(self, case: Case) -> None:
        """Puts racing on several keys, two of them on the same key, all land and read back."""
        writes = [("reg-a", _value()), ("reg-a", _value())]
        writes += [(f"reg-{i}", _value()) for i in range(4)]
        refs = await asyncio.gather(*(case.backend.put(k, v) for k, v in writes))
        assert refs[0].version != refs[1].version
        assert [await case.backend.get(r) for r in refs] == [v for _, v in writes]
        assert sorted(await case.backend.list_keys()) == sorted({k for k, _ in writes})

    async def test_unknown_version_is_missing(self, case: Case) -> None:
        """A version the backend never issued raises SecretMissing."""
        ref = await case.backend.put("reg1", b"v")
        bogus = SecretRef(ref.backend, ref.key, case.missing_version)
        with pytest.raises(SecretMissing):
            await case.backend.get(bogus)

    async def test_reference_of_another_backend_is_missing(self, case: Case) -> None:
        """A reference naming a different backend is refused as SecretMissing."""
        ref = await case.backend.put("reg1", b"v")
        other = SecretRef("elsewhere", ref.key, ref.version)
        with pytest.raises(SecretMissing):
            await case.backend.get(other)


class TestDelete:
    """Deleting keys and versions."""

    async def test_delete_removes_every_version(self, case: Case) -> None:
        """After delete, no version of the key reads and the key is no longer listed."""
        ref1 = await case.backend.put("reg1", b"one")
        ref2 = await case.backend.put("reg1", b"two")
        await case.backend.delete("reg1")
        for ref in (ref1, ref2):
            with pytest.raises(SecretMissing):
                await case.backend.get(ref)
        assert "reg1" not in await case.backend.list_keys()

    async def test_delete_is_idempotent(self, case: Case) -> None:
        """Deleting twice, or deleting a key never written, is not an error."""
        await case.backend.put("reg1", b"one")
        await case.backend.delete("reg1")
        await case.backend.delete("reg1")
        await case.backend.delete("never-written")
        assert await case.backend.list_keys() == []

    async def test_put_after_delete_starts_afresh(self, case: Case) -> None:
        """A key can be written again after deletion and reads its new value."""
        await case.backend.put("reg1", b"old")
        await case.backend.delete("reg1")
        ref = await case.backend.put("reg1", b"new")
        assert await case.backend.get(ref) == b"new"

    async def test_delete_version_removes_only_that_version(self, case: Case) -> None:
        """Deleting a superseded version makes it unreadable; the current one still reads."""
        old = await case.backend.put("reg1", b"old")
        new = await case.backend.put("reg1", b"new")
        await case.backend.delete_version(old)
        with pytest.raises(SecretMissing):
            await case.backend.get(old)
        assert await case.backend.get(new) == b"new"
        assert await case.backend.list_keys() == ["reg1"]

    async def test_delete_version_is_idempotent(self, case: Case) -> None:
        """Deleting a version twice, or a version of a deleted key, is not an error."""
        old = await case.backend.put("reg1", b"old")
        await case.backend.put("reg1", b"new")
        await case.backend.delete_version(old)
        await case.backend.delete_version(old)
        await case.backend.delete("reg1")
        await case.backend.delete_version(old)
        with pytest.raises(SecretMissing):
            await case.backend.get(old)


class TestListAndCheck:
    """Listing keys (the reconciler's orphan search) and health."""

    async def test_list_keys_lists_exactly_the_keys_written(self, case: Case) -> None:
        """list_keys returns every key put and not deleted, once each."""
        assert await case.backend.list_keys() == []
        for key in ("reg-b", "reg-a", "reg-c"):
            await case.backend.put(key, b"x")
        await case.backend.put("reg-a", b"y")
        await case.backend.delete("reg-c")
        assert sorted(await case.backend.list_keys()) == ["reg-a", "reg-b"]

    async def test_check_passes_when_reachable(self, case: Case) -> None:
        """check() returns quietly when the backend is usable, and the backend still works."""
        await case.backend.check()
        ref = await case.backend.put("reg1", b"x")
        assert await case.backend.get(ref) == b"x"
