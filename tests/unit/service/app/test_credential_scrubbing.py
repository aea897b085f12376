"""A long-lived credential read from the secret backend is scrubbed from every later log line."""

from __future__ import annotations

from pullbroker_client.secret import Secret
from pullbroker_service.app.lookup import load_credential
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import BasicCredential, RegistryKind
from pullbroker_service.infra.logging import forget_secret_value, scrub

from tests.harness.canary import new_canary
from tests.unit.service.conftest import Core

ADMIN = Identity("spiffe://pullbroker.local/admin", frozenset({"admin"}))


class TestCredentialScrubbing:
    """Reading a credential registers its secret values with the log scrubber."""

    async def test_loaded_password_is_scrubbed(self, core: Core) -> None:
        """After load_credential, a log text holding the password no longer shows it."""
        password = new_canary("scrub")
        spec = RegistrySpec("scrubbed", RegistryKind.GENERIC, "https://registry.example.com")
        record = await core.registries.create(
            ADMIN, spec, BasicCredential("robot", Secret(password)), test=False
        )
        forget_secret_value(password)  # whatever the create path registered, start clean
        assert password in scrub(f"upstream said: {password}")
        try:
            credential = await load_credential(core.secrets, record)
            assert isinstance(credential, BasicCredential)
            assert password not in scrub(f"upstream said: {password}")
        finally:
            forget_secret_value(password)
