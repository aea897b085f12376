"""The KMS and Vault-transit key wrappers: data keys bound to their context."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pullbroker_service.domain.errors import (
    FailedPrecondition,
    PermissionDenied,
    SecretCorrupted,
)
from pullbroker_service.secrets.kek_kms import KmsKeyWrapper
from pullbroker_service.secrets.kek_vault import VaultTransitKeyWrapper, encode_context
from pullbroker_service.secrets.vault_auth import EnvSource, TokenAuth, VaultSession

from tests.harness.moto_server import MotoServer
from tests.integration.backends.conftest import (
    KMS_ALIAS,
    VaultWorld,
    aws_connection,
    create_kms_key,
)

pytestmark = pytest.mark.integration

CONTEXT = {"registry_id": "reg1"}


@pytest.fixture
async def transit(vault_raft: VaultWorld) -> AsyncIterator[VaultTransitKeyWrapper]:
    """The transit wrapper as the broker uses it (AppRole, prefix-limited policy)."""
    session = vault_raft.approle_session()
    yield VaultTransitKeyWrapper(session)
    session.close()


@pytest.fixture
def root_session(vault_raft: VaultWorld, monkeypatch: pytest.MonkeyPatch) -> VaultSession:
    """A root-token session, for keys outside the broker's policy."""
    monkeypatch.setenv("PB_TEST_ROOT_TOKEN", vault_raft.server.root_token.reveal())
    return VaultSession(vault_raft.connection(), TokenAuth(EnvSource("PB_TEST_ROOT_TOKEN")))


class TestVaultTransit:
    """Transit `datakey/plaintext` with a derived key."""

    async def test_round_trip(self, transit: VaultTransitKeyWrapper) -> None:
        """A new data key is 32 bytes, wrapped as a transit ciphertext, and unwraps to itself."""
        plain, wrapped = await transit.new_data_key(CONTEXT)
        assert len(plain) == 32
        assert wrapped.startswith(b"vault:v1:")
        assert plain not in wrapped
        assert await transit.unwrap(wrapped, dict(CONTEXT)) == plain

    async def test_wrong_context_is_refused(self, transit: VaultTransitKeyWrapper) -> None:
        """A wrapped key presented for another registry is refused as SecretCorrupted."""
        _, wrapped = await transit.new_data_key(CONTEXT)
        with pytest.raises(SecretCorrupted, match="reg2"):
            await transit.unwrap(wrapped, {"registry_id": "reg2"})

    async def test_altered_ciphertext_is_refused(self, transit: VaultTransitKeyWrapper) -> None:
        """A tampered wrapped key is refused as SecretCorrupted."""
        _, wrapped = await transit.new_data_key(CONTEXT)
        tampered = wrapped[:-4] + (b"AAAA" if not wrapped.endswith(b"AAAA") else b"BBBB")
        with pytest.raises(SecretCorrupted):
            await transit.unwrap(tampered, CONTEXT)

    async def test_context_encoding_is_canonical(self) -> None:
        """The same mapping in any order encodes to the same transit context."""
        assert encode_context({"a": "1", "b": "2"}) == encode_context({"b": "2", "a": "1"})

    async def test_key_without_derivation_is_refused(
        self, vault_raft: VaultWorld, root_session: VaultSession
    ) -> None:
        """A transit key without derived=true (which would ignore the context) is refused."""
        vault_raft.root().secrets.transit.create_key(name="not-derived")
        wrapper = VaultTransitKeyWrapper(root_session, key_name="not-derived")
        with pytest.raises(FailedPrecondition, match="derived=true"):
            await wrapper.new_data_key(CONTEXT)

    async def test_missing_key_is_named(self, root_session: VaultSession) -> None:
        """A transit key that does not exist is reported by name."""
        wrapper = VaultTransitKeyWrapper(root_session, key_name="absent-key")
        with pytest.raises(FailedPrecondition, match="absent-key"):
            await wrapper.new_data_key(CONTEXT)

    async def test_names_identify_the_key(self, root_session: VaultSession) -> None:
        """The wrapper's name (stored beside envelopes) identifies mount and key."""
        wrapper = VaultTransitKeyWrapper(root_session, key_name="k1", mount="tr")
        assert wrapper.name == "vault-transit:tr/k1"


class TestKms:
    """KMS GenerateDataKey/Decrypt with an encryption context."""

    async def test_round_trip(self, moto: MotoServer) -> None:
        """A new data key is 32 bytes and unwraps to itself with the same context."""
        wrapper = KmsKeyWrapper(aws_connection(moto), KMS_ALIAS)
        plain, wrapped = await wrapper.new_data_key(CONTEXT)
        assert len(plain) == 32
        assert plain not in wrapped
        assert await wrapper.unwrap(wrapped, dict(CONTEXT)) == plain
        await wrapper.close()

    async def test_wrong_context_is_refused(self, moto: MotoServer) -> None:
        """KMS refuses a wrapped key presented for another registry: SecretCorrupted."""
        wrapper = KmsKeyWrapper(aws_connection(moto), KMS_ALIAS)
        _, wrapped = await wrapper.new_data_key(CONTEXT)
        with pytest.raises(SecretCorrupted, match="reg2"):
            await wrapper.unwrap(wrapped, {"registry_id": "reg2"})
        await wrapper.close()

    async def test_blob_of_another_key_is_refused(self, moto: MotoServer) -> None:
        """A data key wrapped under a different KMS key does not unwrap with this one."""
        other_alias = "alias/pullbroker-other"
        create_kms_key(aws_connection(moto), other_alias)
        other = KmsKeyWrapper(aws_connection(moto), other_alias)
        ours = KmsKeyWrapper(aws_connection(moto), KMS_ALIAS)
        _, wrapped = await other.new_data_key(CONTEXT)
        # AWS answers IncorrectKeyException (-> SecretCorrupted), moto AccessDeniedException.
        with pytest.raises((SecretCorrupted, PermissionDenied)):
            await ours.unwrap(wrapped, CONTEXT)
        await other.close()
        await ours.close()

    async def test_missing_key_is_named(self, moto: MotoServer) -> None:
        """A KMS alias that points nowhere is reported by name."""
        wrapper = KmsKeyWrapper(aws_connection(moto), "alias/absent")
        with pytest.raises(FailedPrecondition, match="alias/absent"):
            await wrapper.new_data_key(CONTEXT)
        assert wrapper.name == "kms:alias/absent"
        await wrapper.close()
