"""Vault authentication: token and AppRole logins, renewal, re-login, and their failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import BackendUnavailable, PermissionDenied
from pullbroker_service.secrets.vault import VaultSecretBackend
from pullbroker_service.secrets.vault_auth import (
    AppRoleAuth,
    EnvSource,
    FileSource,
    TokenAuth,
    VaultSession,
)

from tests.integration.backends.conftest import POLICY_NAME, VaultWorld, write_secret_file

pytestmark = pytest.mark.integration


def _child_token(world: VaultWorld) -> Secret:
    resp = world.root().auth.token.create(policies=[POLICY_NAME], ttl="1h")
    return Secret(resp["auth"]["client_token"])


def _revoke(world: VaultWorld, token: Secret) -> None:
    world.root().auth.token.revoke(token.reveal())


class TestTokenAuth:
    """A token handed over in a file or an environment variable."""

    async def test_token_from_file(
        self, vault_dev: VaultWorld, prefix: str, tmp_path: Path
    ) -> None:
        """A token read from a file authenticates the backend's calls."""
        token_file = write_secret_file(tmp_path / "token", _child_token(vault_dev))
        session = VaultSession(vault_dev.connection(), TokenAuth(FileSource(token_file)))
        backend = VaultSecretBackend(session, prefix=prefix)
        ref = await backend.put("reg1", b"x")
        assert await backend.get(ref) == b"x"
        await backend.close()

    async def test_token_from_environment(
        self, vault_dev: VaultWorld, prefix: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A token read from an environment variable authenticates the backend's calls."""
        monkeypatch.setenv("PB_TEST_VAULT_TOKEN", _child_token(vault_dev).reveal())
        session = VaultSession(vault_dev.connection(), TokenAuth(EnvSource("PB_TEST_VAULT_TOKEN")))
        backend = VaultSecretBackend(session, prefix=prefix)
        ref = await backend.put("reg1", b"x")
        assert await backend.get(ref) == b"x"
        await backend.close()

    async def test_replaced_token_file_is_picked_up(
        self, vault_dev: VaultWorld, prefix: str, tmp_path: Path
    ) -> None:
        """When the token is revoked and the file holds a new one, the next call uses it."""
        first = _child_token(vault_dev)
        token_file = write_secret_file(tmp_path / "token", first)
        session = VaultSession(vault_dev.connection(), TokenAuth(FileSource(token_file)))
        backend = VaultSecretBackend(session, prefix=prefix)
        ref = await backend.put("reg1", b"x")
        _revoke(vault_dev, first)
        write_secret_file(token_file, _child_token(vault_dev))
        assert await backend.get(ref) == b"x"
        assert session.logins == 2
        await backend.close()

    async def test_revoked_token_without_replacement_is_denied_clearly(
        self, vault_dev: VaultWorld, prefix: str, tmp_path: Path
    ) -> None:
        """A dead token and nothing newer gives PermissionDenied that never shows the token."""
        token = _child_token(vault_dev)
        token_file = write_secret_file(tmp_path / "token", token)
        session = VaultSession(vault_dev.connection(), TokenAuth(FileSource(token_file)))
        backend = VaultSecretBackend(session, prefix=prefix)
        await backend.put("reg1", b"x")
        _revoke(vault_dev, token)
        with pytest.raises(PermissionDenied, match="rejected the configured token") as caught:
            await backend.put("reg1", b"y")
        assert token.reveal() not in str(caught.value)
        await backend.close()

    async def test_missing_token_file_is_a_configuration_error(
        self, vault_dev: VaultWorld, prefix: str, tmp_path: Path
    ) -> None:
        """An absent credential file names the file and gives no retry hint."""
        missing = tmp_path / "nope"
        session = VaultSession(vault_dev.connection(), TokenAuth(FileSource(missing)))
        backend = VaultSecretBackend(session, prefix=prefix)
        with pytest.raises(BackendUnavailable, match=str(missing)) as caught:
            await backend.check()
        assert caught.value.retry_after is None


class TestAppRole:
    """AppRole login, renewal before expiry, and re-login."""

    async def test_short_token_is_renewed_then_replaced(
        self, vault_dev: VaultWorld, prefix: str, tmp_path: Path
    ) -> None:
        """With a 2 s token TTL and 3 s max TTL, calls spread over the token's life renew it
        (renew-self) and, once renewal buys too little, log in again; every call succeeds."""
        root = vault_dev.root()
        root.auth.approle.create_or_update_approle(
            role_name="short", token_policies=[POLICY_NAME], token_ttl="2s", token_max_ttl="3s"
        )
        role_id = write_secret_file(tmp_path / "role_id", vault_dev.role_id("short"))
        secret_id = write_secret_file(tmp_path / "secret_id", vault_dev.new_secret_id("short"))
        session = VaultSession(
            vault_dev.connection(), AppRoleAuth(FileSource(role_id), FileSource(secret_id))
        )
        backend = VaultSecretBackend(session, prefix=prefix)
        ref = await backend.put("reg1", b"x")
        first_accessor = session.accessor
        for _ in range(12):  # bounded: the token's whole life is 3 s
            if session.logins >= 2:
                break
            await asyncio.sleep(0.7)
            assert await backend.get(ref) == b"x"
        assert session.renewals >= 1
        assert session.logins >= 2
        assert session.accessor != first_accessor
        await backend.close()

    async def test_revoked_token_leads_to_one_relogin(
        self, vault_dev: VaultWorld, prefix: str
    ) -> None:
        """A token revoked behind the broker's back is replaced by a fresh login, transparently."""
        session = vault_dev.approle_session()
        backend = VaultSecretBackend(session, prefix=prefix)
        ref = await backend.put("reg1", b"x")
        vault_dev.root().auth.token.revoke_accessor(session.accessor)
        assert await backend.get(ref) == b"x"
        assert session.logins == 2
        await backend.close()

    async def test_wrong_secret_id_is_denied_clearly(
        self, vault_dev: VaultWorld, prefix: str, tmp_path: Path
    ) -> None:
        """A wrong secret id gives PermissionDenied about the AppRole login, without the id."""
        wrong = Secret("00000000-1111-2222-3333-444444444444")
        auth = AppRoleAuth(
            FileSource(vault_dev.role_id_file), FileSource(write_secret_file(tmp_path / "s", wrong))
        )
        backend = VaultSecretBackend(VaultSession(vault_dev.connection(), auth), prefix=prefix)
        with pytest.raises(PermissionDenied, match="AppRole login") as caught:
            await backend.put("reg1", b"x")
        assert wrong.reveal() not in str(caught.value)
        await backend.close()
