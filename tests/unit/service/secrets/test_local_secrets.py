"""The embedded secret store: envelopes bound to record and version, KEK hygiene, no plaintext."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pullbroker_service.domain.errors import BackendUnavailable, SecretCorrupted, SecretMissing
from pullbroker_service.domain.model import SecretRef
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend

from tests.harness.canary import find_in_bytes, new_canary


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalSecretBackend]:
    store = LocalSecretBackend(
        tmp_path / "secrets" / "secrets.db", FileKeyWrapper.open(tmp_path / "secrets" / "kek.key")
    )
    try:
        yield store
    finally:
        await store.close()


def raw(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Direct access to the file, as an attacker with the disk would have."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class TestRoundTrip:
    """put/get/delete behave as the SecretBackend port promises."""

    async def test_put_then_get(self, backend: LocalSecretBackend) -> None:
        """A stored value comes back byte for byte under the reference put returned."""
        ref = await backend.put("reg1", b"value-1")
        assert ref == SecretRef("local", "reg1", "1")
        assert await backend.get(ref) == b"value-1"

    async def test_versions_count_up_and_are_not_reused(self, backend: LocalSecretBackend) -> None:
        """Each put is a new integer version; deleting the newest does not free its number."""
        first = await backend.put("reg1", b"a")
        second = await backend.put("reg1", b"b")
        await backend.delete_version(second)
        third = await backend.put("reg1", b"c")
        assert [first.version, second.version, third.version] == ["1", "2", "3"]
        assert await backend.get(first) == b"a"
        with pytest.raises(SecretMissing):
            await backend.get(second)

    async def test_delete_removes_every_version(self, backend: LocalSecretBackend) -> None:
        """delete(key) removes all versions, is idempotent, and list_keys forgets the key."""
        ref = await backend.put("reg1", b"a")
        await backend.put("reg2", b"b")
        await backend.delete("reg1")
        await backend.delete("reg1")
        assert await backend.list_keys() == ["reg2"]
        with pytest.raises(SecretMissing):
            await backend.get(ref)

    async def test_foreign_reference(self, backend: LocalSecretBackend) -> None:
        """A reference to another backend is SecretMissing, not a crash."""
        with pytest.raises(SecretMissing, match="not one of the local"):
            await backend.get(SecretRef("vault", "reg1", "1"))


class TestEnvelopeBinding:
    """Ciphertexts only open for the record and version they were written for."""

    async def test_ciphertext_copied_to_another_key_fails(
        self, backend: LocalSecretBackend, tmp_path: Path
    ) -> None:
        """Copying reg1's envelope over reg2's makes reg2 undecryptable (AAD names the record)."""
        db = tmp_path / "secrets" / "secrets.db"
        await backend.put("reg1", b"secret-of-reg1")
        ref2 = await backend.put("reg2", b"secret-of-reg2")
        raw(
            db,
            "UPDATE envelopes SET "
            "wrapped_key = (SELECT wrapped_key FROM envelopes WHERE key='reg1'), "
            "nonce = (SELECT nonce FROM envelopes WHERE key='reg1'), "
            "ciphertext = (SELECT ciphertext FROM envelopes WHERE key='reg1') WHERE key = 'reg2'",
        )
        with pytest.raises(SecretCorrupted):
            await backend.get(ref2)

    async def test_ciphertext_copied_to_another_version_fails(
        self, backend: LocalSecretBackend, tmp_path: Path
    ) -> None:
        """Version 1's envelope under version 2 fails: the version is in the AAD."""
        db = tmp_path / "secrets" / "secrets.db"
        await backend.put("reg1", b"old")
        ref2 = await backend.put("reg1", b"new")
        raw(db, "DELETE FROM envelopes WHERE version = 2")
        raw(db, "UPDATE envelopes SET version = 2 WHERE version = 1")
        with pytest.raises(SecretCorrupted, match="fails authentication"):
            await backend.get(ref2)

    async def test_tampering_is_detected(self, backend: LocalSecretBackend, tmp_path: Path) -> None:
        """One flipped ciphertext bit makes get fail instead of returning altered bytes."""
        db = tmp_path / "secrets" / "secrets.db"
        ref = await backend.put("reg1", b"value")
        (blob,) = raw(db, "SELECT ciphertext FROM envelopes")[0]
        assert isinstance(blob, bytes)
        flipped = bytes([blob[0] ^ 1]) + blob[1:]
        raw(db, "UPDATE envelopes SET ciphertext = ?", (flipped,))
        with pytest.raises(SecretCorrupted):
            await backend.get(ref)

    async def test_other_kek_cannot_open(self, tmp_path: Path) -> None:
        """A broker with a different KEK file refuses, naming both KEKs, rather than guessing."""
        db = tmp_path / "secrets.db"
        first = LocalSecretBackend(db, FileKeyWrapper.open(tmp_path / "kek-a"))
        ref = await first.put("reg1", b"value")
        await first.close()
        second = LocalSecretBackend(db, FileKeyWrapper.open(tmp_path / "kek-b"))
        try:
            with pytest.raises(SecretCorrupted, match="restore the KEK file"):
                await second.get(ref)
        finally:
            await second.close()


class TestNoPlaintextOnDisk:
    """The database, its WAL and the KEK file never hold the credential."""

    async def test_canary_absent_from_files(
        self, backend: LocalSecretBackend, tmp_path: Path
    ) -> None:
        """After puts, version deletes and a rewrap, no file holds the canary in any encoding."""
        canary = new_canary("local-secret")
        ref = await backend.put("reg1", canary.encode())
        await backend.put("reg1", canary.encode() + b"-2")
        await backend.delete_version(ref)
        await backend.rewrap(FileKeyWrapper.open(tmp_path / "secrets" / "kek2.key"))
        files = sorted((tmp_path / "secrets").iterdir())
        assert any(f.name.endswith("-wal") for f in files), "WAL mode expected"
        for path in files:
            assert not find_in_bytes(path.read_bytes(), canary), path


class TestKekFile:
    """The KEK file is created 0600, atomically, and refused when others can read it."""

    def test_created_private(self, tmp_path: Path) -> None:
        """A missing KEK file is created with mode 0600 and reloads to the same key."""
        path = tmp_path / "dir" / "kek.key"
        first = FileKeyWrapper.open(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert FileKeyWrapper.open(path).name == first.name
        assert [p.name for p in path.parent.iterdir()] == ["kek.key"], "no temp file left"

    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
    def test_readable_by_others_is_refused(self, tmp_path: Path, mode: int) -> None:
        """Group- or world-accessible KEK files are refused with the chmod to run."""
        path = tmp_path / "kek.key"
        FileKeyWrapper.open(path)
        os.chmod(path, mode)
        with pytest.raises(BackendUnavailable, match=f"chmod 600 {path}"):
            FileKeyWrapper.open(path)

    def test_missing_without_create(self, tmp_path: Path) -> None:
        """open(create=False) refuses a missing file instead of making a new key."""
        with pytest.raises(BackendUnavailable, match="does not exist"):
            FileKeyWrapper.open(tmp_path / "absent", create=False)

    def test_wrong_length(self, tmp_path: Path) -> None:
        """A KEK file of the wrong size is refused."""
        path = tmp_path / "kek.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"c2hvcnQ=\n")
        os.close(fd)
        with pytest.raises(BackendUnavailable, match="must hold 32 bytes"):
            FileKeyWrapper.open(path)

    def test_repr_hides_the_key(self, tmp_path: Path) -> None:
        """The wrapper's repr shows its fingerprint name only."""
        path = tmp_path / "kek.key"
        wrapper = FileKeyWrapper.open(path)
        assert path.read_text().strip() not in repr(wrapper)
        assert wrapper.name in repr(wrapper)


class TestRewrap:
    """Rotating the KEK re-wraps every envelope; the old KEK is no longer needed."""

    async def test_rewrap_then_open_with_new_kek_only(self, tmp_path: Path) -> None:
        """After rewrap, a broker holding only the new KEK reads every version."""
        db = tmp_path / "secrets.db"
        old = LocalSecretBackend(db, FileKeyWrapper.open(tmp_path / "old.key"))
        refs = [await old.put("reg1", b"one"), await old.put("reg2", b"two")]
        new_kek = FileKeyWrapper.open(tmp_path / "new.key")
        assert await old.rewrap(new_kek) == 2
        assert await old.rewrap(new_kek) == 0, "already re-wrapped envelopes are skipped"
        await old.close()
        fresh = LocalSecretBackend(db, FileKeyWrapper.open(tmp_path / "new.key"))
        try:
            assert [await fresh.get(r) for r in refs] == [b"one", b"two"]
        finally:
            await fresh.close()
