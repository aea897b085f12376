"""KeyWrapper on Vault/OpenBao transit: data keys from `datakey/plaintext`, bound to a context.

The transit key must be created with `derived=true`: Vault then derives a key per context,
so a wrapped data key only unwraps with the context it was made for (the registry id), and a
blob copied to another record is refused by Vault itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping
from typing import Any

import hvac
import hvac.exceptions

from pullbroker_service.domain.errors import BrokerError, FailedPrecondition, SecretCorrupted
from pullbroker_service.secrets.kek import context_aad
from pullbroker_service.secrets.vault import vault_errors
from pullbroker_service.secrets.vault_auth import VaultSession


def encode_context(context: Mapping[str, str]) -> str:
    """The canonical encoding of a context (sorted compact JSON), base64 as transit wants it."""
    return base64.b64encode(context_aad(context)).decode("ascii")


class VaultTransitKeyWrapper:
    """Wraps data keys with the derived transit key `key_name` on the transit `mount`.

    The first use reads the key's settings once and refuses a key without `derived=true`:
    Vault silently ignores the context for such a key, which would unbind envelopes from
    their records. That read needs `read` on `<mount>/keys/<key_name>`.
    """

    def __init__(
        self, session: VaultSession, *, key_name: str = "pullbroker", mount: str = "transit"
    ) -> None:
        self._session = session
        self._key = key_name
        self._mount = mount.strip("/")
        # Identifies the KEK beside each envelope: same Vault key, same name.
        self.name = f"vault-transit:{self._mount}/{self._key}"
        self._verified = False

    def __repr__(self) -> str:
        return f"VaultTransitKeyWrapper(mount={self._mount!r}, key={self._key!r})"

    async def verify_key(self) -> None:
        """Refuse a transit key that is missing or not derived (done once, on first use)."""
        if self._verified:
            return
        policy = f"{self._mount}/keys/{self._key}"
        with vault_errors(f"reading transit key {self._key}", policy, "read"):
            try:
                data = await asyncio.to_thread(
                    self._session.call,
                    lambda c: c.secrets.transit.read_key(name=self._key, mount_point=self._mount),
                )
            except hvac.exceptions.InvalidPath:
                raise FailedPrecondition(self._missing_message()) from None
        if not data["data"].get("derived"):
            raise FailedPrecondition(
                f"Vault transit key {self._key!r} must be created with derived=true so that "
                "data keys are bound to their registry"
            )
        self._verified = True

    def _missing_message(self) -> str:
        return (
            f"Vault has no transit key {self._key!r} on mount {self._mount!r}: create it "
            "with derived=true (type aes256-gcm96)"
        )

    async def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        await self.verify_key()
        encoded = encode_context(context)

        def call(client: hvac.Client) -> Any:
            return client.secrets.transit.generate_data_key(
                name=self._key, key_type="plaintext", context=encoded, mount_point=self._mount
            )

        policy = f"{self._mount}/datakey/plaintext/{self._key}"
        with vault_errors("generating a data key", policy, "update"):
            try:
                data = (await asyncio.to_thread(self._session.call, call))["data"]
            except hvac.exceptions.InvalidRequest as exc:
                raise self._invalid(exc, context) from exc
        return base64.b64decode(data["plaintext"]), str(data["ciphertext"]).encode("ascii")

    async def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        await self.verify_key()
        encoded = encode_context(context)
        try:
            ciphertext = wrapped.decode("ascii")
        except UnicodeDecodeError:
            raise self._refused(context) from None

        def call(client: hvac.Client) -> Any:
            return client.secrets.transit.decrypt_data(
                name=self._key, ciphertext=ciphertext, context=encoded, mount_point=self._mount
            )

        policy = f"{self._mount}/decrypt/{self._key}"
        with vault_errors("unwrapping a data key", policy, "update"):
            try:
                data = (await asyncio.to_thread(self._session.call, call))["data"]
            except hvac.exceptions.InvalidRequest as exc:
                raise self._invalid(exc, context) from exc
        try:
            return base64.b64decode(data["plaintext"], validate=True)
        except (KeyError, binascii.Error):
            raise self._refused(context) from None

    def _invalid(
        self, exc: hvac.exceptions.InvalidRequest, context: Mapping[str, str]
    ) -> BrokerError:
        # Vault's 400 covers both a missing key and a failed decryption; only the text differs.
        if "not found" in str(exc).lower():
            return FailedPrecondition(self._missing_message())
        return self._refused(context)

    def _refused(self, context: Mapping[str, str]) -> SecretCorrupted:
        return SecretCorrupted(
            f"Vault transit key {self._key!r} refused to unwrap a data key for context "
            f"{dict(context)}: the envelope belongs to another record or was altered"
        )
