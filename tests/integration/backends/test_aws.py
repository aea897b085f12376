"""AwsSecretsManagerBackend against a real moto server: layout, rotation, deletion, faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pullbroker_service.domain.errors import (
    BackendUnavailable,
    FailedPrecondition,
    PermissionDenied,
    SecretMissing,
)
from pullbroker_service.secrets.aws import (
    OWNER_TAG,
    REGISTRY_TAG,
    AwsSecretsManagerBackend,
    aws_errors,
)

from tests.harness.certs import TestCA
from tests.harness.moto_server import MotoServer
from tests.integration.backends.conftest import (
    KMS_ALIAS,
    aws_connection,
    create_kms_key,
    raw_secretsmanager,
)

pytestmark = pytest.mark.integration


def _backend(moto: MotoServer, prefix: str, **kwargs: Any) -> AwsSecretsManagerBackend:
    return AwsSecretsManagerBackend(
        aws_connection(moto), kms_key_id=KMS_ALIAS, prefix=prefix, owner="team-a", **kwargs
    )


def _stages(moto: MotoServer, arn: str) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = raw_secretsmanager(moto).describe_secret(SecretId=arn)[
        "VersionIdsToStages"
    ]
    return stages


class TestLayout:
    """What the adapter leaves in Secrets Manager."""

    async def test_secret_is_named_tagged_and_encrypted(
        self, moto: MotoServer, prefix: str
    ) -> None:
        """One secret <prefix>/<id> with the KMS key and both tags; the ref is ARN + VersionId."""
        ref = await _backend(moto, prefix).put("reg1", b"x")
        desc = raw_secretsmanager(moto).describe_secret(SecretId=ref.key)
        assert desc["Name"] == f"{prefix}/reg1"
        assert desc["ARN"] == ref.key
        assert desc["KmsKeyId"] == KMS_ALIAS
        tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
        assert tags == {REGISTRY_TAG: "reg1", OWNER_TAG: "team-a"}
        assert desc["VersionIdsToStages"] == {ref.version: ["AWSCURRENT"]}

    async def test_rotation_keeps_previous(self, moto: MotoServer, prefix: str) -> None:
        """After a rotation the new version is AWSCURRENT and the old one AWSPREVIOUS."""
        backend = _backend(moto, prefix)
        old = await backend.put("reg1", b"old")
        new = await backend.put("reg1", b"new")
        assert _stages(moto, new.key) == {old.version: ["AWSPREVIOUS"], new.version: ["AWSCURRENT"]}
        raw = raw_secretsmanager(moto).get_secret_value(
            SecretId=new.key, VersionStage="AWSPREVIOUS"
        )
        assert raw["SecretBinary"] == b"old"

    async def test_version_retired_by_rotation_reads_as_missing(
        self, moto: MotoServer, prefix: str
    ) -> None:
        """Two rotations later a version has no staging label left and reads as missing."""
        backend = _backend(moto, prefix)
        first = await backend.put("reg1", b"1")
        await backend.put("reg1", b"2")
        await backend.put("reg1", b"3")
        with pytest.raises(SecretMissing, match="deprecated"):
            await backend.get(first)

    async def test_foreign_secrets_are_not_listed(self, moto: MotoServer, prefix: str) -> None:
        """list_keys ignores untagged secrets under the prefix and tagged ones elsewhere."""
        raw = raw_secretsmanager(moto)
        raw.create_secret(Name=f"{prefix}/untagged", SecretString="x")
        tag = [{"Key": REGISTRY_TAG, "Value": "elsewhere"}]
        raw.create_secret(Name=f"other{prefix}/elsewhere", SecretString="x", Tags=tag)
        backend = _backend(moto, prefix)
        await backend.put("reg1", b"x")
        assert await backend.list_keys() == ["reg1"]


class TestVersionsAndDeletion:
    """delete_version moves staging labels; delete removes or schedules."""

    async def test_deleting_the_current_version_rolls_back(
        self, moto: MotoServer, prefix: str
    ) -> None:
        """Deleting the newest version (an abandoned rotation) makes the previous one current."""
        backend = _backend(moto, prefix)
        old = await backend.put("reg1", b"old")
        new = await backend.put("reg1", b"new")
        await backend.delete_version(new)
        assert _stages(moto, old.key) == {old.version: ["AWSCURRENT"], new.version: []}
        assert await backend.get(old) == b"old"
        with pytest.raises(SecretMissing):
            await backend.get(new)

    async def test_only_version_cannot_be_deleted(self, moto: MotoServer, prefix: str) -> None:
        """Deleting a secret's only version is refused with advice to delete the secret."""
        backend = _backend(moto, prefix)
        ref = await backend.put("reg1", b"x")
        with pytest.raises(FailedPrecondition, match="delete the secret"):
            await backend.delete_version(ref)
        assert await backend.get(ref) == b"x"

    async def test_force_delete_really_removes(self, moto: MotoServer, prefix: str) -> None:
        """Without a recovery window the secret is gone at once, even from planned deletions."""
        backend = _backend(moto, prefix, recovery_window_days=None)
        ref = await backend.put("reg1", b"x")
        await backend.delete("reg1")
        raw = raw_secretsmanager(moto)
        with pytest.raises(ClientError, match="ResourceNotFoundException"):
            raw.describe_secret(SecretId=ref.key)
        listed = raw.list_secrets(IncludePlannedDeletion=True)["SecretList"]
        assert ref.key not in [s["ARN"] for s in listed]

    async def test_recovery_window_schedules_deletion(self, moto: MotoServer, prefix: str) -> None:
        """With a recovery window the secret is scheduled, unreadable, unlisted; delete again
        is still fine."""
        backend = _backend(moto, prefix, recovery_window_days=7)
        ref = await backend.put("reg1", b"x")
        await backend.delete("reg1")
        assert raw_secretsmanager(moto).describe_secret(SecretId=ref.key).get("DeletedDate")
        with pytest.raises(SecretMissing):
            await backend.get(ref)
        assert await backend.list_keys() == []
        await backend.delete("reg1")
        await backend.delete_version(ref)

    async def test_put_restores_a_secret_waiting_out_its_recovery_window(
        self, moto: MotoServer, prefix: str
    ) -> None:
        """The same registry id written again (a migration back into AWS) restores the
        scheduled secret and stores the new value as current."""
        backend = _backend(moto, prefix, recovery_window_days=7)
        await backend.put("reg1", b"old")
        await backend.delete("reg1")
        again = _backend(moto, prefix, recovery_window_days=7)  # no cached ARN: a new broker
        ref = await again.put("reg1", b"new")
        assert await again.get(ref) == b"new"
        assert not raw_secretsmanager(moto).describe_secret(SecretId=ref.key).get("DeletedDate")
        assert await again.list_keys() == ["reg1"]

    @pytest.mark.parametrize("days", [0, 6, 31])
    def test_recovery_window_out_of_range_is_refused(self, moto: MotoServer, days: int) -> None:
        """A recovery window outside 7-30 days is refused at construction."""
        with pytest.raises(ValueError, match="between 7 and 30"):
            _backend(moto, "p", recovery_window_days=days)


class TestTlsTrust:
    """Only the configured CA decides whether the endpoint's certificate is trusted."""

    async def test_configured_ca_wins_over_environment(
        self, moto: MotoServer, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With AWS_CA_BUNDLE and friends naming an unrelated CA, the configured CA works."""
        stranger = TestCA.create(tmp_path / "stranger")
        for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            monkeypatch.setenv(name, str(stranger.cert_path))
        backend = _backend(moto, prefix)
        ref = await backend.put("reg1", b"x")
        assert await backend.get(ref) == b"x"

    async def test_environment_ca_is_never_used(
        self, moto: MotoServer, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With AWS_CA_BUNDLE naming the right CA but another configured, TLS fails clearly."""
        monkeypatch.setenv("AWS_CA_BUNDLE", str(moto.ca_file))
        stranger = TestCA.create(tmp_path / "stranger")
        for ca_file in (stranger.cert_path, None):
            backend = AwsSecretsManagerBackend(
                aws_connection(moto, ca_file=ca_file), kms_key_id=KMS_ALIAS, prefix=prefix
            )
            with pytest.raises(BackendUnavailable, match="TLS verification") as caught:
                await backend.check()
            assert caught.value.retry_after is None


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto server of this test's own, free to be killed."""
    server = MotoServer.start(tmp_path / "moto")
    try:
        create_kms_key(aws_connection(server))
        yield server
    finally:
        server.stop()


class TestFaults:
    """A dead endpoint, and recovery without rebuilding the adapter."""

    async def test_killed_server_is_unavailable_then_recovers(
        self, own_moto: MotoServer, prefix: str
    ) -> None:
        """While the endpoint is down every call raises BackendUnavailable with a retry hint;
        after a restart the same adapter writes again (moto's memory is empty: old refs are
        missing)."""
        backend = _backend(own_moto, prefix)
        ref = await backend.put("reg1", b"before")
        own_moto.kill()
        try:
            for call in (backend.get(ref), backend.put("reg1", b"x"), backend.check()):
                with pytest.raises(BackendUnavailable, match="unreachable") as caught:
                    await call
                assert (caught.value.retry_after or 0) > 0
        finally:
            own_moto.restart()
        create_kms_key(aws_connection(own_moto))
        new = await backend.put("reg1", b"after")
        assert await backend.get(new) == b"after"
        with pytest.raises(SecretMissing):
            await backend.get(ref)


def _client_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Operation")


class TestErrorTable:
    """AWS error codes moto cannot produce (it does not enforce KMS key states or IAM here)."""

    @pytest.mark.parametrize(
        ("code", "kind", "words"),
        [
            ("KMSInvalidStateException", FailedPrecondition, "disabled, pending deletion"),
            ("DisabledException", FailedPrecondition, "enable the key"),
            ("DecryptionFailure", FailedPrecondition, "KMS could not"),
            ("AccessDeniedException", PermissionDenied, "secretsmanager:GetSecretValue"),
            ("KMSAccessDeniedException", PermissionDenied, "IAM identity"),
            ("ThrottlingException", BackendUnavailable, "retry"),
            ("ResourceNotFoundException", SecretMissing, "found nothing"),
            ("SomethingNew", FailedPrecondition, "SomethingNew"),
        ],
    )
    def test_codes_map_to_domain_errors(self, code: str, kind: type[Exception], words: str) -> None:
        """Each code becomes its domain error with advice, never AWS's own message text."""
        leak = "CANARY-aws-message-text"
        with (
            pytest.raises(kind, match=words) as caught,
            aws_errors("reading secret x", "secretsmanager:GetSecretValue"),
        ):
            raise _client_error(code, leak)
        assert leak not in str(caught.value)
