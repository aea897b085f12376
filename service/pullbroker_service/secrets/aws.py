"""SecretBackend on AWS Secrets Manager (KMS-encrypted): one secret per registry id.

Secret names are `<prefix>/<registry id>`, tagged with the registry id and the owner; a
`put` adds a version that becomes AWSCURRENT (the old one AWSPREVIOUS); SecretRef.key is the
ARN and .version the VersionId. A version that lost every staging label is deprecated: this
adapter treats it as gone. boto3 is synchronous, so calls run in worker threads on one
(thread-safe) client; botocore exceptions become domain errors in `aws_errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions as bex
import structlog
from botocore.exceptions import ClientError
from pullbroker_client.secret import Secret

from pullbroker_service.domain.errors import (
    BackendUnavailable,
    BrokerError,
    FailedPrecondition,
    PermissionDenied,
    SecretMissing,
)
from pullbroker_service.domain.model import SecretRef

_T = TypeVar("_T")

REGISTRY_TAG = "pullbroker:registry-id"
OWNER_TAG = "pullbroker:owner"
_CURRENT, _PREVIOUS = "AWSCURRENT", "AWSPREVIOUS"


@dataclass(frozen=True)
class AwsConnection:
    """How to reach AWS (or an AWS-compatible endpoint) and whom to trust."""

    region: str
    """AWS region, e.g. eu-west-1."""
    endpoint_url: str | None = None
    """Explicit endpoint (a VPC endpoint, a test server); None = AWS's public endpoint."""
    ca_file: Path | None = None
    """PEM CA bundle for the endpoint; None = botocore's bundle, never AWS_CA_BUNDLE."""
    access_key_id: str | None = None
    """Static credentials; None = the default chain (env, profile, web identity, IMDS)."""
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_attempts: int = 3
    """Total attempts per call (botocore's standard retry mode, with backoff)."""

    def client(self, service: str) -> Any:
        """A botocore client for `service`; thread-safe, so build one and share it."""
        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=_reveal(self.secret_access_key),
            aws_session_token=_reveal(self.session_token),
            region_name=self.region,
        )
        config = botocore.config.Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
        )
        return session.client(
            service,
            endpoint_url=self.endpoint_url,
            # An explicit value: botocore would otherwise take AWS_CA_BUNDLE from the env.
            verify=str(self.ca_file) if self.ca_file else True,
            config=config,
        )


log = structlog.get_logger()


def _reveal(secret: Secret | None) -> str | None:
    return secret.reveal() if secret is not None else None


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


_DENIED = {
    "AccessDeniedException", "AccessDenied", "KMSAccessDeniedException",
    "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
    "InvalidClientTokenId", "IncompleteSignature",
}  # fmt: skip
_KMS_STATE = {"KMSInvalidStateException", "DisabledException", "KeyUnavailableException"}
_KMS_FAILED = {"EncryptionFailure", "DecryptionFailure", "KMSNotFoundException"}
_TRANSIENT = {
    "ThrottlingException", "Throttling", "LimitExceededException", "RequestLimitExceeded",
    "InternalServiceError", "InternalFailure", "ServiceUnavailable", "KMSInternalException",
    "DependencyTimeoutException", "InternalServiceErrorException",
}  # fmt: skip


def _client_error(exc: ClientError, operation: str, action: str) -> BrokerError:
    code = error_code(exc)
    if code in ("ResourceNotFoundException", "NotFoundException"):
        return SecretMissing(f"AWS found nothing for {operation} ({code})")
    if code in _DENIED:
        return PermissionDenied(
            f"AWS denied {operation} ({code}): the broker's IAM identity needs {action} "
            "on this resource (and kms:Decrypt/GenerateDataKey on its KMS key)"
        )
    if code in _KMS_STATE:
        return FailedPrecondition(
            f"the KMS key is disabled, pending deletion or unavailable ({operation}, {code}): "
            "enable the key or configure another one"
        )
    if code in _KMS_FAILED:
        return FailedPrecondition(
            f"KMS could not encrypt or decrypt for {operation} ({code}): check that the KMS "
            "key exists, is enabled and its key policy allows the broker"
        )
    if code in _TRANSIENT:
        return BackendUnavailable(f"AWS is throttling or failing {operation} ({code}): retry", 2.0)
    return FailedPrecondition(f"AWS refused {operation} ({code})")


@contextmanager
def aws_errors(operation: str, action: str) -> Iterator[None]:
    """Translate botocore exceptions raised in the block into domain errors.

    `action` names the IAM action(s) the operation needs, for the permission message.
    Messages carry AWS's error code, never its message text or any request data.
    """
    try:
        yield
    except BrokerError:
        raise
    except ClientError as exc:
        raise _client_error(exc, operation, action) from exc
    except bex.ParamValidationError:
        # Its text can quote the parameter values: never pass it on.
        raise FailedPrecondition(f"AWS SDK refused the parameters of {operation}") from None
    except bex.SSLError as exc:
        raise BackendUnavailable(
            f"TLS verification of the AWS endpoint failed ({operation}): check the "
            "configured CA file and endpoint URL",
            retry_after=None,
        ) from exc
    except (bex.NoCredentialsError, bex.PartialCredentialsError) as exc:
        raise BackendUnavailable(
            f"no usable AWS credentials for {operation}: configure the broker's IAM "
            "identity (environment, profile, web identity or instance role)",
            retry_after=None,
        ) from exc
    except (bex.EndpointConnectionError, bex.ConnectionError, bex.HTTPClientError) as exc:
        raise BackendUnavailable(
            f"AWS endpoint unreachable ({operation}): retry shortly; check the endpoint "
            "URL and network path",
            retry_after=1.0,
        ) from exc


class AwsSecretsManagerBackend:
    """Secrets `<prefix>/<id>` encrypted with `kms_key_id`.

    `recovery_window_days` (7-30) schedules deletion; None deletes at once
    (ForceDeleteWithoutRecovery), for credentials scoped to one deployment.
    """

    name = "aws"

    def __init__(
        self,
        connection: AwsConnection,
        *,
        kms_key_id: str,
        prefix: str = "pullbroker/registries",
        owner: str = "pullbroker",
        recovery_window_days: int | None = 30,
    ) -> None:
        if recovery_window_days is not None and not 7 <= recovery_window_days <= 30:
            raise ValueError("recovery_window_days must be between 7 and 30, or None")
        self._client: Any = connection.client("secretsmanager")
        self._kms_key_id = kms_key_id
        self._prefix = prefix.strip("/")
        self._owner = owner
        self._recovery = recovery_window_days
        # Keys known to exist, so a rotation is one call rather than a failed create first.
        self._arns: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"AwsSecretsManagerBackend(prefix={self._prefix!r})"

    def name_for(self, key: str) -> str:
        if not key or "/" in key:
            raise ValueError("a registry id is one non-empty path segment")
        return f"{self._prefix}/{key}"

    async def put(self, key: str, value: bytes) -> SecretRef:
        name = self.name_for(key)
        with aws_errors(f"writing secret {name}", "secretsmanager:CreateSecret/PutSecretValue"):
            try:
                resp = await self._run(lambda c: self._put(c, key, name, value))
            except ClientError as exc:
                if error_code(exc) != "InvalidRequestException":
                    raise
                raise FailedPrecondition(
                    f"Secrets Manager refused to write {name}, most likely because it is "
                    "scheduled for deletion: restore it (RestoreSecret) or use a new registry id"
                ) from exc
        self._arns[key] = resp["ARN"]
        return SecretRef(backend=self.name, key=resp["ARN"], version=resp["VersionId"])

    def _put(self, client: Any, key: str, name: str, value: bytes) -> Any:
        arn = self._arns.get(key)
        if arn is not None:
            try:
                return client.put_secret_value(SecretId=arn, SecretBinary=value)
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                self._arns.pop(key, None)  # deleted behind our back: create it again
        try:
            return client.create_secret(
                Name=name,
                SecretBinary=value,
                KmsKeyId=self._kms_key_id,
                Description=f"pullbroker credential for registry {key}",
                Tags=[
                    {"Key": REGISTRY_TAG, "Value": key},
                    {"Key": OWNER_TAG, "Value": self._owner},
                ],
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceExistsException":
                raise
        # The name exists (first write since this process started, or a registry id coming
        # back, e.g. a migration back into AWS, while its old secret waits out its recovery
        # window): a scheduled secret is restored first, since AWS refuses writes to it.
        if _scheduled(client, name):
            client.restore_secret(SecretId=name)
            log.info("secret_restored", secret=name, registry_id=key)
        return client.put_secret_value(SecretId=name, SecretBinary=value)

    async def get(self, ref: SecretRef) -> bytes:
        self._check_ref(ref)
        with aws_errors(f"reading secret {ref.key}", "secretsmanager:GetSecretValue"):
            try:
                resp = await self._run(
                    lambda c: c.get_secret_value(SecretId=ref.key, VersionId=ref.version)
                )
            except ClientError as exc:
                if error_code(exc) not in ("ResourceNotFoundException", "InvalidRequestException"):
                    raise
                raise SecretMissing(
                    f"Secrets Manager has no version {ref.version} of {ref.key} "
                    "(deleted or scheduled for deletion)"
                ) from exc
        if not resp.get("VersionStages"):
            raise SecretMissing(f"version {ref.version} of {ref.key} was deprecated (deleted)")
        if "SecretBinary" in resp:
            return bytes(resp["SecretBinary"])
        return str(resp["SecretString"]).encode()

    def _check_ref(self, ref: SecretRef) -> None:
        if ref.backend != self.name or not ref.key.startswith("arn:"):
            raise SecretMissing(
                f"reference to {ref.backend}:{ref.key} is not a Secrets Manager ARN"
            )

    async def delete(self, key: str) -> None:
        name = self.name_for(key)
        self._arns.pop(key, None)
        with aws_errors(f"deleting secret {name}", "secretsmanager:DeleteSecret"):
            await self._run(lambda c: self._delete(c, name))

    def _delete(self, client: Any, name: str) -> None:
        how: dict[str, Any] = (
            {"ForceDeleteWithoutRecovery": True}
            if self._recovery is None
            else {"RecoveryWindowInDays": self._recovery}
        )
        try:
            client.delete_secret(SecretId=name, **how)
        except ClientError as exc:
            code = error_code(exc)
            if code == "ResourceNotFoundException":
                return
            # Already scheduled for deletion is the only usual reason; make sure it is that.
            if code != "InvalidRequestException" or not _scheduled(client, name):
                raise

    async def delete_version(self, ref: SecretRef) -> None:
        self._check_ref(ref)
        with aws_errors(
            f"deprecating version {ref.version} of {ref.key}",
            "secretsmanager:DescribeSecret/UpdateSecretVersionStage",
        ):
            await self._run(lambda c: self._deprecate(c, ref.key, ref.version))

    def _deprecate(self, client: Any, arn: str, version: str) -> None:
        # The common case, retiring the version a rotation just superseded: it holds only
        # AWSPREVIOUS, and one call removes it. Anything else takes the described path.
        try:
            client.update_secret_version_stage(
                SecretId=arn, VersionStage=_PREVIOUS, RemoveFromVersionId=version
            )
            return
        except ClientError as exc:
            code = error_code(exc)
            if code == "ResourceNotFoundException":
                return  # the secret is gone: nothing to deprecate
            if code not in ("InvalidParameterException", "InvalidRequestException"):
                raise
        stages = _stages(client, arn)
        if stages is None or not stages.get(version):
            return  # no such secret, or the version already has no labels
        if _CURRENT in stages[version]:
            previous = next((v for v, s in stages.items() if _PREVIOUS in s), None)
            if previous is None:
                raise FailedPrecondition(
                    f"version {version} is the only live version of {arn}: delete the "
                    "secret instead of the version"
                )
            # Roll back: the previous version becomes current again.
            client.update_secret_version_stage(
                SecretId=arn, VersionStage=_CURRENT, MoveToVersionId=previous,
                RemoveFromVersionId=version,
            )  # fmt: skip
            stages = _stages(client, arn) or {}
        for label in stages.get(version, []):
            client.update_secret_version_stage(
                SecretId=arn, VersionStage=label, RemoveFromVersionId=version
            )

    async def list_keys(self) -> list[str]:
        with aws_errors(f"listing secrets under {self._prefix}/", "secretsmanager:ListSecrets"):
            return await self._run(self._list)

    def _list(self, client: Any) -> list[str]:
        filters = [
            {"Key": "tag-key", "Values": [REGISTRY_TAG]},
            {"Key": "name", "Values": [self._prefix + "/"]},
        ]
        keys: set[str] = set()
        for page in client.get_paginator("list_secrets").paginate(Filters=filters):
            for entry in page.get("SecretList", []):
                if not str(entry.get("Name", "")).startswith(self._prefix + "/"):
                    continue
                tags = {t["Key"]: t["Value"] for t in entry.get("Tags", [])}
                if REGISTRY_TAG in tags:
                    keys.add(tags[REGISTRY_TAG])
        return sorted(keys)

    async def check(self) -> None:
        with aws_errors("checking access", "secretsmanager:ListSecrets"):
            await self._run(lambda c: c.list_secrets(MaxResults=1))

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def _run(self, fn: Callable[[Any], _T]) -> _T:
        return await asyncio.to_thread(fn, self._client)


def _stages(client: Any, arn: str) -> dict[str, list[str]] | None:
    """Version id -> staging labels; None when the secret is gone or scheduled for deletion."""
    try:
        desc = client.describe_secret(SecretId=arn)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    if desc.get("DeletedDate"):
        return None
    stages: dict[str, list[str]] = desc.get("VersionIdsToStages", {})
    return stages


def _scheduled(client: Any, name: str) -> bool:
    try:
        return bool(client.describe_secret(SecretId=name).get("DeletedDate"))
    except ClientError as exc:
        return error_code(exc) == "ResourceNotFoundException"
