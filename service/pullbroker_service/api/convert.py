"""Proto messages <-> domain values. No I/O; errors are InvalidArgument with field names.

Credentials become `Secret`s the moment they leave the proto, and their values are registered
with the log scrubber so no later log line can carry them.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf import duration_pb2, timestamp_pb2
from pullbroker.v1 import pull_pb2, registry_pb2
from pullbroker_client.secret import Secret

from pullbroker_service.app.tokens import hands_out_credential
from pullbroker_service.domain.errors import InvalidArgument
from pullbroker_service.domain.kind_fields import CredentialForm, FieldSpec
from pullbroker_service.domain.kinds import KindInfo, RegistrySpec
from pullbroker_service.domain.model import (
    AuthKind,
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    Credential,
    GoogleServiceAccount,
    MintedToken,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.domain.secret_forms import credential_forms
from pullbroker_service.infra.logging import register_secret_value, register_secret_values, scrub
from pullbroker_service.minting.base import ProbeResult
from pullbroker_service.minting.runtime_logins import MintedLogin

_KIND_TO_TYPE: dict[RegistryKind, registry_pb2.RegistryType.ValueType] = {
    RegistryKind.GENERIC: registry_pb2.REGISTRY_TYPE_GENERIC,
    RegistryKind.DOCKER_HUB: registry_pb2.REGISTRY_TYPE_DOCKER_HUB,
    RegistryKind.GHCR: registry_pb2.REGISTRY_TYPE_GHCR,
    RegistryKind.QUAY: registry_pb2.REGISTRY_TYPE_QUAY,
    RegistryKind.HARBOR: registry_pb2.REGISTRY_TYPE_HARBOR,
    RegistryKind.ECR: registry_pb2.REGISTRY_TYPE_ECR,
    RegistryKind.GCR: registry_pb2.REGISTRY_TYPE_GCR,
    RegistryKind.GAR: registry_pb2.REGISTRY_TYPE_GAR,
    RegistryKind.ACR: registry_pb2.REGISTRY_TYPE_ACR,
    RegistryKind.PUBLIC: registry_pb2.REGISTRY_TYPE_PUBLIC,
}
_TYPE_TO_KIND: dict[int, RegistryKind] = {v: k for k, v in _KIND_TO_TYPE.items()}
_TYPE_NAMES = ", ".join(f"REGISTRY_TYPE_{k.name}" for k in _KIND_TO_TYPE)

_AUTH_KIND = {
    AuthKind.BEARER: pull_pb2.AUTH_KIND_BEARER,
    AuthKind.BASIC: pull_pb2.AUTH_KIND_BASIC,
    AuthKind.ANONYMOUS: pull_pb2.AUTH_KIND_ANONYMOUS,
}

_OUTCOMES = {
    "ok": registry_pb2.CONNECTION_OUTCOME_OK,
    "credential_rejected": registry_pb2.CONNECTION_OUTCOME_CREDENTIAL_REJECTED,
    "not_allowed": registry_pb2.CONNECTION_OUTCOME_NOT_ALLOWED,
    "unreachable": registry_pb2.CONNECTION_OUTCOME_UNREACHABLE,
    "tls_failure": registry_pb2.CONNECTION_OUTCOME_TLS_FAILURE,
    "rate_limited": registry_pb2.CONNECTION_OUTCOME_RATE_LIMITED,
    "unsupported_auth": registry_pb2.CONNECTION_OUTCOME_UNSUPPORTED_AUTH,
}


def kind_from_type(value: int) -> RegistryKind:
    """The domain kind of a RegistryType; INVALID_ARGUMENT for unspecified or unknown."""
    kind = _TYPE_TO_KIND.get(value)
    if kind is None:
        raise InvalidArgument(f"registry.type is required: one of {_TYPE_NAMES}")
    return kind


def type_from_kind(kind: RegistryKind) -> registry_pb2.RegistryType.ValueType:
    return _KIND_TO_TYPE[RegistryKind(kind)]


def spec_from_proto(registry: registry_pb2.Registry) -> RegistrySpec:
    """A RegistrySpec from a Registry message (validation proper happens in the domain)."""
    if not registry.display_name:
        raise InvalidArgument("registry.display_name is required, e.g. team-ghcr")
    return RegistrySpec(
        display_name=registry.display_name,
        kind=kind_from_type(registry.type),
        url=registry.url,
        registry_ca_pem=registry.registry_ca_pem,
        region=registry.region,
        allow_basic_passthrough=registry.allow_basic_passthrough,
        repositories=tuple(registry.repositories),
    )


def credential_from_proto(
    message: registry_pb2.Credential, present: bool = True
) -> Credential | None:
    """The domain credential of a Credential message; None when absent or empty."""
    which = message.WhichOneof("kind") if present else None
    credential: Credential
    if which == "basic":
        credential = BasicCredential(message.basic.username, _secret(message.basic.password))
    elif which == "aws":
        aws = message.aws
        credential = AwsCredential(aws.access_key_id, _secret(aws.secret_access_key), aws.role_arn)
    elif which == "google":
        credential = GoogleServiceAccount(_secret(message.google.key_json))
    elif which == "azure":
        azure = message.azure
        credential = AzureServicePrincipal(
            azure.tenant_id, azure.client_id, _secret(azure.client_secret)
        )
    else:
        return None
    # Every encoding an upstream could echo (Basic header, percent-encoded form field, ...).
    register_secret_values(credential_forms(credential))
    return credential


def _secret(value: str) -> Secret:
    register_secret_value(value)
    return Secret(value)


def record_to_proto(record: RegistryRecord) -> registry_pb2.Registry:
    """The Registry message for a record; credential fields do not exist on it."""
    return registry_pb2.Registry(
        name=record.resource_name,
        display_name=record.display_name,
        type=type_from_kind(record.kind),
        url=record.url,
        host=record.host,
        username=record.username,
        registry_ca_pem=record.registry_ca_pem,
        region=record.region,
        allow_basic_passthrough=record.allow_basic_passthrough,
        repositories=list(record.repositories),
        credential_version=record.credential_version,
        creator=record.creator,
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        etag=record.etag,
    )


def kinds_to_proto(kinds: tuple[KindInfo, ...]) -> registry_pb2.ListRegistryKindsResponse:
    """The kind catalogue as ListRegistryKinds answers it."""
    return registry_pb2.ListRegistryKindsResponse(kinds=[_kind_to_proto(k) for k in kinds])


def _kind_to_proto(info: KindInfo) -> registry_pb2.RegistryKindInfo:
    return registry_pb2.RegistryKindInfo(
        type=type_from_kind(info.kind),
        kind=info.kind.value,
        display_name=info.title,
        default_url=info.default_url,
        default_host=info.default_host,
        fields=[_field_to_proto(f) for f in info.fields],
        credential_types=[_form_to_proto(f) for f in info.credentials],
        description=info.notes,
    )


def _form_to_proto(form: CredentialForm) -> registry_pb2.CredentialTypeInfo:
    return registry_pb2.CredentialTypeInfo(
        type=form.label, display_name=form.title, fields=[_field_to_proto(f) for f in form.fields]
    )


def _field_to_proto(field: FieldSpec) -> registry_pb2.RegistryKindField:
    return registry_pb2.RegistryKindField(
        name=field.name,
        description=field.description,
        required=field.required,
        required_unless=field.required_unless,
        secret=field.secret,
        example=field.example,
        default_value=field.default,
        pattern=field.pattern,
    )


def probe_to_proto(result: ProbeResult) -> registry_pb2.TestConnectionResponse:
    return registry_pb2.TestConnectionResponse(
        outcome=_OUTCOMES.get(result.outcome, registry_pb2.CONNECTION_OUTCOME_UNSPECIFIED),
        # Built from upstream answers: scrubbed like every other message leaving the broker.
        message=scrub(result.message),
        latency=duration(result.latency_seconds),
        auth_scheme=result.auth_scheme,
    )


def token_to_proto(token: MintedToken, record: RegistryRecord) -> pull_pb2.PullToken:
    """The PullToken message; the token is revealed here, at its point of use.

    Short-lived tokens are not registered for value scrubbing: they are never logged (key-name
    redaction covers fields called token), and registering each one would grow the scrubber
    with every token ever issued. Long-lived credentials are registered where they are read.
    """
    value = token.token.reveal()
    return pull_pb2.PullToken(
        registry=record.resource_name,
        registry_host=record.host,
        registry_url=record.url,
        auth_kind=_AUTH_KIND.get(token.auth_kind, pull_pb2.AUTH_KIND_UNSPECIFIED),
        username=token.username,
        token=value,
        scope=token.scope,
        expire_time=timestamp(token.expires_at),
        repository=token.repository,
        registry_ca_pem=record.registry_ca_pem,
        passthrough=hands_out_credential(token, record),
    )


def login_to_proto(login: MintedLogin, record: RegistryRecord) -> pull_pb2.RegistryLogin:
    """The RegistryLogin message; the secret is revealed here, at its point of use (and, like
    a token's, not registered for scrubbing: pass-through secrets already are, where read)."""
    return pull_pb2.RegistryLogin(
        registry=record.resource_name,
        registry_host=record.host,
        registry_url=record.url,
        username=login.username,
        secret=login.token.reveal(),
        identity_token=login.identity_token,
        expire_time=timestamp(login.expires_at),
        repository_scoped=login.repository_scoped,
        passthrough=login.passthrough,
        registry_ca_pem=record.registry_ca_pem,
    )


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(max(0.0, seconds) * 1e9))
    return d
