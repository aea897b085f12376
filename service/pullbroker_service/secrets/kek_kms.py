"""KeyWrapper on AWS KMS: GenerateDataKey/Decrypt with the context as EncryptionContext.

KMS binds the encryption context into the ciphertext blob, so a wrapped data key only
decrypts with the context it was made for (the registry id); a blob copied to another record
is refused by KMS itself (InvalidCiphertextException) and reported as SecretCorrupted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from pullbroker_service.domain.errors import FailedPrecondition, SecretCorrupted
from pullbroker_service.secrets.aws import AwsConnection, aws_errors, error_code


class KmsKeyWrapper:
    """Data keys (AES-256) under the KMS key `key_id` (a key id, ARN or alias/...)."""

    def __init__(self, connection: AwsConnection, key_id: str) -> None:
        self._client: Any = connection.client("kms")
        self._key_id = key_id
        # Identifies the KEK beside each envelope; configure the key the same way every time.
        self.name = f"kms:{key_id}"

    def __repr__(self) -> str:
        return f"KmsKeyWrapper(key_id={self._key_id!r})"

    async def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        ctx = dict(context)
        with aws_errors(
            f"generating a data key with KMS key {self._key_id}", "kms:GenerateDataKey"
        ):
            try:
                resp = await asyncio.to_thread(
                    self._client.generate_data_key,
                    KeyId=self._key_id,
                    KeySpec="AES_256",
                    EncryptionContext=ctx,
                )
            except ClientError as exc:
                if error_code(exc) == "NotFoundException":
                    raise self._missing() from exc
                raise
        return bytes(resp["Plaintext"]), bytes(resp["CiphertextBlob"])

    async def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        ctx = dict(context)
        with aws_errors(f"unwrapping a data key with KMS key {self._key_id}", "kms:Decrypt"):
            try:
                resp = await asyncio.to_thread(
                    self._client.decrypt,
                    CiphertextBlob=wrapped,
                    EncryptionContext=ctx,
                    # Pinning the key stops a blob made under another key from being accepted.
                    KeyId=self._key_id,
                )
            except ClientError as exc:
                code = error_code(exc)
                if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                    raise SecretCorrupted(
                        f"KMS key {self._key_id} refused to unwrap a data key for {ctx}: the "
                        "envelope belongs to another record, another key, or was altered"
                    ) from exc
                if code == "NotFoundException":
                    raise self._missing() from exc
                raise
        return bytes(resp["Plaintext"])

    def _missing(self) -> FailedPrecondition:
        return FailedPrecondition(
            f"KMS key {self._key_id} does not exist (or the alias points nowhere): "
            "configure an existing key"
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
