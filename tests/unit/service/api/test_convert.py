"""Proto <-> domain conversion: types, credentials as Secrets, records without secrets."""

from __future__ import annotations

import datetime as dt

import pytest
from pullbroker.v1 import pull_pb2, registry_pb2
from pullbroker_client.secret import Secret
from pullbroker_service.api import convert
from pullbroker_service.domain.errors import InvalidArgument
from pullbroker_service.domain.model import (
    AuthKind,
    AwsCredential,
    BasicCredential,
    GoogleServiceAccount,
    MintedToken,
    RecordState,
    RegistryKind,
    RegistryRecord,
    SecretRef,
)
from pullbroker_service.infra.logging import scrub

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def record() -> RegistryRecord:
    return RegistryRecord(
        id="abc",
        display_name="team",
        kind=RegistryKind.GHCR,
        url="https://ghcr.io",
        host="ghcr.io",
        username="alice",
        registry_ca_pem="",
        region="",
        allow_basic_passthrough=False,
        credential_version=3,
        secret_ref=SecretRef("local", "abc", "3"),
        creator="spiffe://pullbroker.local/admin",
        create_time=NOW,
        update_time=NOW,
        etag="e1",
        state=RecordState.READY,
    )


class TestTypes:
    @pytest.mark.parametrize("kind", list(RegistryKind))
    def test_every_kind_round_trips(self, kind: RegistryKind) -> None:
        """Each domain kind has a proto type that converts back to it."""
        assert convert.kind_from_type(convert.type_from_kind(kind)) is kind

    @pytest.mark.parametrize("value", [registry_pb2.REGISTRY_TYPE_UNSPECIFIED, 999])
    def test_unspecified_or_unknown_type_is_invalid(self, value: int) -> None:
        """An unspecified or unknown type is InvalidArgument listing the types."""
        with pytest.raises(InvalidArgument, match="REGISTRY_TYPE_GHCR"):
            convert.kind_from_type(value)

    def test_missing_display_name_is_invalid(self) -> None:
        """A registry without a display name is InvalidArgument naming the field."""
        with pytest.raises(InvalidArgument, match="display_name"):
            convert.spec_from_proto(registry_pb2.Registry(type=registry_pb2.REGISTRY_TYPE_GHCR))


class TestCredentials:
    def test_basic_becomes_secret_and_is_scrubbed(self) -> None:
        """A basic password becomes a Secret and is scrubbed from later log text."""
        message = registry_pb2.Credential(
            basic=registry_pb2.BasicCredential(username="u", password="convert-pw-98765")
        )
        credential = convert.credential_from_proto(message)
        assert credential == BasicCredential("u", Secret("convert-pw-98765"))
        assert "convert-pw-98765" not in repr(credential)
        assert "convert-pw-98765" not in scrub("oops convert-pw-98765 leaked")

    def test_aws_and_google(self) -> None:
        """AWS keys and a Google key JSON convert to their domain types."""
        aws = convert.credential_from_proto(
            registry_pb2.Credential(
                aws=registry_pb2.AwsCredential(access_key_id="AKIA1", secret_access_key="sk-123456")
            )
        )
        google = convert.credential_from_proto(
            registry_pb2.Credential(google=registry_pb2.GoogleServiceAccount(key_json="{}x" * 3))
        )
        assert isinstance(aws, AwsCredential)
        assert aws.access_key_id == "AKIA1"
        assert isinstance(google, GoogleServiceAccount)

    def test_absent_credential_is_none(self) -> None:
        """No credential (or an empty oneof) is None."""
        assert convert.credential_from_proto(registry_pb2.Credential()) is None
        assert convert.credential_from_proto(registry_pb2.Credential(), present=False) is None


class TestOutgoing:
    def test_record_to_proto(self) -> None:
        """A record becomes a Registry message with its resource name and timestamps."""
        message = convert.record_to_proto(record())
        assert message.name == "registries/abc"
        assert message.type == registry_pb2.REGISTRY_TYPE_GHCR
        assert message.credential_version == 3
        assert message.create_time.ToDatetime(tzinfo=dt.UTC) == NOW

    def test_token_to_proto(self) -> None:
        """A minted token becomes a PullToken with host, scope, expiry and the CA of the record."""
        token = MintedToken(
            auth_kind=AuthKind.BEARER,
            username="",
            token=Secret("tok-abcdef-123"),
            scope="repository:team/app:pull",
            issued_at=NOW,
            expires_at=NOW + dt.timedelta(minutes=5),
            repository="team/app",
        )
        message = convert.token_to_proto(token, record())
        assert message.auth_kind == pull_pb2.AUTH_KIND_BEARER
        assert message.token == "tok-abcdef-123"
        assert message.registry == "registries/abc"
        assert message.registry_host == "ghcr.io"
        assert message.expire_time.ToDatetime(tzinfo=dt.UTC) == NOW + dt.timedelta(minutes=5)
