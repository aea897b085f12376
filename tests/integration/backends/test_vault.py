"""VaultSecretBackend against real OpenBao: KV v2 layout, TLS trust, faults, check-and-set."""

from __future__ import annotations

import asyncio
from pathlib import Path

import hvac.exceptions
import pytest
from pullbroker_service.domain.errors import (
    BackendUnavailable,
    FailedPrecondition,
    PermissionDenied,
)
from pullbroker_service.secrets.vault import VaultSecretBackend
from pullbroker_service.secrets.vault_auth import AppRoleAuth, FileSource, VaultSession

from tests.harness.certs import TestCA
from tests.harness.openbao import OpenBaoRaft
from tests.integration.backends.conftest import VaultWorld

pytestmark = pytest.mark.integration

_CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


def _session(world: VaultWorld, ca_file: Path | None) -> VaultSession:
    auth = AppRoleAuth(FileSource(world.role_id_file), FileSource(world.secret_id_file))
    return VaultSession(world.connection(ca_file=ca_file), auth)


class TestKvLayout:
    """What the adapter leaves in Vault."""

    async def test_reference_is_path_and_kv_version(
        self, vault_raft: VaultWorld, raft_session: VaultSession, prefix: str
    ) -> None:
        """A put writes <prefix>/<id>; the reference carries the path and the KV version."""
        backend = VaultSecretBackend(raft_session, prefix=prefix)
        ref1 = await backend.put("reg1", b"one")
        ref2 = await backend.put("reg1", b"two")
        assert (ref1.backend, ref1.key, ref1.version) == ("vault", f"{prefix}/reg1", "1")
        assert ref2.version == "2"
        meta = vault_raft.root().secrets.kv.v2.read_secret_metadata(path=f"{prefix}/reg1")
        assert meta["data"]["current_version"] == 2

    async def test_delete_version_destroys_it(
        self, vault_raft: VaultWorld, raft_session: VaultSession, prefix: str
    ) -> None:
        """delete_version destroys that KV version; the other versions stay."""
        backend = VaultSecretBackend(raft_session, prefix=prefix)
        old = await backend.put("reg1", b"one")
        await backend.put("reg1", b"two")
        await backend.delete_version(old)
        meta = vault_raft.root().secrets.kv.v2.read_secret_metadata(path=f"{prefix}/reg1")
        assert meta["data"]["versions"]["1"]["destroyed"] is True
        assert meta["data"]["versions"]["2"]["destroyed"] is False

    async def test_delete_removes_metadata_and_versions(
        self, vault_raft: VaultWorld, raft_session: VaultSession, prefix: str
    ) -> None:
        """delete removes the path's metadata and every version from Vault."""
        backend = VaultSecretBackend(raft_session, prefix=prefix)
        await backend.put("reg1", b"one")
        await backend.delete("reg1")
        with pytest.raises(hvac.exceptions.InvalidPath):
            vault_raft.root().secrets.kv.v2.read_secret_metadata(path=f"{prefix}/reg1")


class TestCheckAndSet:
    """Mounts that require check-and-set."""

    async def test_write_without_cas_is_refused_clearly(
        self, vault_raft: VaultWorld, raft_session: VaultSession, prefix: str
    ) -> None:
        """On a cas_required mount, a backend without cas fails with a mount hint."""
        backend = VaultSecretBackend(raft_session, mount="kvcas", prefix=prefix)
        with pytest.raises(FailedPrecondition, match="requires check-and-set"):
            await backend.put("reg1", b"x")

    async def test_cas_writes_and_races(
        self, vault_raft: VaultWorld, raft_session: VaultSession, prefix: str
    ) -> None:
        """With cas, creates, rotations and racing writers all land as distinct versions."""
        backend = VaultSecretBackend(raft_session, mount="kvcas", prefix=prefix, cas=True)
        first = await backend.put("reg1", b"first")
        refs = await asyncio.gather(*(backend.put("reg1", bytes([i])) for i in range(3)))
        assert first.version == "1"
        assert sorted(r.version for r in refs) == ["2", "3", "4"]
        assert [await backend.get(r) for r in refs] == [b"\0", b"\1", b"\2"]


class TestTlsTrust:
    """Only the configured CA decides whether Vault's certificate is trusted."""

    async def test_configured_ca_wins_over_environment(
        self,
        vault_raft: VaultWorld,
        prefix: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """With every CA variable naming an unrelated CA, the configured CA still works."""
        stranger = TestCA.create(tmp_path / "stranger")
        for name in _CA_VARIABLES:
            monkeypatch.setenv(name, str(stranger.cert_path))
        backend = VaultSecretBackend(_session(vault_raft, vault_raft.server.ca_file), prefix=prefix)
        ref = await backend.put("reg1", b"x")
        assert await backend.get(ref) == b"x"
        await backend.close()

    async def test_environment_ca_is_never_used(
        self, vault_raft: VaultWorld, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the environment naming Vault's CA but another CA configured, TLS fails."""
        assert vault_raft.server.ca_file is not None
        for name in _CA_VARIABLES:
            monkeypatch.setenv(name, str(vault_raft.server.ca_file))
        stranger = TestCA.create(tmp_path / "stranger")
        for ca_file in (stranger.cert_path, None):
            backend = VaultSecretBackend(_session(vault_raft, ca_file), prefix=prefix)
            with pytest.raises(BackendUnavailable, match="TLS verification") as caught:
                await backend.check()
            assert caught.value.retry_after is None
            await backend.close()


class TestFaults:
    """A dead or sealed Vault, and recovery without rebuilding the adapter."""

    async def test_killed_server_is_unavailable_then_recovers(
        self, vault_raft: VaultWorld, raft_session: VaultSession, prefix: str
    ) -> None:
        """While Vault is down every call raises BackendUnavailable with a retry hint; after
        a restart the same adapter reads what was written before (raft kept it)."""
        backend = VaultSecretBackend(raft_session, prefix=prefix)
        ref = await backend.put("reg1", b"before the crash")
        server = vault_raft.server
        assert isinstance(server, OpenBaoRaft)
        server.kill()
        try:
            for call in (backend.get(ref), backend.put("reg1", b"x"), backend.check()):
                with pytest.raises(BackendUnavailable, match="unreachable") as caught:
                    await call
                assert (caught.value.retry_after or 0) > 0
        finally:
            server.restart()
        assert await backend.get(ref) == b"before the crash"
        ref2 = await backend.put("reg1", b"after")
        assert await backend.get(ref2) == b"after"

    async def test_sealed_server_is_unavailable_until_unsealed(
        self, vault_raft: VaultWorld, raft_session: VaultSession, prefix: str
    ) -> None:
        """A sealed Vault gives BackendUnavailable naming the seal; unsealing restores service."""
        backend = VaultSecretBackend(raft_session, prefix=prefix)
        ref = await backend.put("reg1", b"sealed away")
        server = vault_raft.server
        assert isinstance(server, OpenBaoRaft)
        server.restart(unseal=False)
        try:
            with pytest.raises(BackendUnavailable, match="sealed") as caught:
                await backend.check()
            assert caught.value.retry_after
            with pytest.raises(BackendUnavailable, match="sealed"):
                await backend.get(ref)
        finally:
            server.unseal()
        await backend.check()
        assert await backend.get(ref) == b"sealed away"


class TestPermissions:
    """Policy denials are reported with the path to grant, and no secret."""

    async def test_denied_path_is_named(
        self, vault_raft: VaultWorld, raft_session: VaultSession
    ) -> None:
        """Writing outside the policy's prefix raises PermissionDenied naming the policy path,
        without a pointless re-login and without the token in the message."""
        backend = VaultSecretBackend(raft_session, prefix="outside/area")
        with pytest.raises(PermissionDenied) as caught:
            await backend.put("reg1", b"x")
        message = str(caught.value)
        assert "secret/data/outside/area/reg1" in message
        assert "create" in message
        assert raft_session.logins == 1
        token = raft_session._client.token
        assert token
        assert token not in message
