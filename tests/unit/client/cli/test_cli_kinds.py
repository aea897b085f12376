"""`pullbroker registry add` turns each kind's flags into the right Credential and Registry."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.cli.common import UsageError
from pullbroker_client.cli.registry import CloudOptions, _new_credential

R = registry_pb2


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO("s3cret-from-stdin")
    monkeypatch.setattr("sys.stdin", stream)
    return stream


class TestCredentialFlags:
    """Each kind's credential comes from its own flags, its secret only from stdin or a file."""

    def test_ecr_with_role(self, stdin: io.StringIO) -> None:
        """ECR: --username is the access key id, stdin the secret key, --role-arn kept."""
        arn = "arn:aws:iam::123456789012:role/pull"
        made = _new_credential(R.REGISTRY_TYPE_ECR, "AKIAEXAMPLE", True, "", CloudOptions(arn))
        assert made is not None
        assert made.aws.access_key_id == "AKIAEXAMPLE"
        assert made.aws.secret_access_key == "s3cret-from-stdin"
        assert made.aws.role_arn == arn

    def test_google_key_from_file(self, tmp_path: Path) -> None:
        """gcr/gar: --service-account-key FILE is read as the key JSON."""
        key = tmp_path / "sa.json"
        key.write_text('{"type": "service_account"}')
        made = _new_credential(R.REGISTRY_TYPE_GAR, None, False, "", CloudOptions("", str(key)))
        assert made is not None
        assert made.google.key_json == '{"type": "service_account"}'

    def test_google_key_twice_is_refused(self, tmp_path: Path, stdin: io.StringIO) -> None:
        """A key given both as a file and on stdin is ambiguous: refused."""
        with pytest.raises(UsageError, match="not both"):
            _new_credential(R.REGISTRY_TYPE_GCR, None, True, "", CloudOptions("", "k.json"))

    def test_azure_service_principal(self, stdin: io.StringIO) -> None:
        """acr with --tenant-id/--client-id: a service principal, secret from stdin."""
        options = CloudOptions(tenant_id="tenant-1", client_id="client-1")
        made = _new_credential(R.REGISTRY_TYPE_ACR, None, True, "", options)
        assert made is not None
        assert made.WhichOneof("kind") == "azure"
        assert (made.azure.tenant_id, made.azure.client_id) == ("tenant-1", "client-1")
        assert made.azure.client_secret == "s3cret-from-stdin"

    def test_azure_half_a_principal_is_refused(self, stdin: io.StringIO) -> None:
        """--tenant-id without --client-id says what is missing."""
        with pytest.raises(UsageError, match="both --tenant-id and --client-id"):
            _new_credential(R.REGISTRY_TYPE_ACR, None, True, "", CloudOptions(tenant_id="t"))

    def test_acr_admin_user_is_basic(self, stdin: io.StringIO) -> None:
        """acr with --username: the admin user or an ACR token, as Basic."""
        made = _new_credential(R.REGISTRY_TYPE_ACR, "pull-token", True, "")
        assert made is not None
        assert made.basic.username == "pull-token"

    def test_token_kinds_need_a_username(self, stdin: io.StringIO) -> None:
        """ghcr without --username is refused with the flag to add."""
        with pytest.raises(UsageError, match="--username is required"):
            _new_credential(R.REGISTRY_TYPE_GHCR, None, True, "https://ghcr.io")
