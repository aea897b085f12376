"""A canary credential through every backend never shows up in plaintext anywhere we can look.

Not in OpenBao's raft data directory (the barrier encrypts storage), not in the servers' logs,
not in the local store's database, not in anything logged, printed or raised by the broker.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pullbroker_service.domain.errors import BrokerError
from pullbroker_service.domain.model import SecretRef
from pullbroker_service.secrets.aws import AwsSecretsManagerBackend
from pullbroker_service.secrets.base import SecretBackend
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.kek_kms import KmsKeyWrapper
from pullbroker_service.secrets.kek_vault import VaultTransitKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.secrets.vault import VaultSecretBackend

from tests.harness.canary import find_in_text, find_in_tree, new_canary
from tests.harness.moto_server import MotoServer
from tests.integration.backends.conftest import KMS_ALIAS, VaultWorld, aws_connection

pytestmark = pytest.mark.integration


async def _exercise(backend: SecretBackend, canary: str) -> list[str]:
    """A credential's whole life, plus failures; returns every error message raised."""
    value = f'{{"kind":"basic","username":"u","password":"{canary}"}}'.encode()
    messages: list[str] = []
    old = await backend.put("reg-canary", value)
    new = await backend.put("reg-canary", value + b" ")
    assert await backend.get(new) == value + b" "
    await backend.delete_version(old)
    for bad in (old, SecretRef(new.backend, new.key, "12345")):
        try:
            await backend.get(bad)
        except BrokerError as exc:
            messages.append(str(exc))
    assert await backend.list_keys() == ["reg-canary"]
    await backend.close()
    return messages


class TestCanary:
    """The credential's plaintext stays inside the backends' encryption."""

    async def test_no_plaintext_canary_anywhere(
        self,
        vault_raft: VaultWorld,
        moto: MotoServer,
        prefix: str,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """After put/rotate/get/delete_version/errors through every backend and wrapper, no
        encoded form of the canary is in raft data, server logs, local databases, captured
        logs and output, or error messages."""
        caplog.set_level(logging.INFO)
        caplog.set_level(logging.DEBUG, logger="pullbroker_service")
        canary = new_canary("backend")
        backends: list[SecretBackend] = [
            VaultSecretBackend(vault_raft.approle_session(), prefix=prefix),
            AwsSecretsManagerBackend(aws_connection(moto), kms_key_id=KMS_ALIAS, prefix=prefix),
            LocalSecretBackend(tmp_path / "f.db", FileKeyWrapper.open(tmp_path / "kek.key")),
            LocalSecretBackend(tmp_path / "k.db", KmsKeyWrapper(aws_connection(moto), KMS_ALIAS)),
            LocalSecretBackend(
                tmp_path / "v.db", VaultTransitKeyWrapper(vault_raft.approle_session())
            ),
        ]
        messages: list[str] = []
        for backend in backends:
            messages += await _exercise(backend, canary)
        assert len(messages) == 2 * len(backends)  # every failure path was taken

        raft_files = [p for p in (vault_raft.workdir / "raft").rglob("*") if p.is_file()]
        assert sum(p.stat().st_size for p in raft_files) > 0
        for root in (vault_raft.workdir, moto.workdir, tmp_path):
            assert find_in_tree(root, canary) == []
        out, err = capfd.readouterr()
        for text in (caplog.text, out, err, *messages):
            assert not find_in_text(text, canary)
