"""The kind catalogue is read from the rows that validate a CreateRegistry: a form filled from
it validates, and validation wants nothing the catalogue does not list."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from pullbroker.v1 import registry_pb2
from pullbroker_client.secret import Secret
from pullbroker_service.api.convert import kinds_to_proto, type_from_kind
from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.kind_fields import CredentialForm, FieldSpec
from pullbroker_service.domain.kinds import (
    KindInfo,
    RegistrySpec,
    kind_catalogue,
    validate_registry,
)
from pullbroker_service.domain.model import Credential, RegistryKind

from tests.harness.kind_forms import credential_values, required_values, service_account_key

CATALOGUE = kind_catalogue()
KINDS = {info.kind.value: info for info in CATALOGUE}
FORMS = [(info.kind.value, form.label) for info in CATALOGUE for form in info.credentials]
_SPEC_FIELDS = ("url", "region", "registry_ca_pem", "allow_basic_passthrough")


@pytest.fixture(scope="module")
def key_json() -> str:
    return service_account_key()


def spec_of(info: KindInfo, values: dict[str, str]) -> RegistrySpec:
    return RegistrySpec(
        display_name=values.get("display_name", ""),
        kind=info.kind,
        url=values.get("url", ""),
        registry_ca_pem=values.get("registry_ca_pem", ""),
        region=values.get("region", ""),
        allow_basic_passthrough=values.get("allow_basic_passthrough", "") == "true",
    )


def credential_of(form: CredentialForm, values: dict[str, str]) -> Credential:
    secret = {f.name for f in form.fields if f.secret}
    args = {k: Secret(v) if k in secret else v for k, v in values.items()}
    credential: Credential = form.type(**args)
    return credential


def filled(info: KindInfo, form: CredentialForm | None, key_json: str) -> tuple[Any, Any]:
    spec = spec_of(info, required_values(info.fields))
    if form is None:
        return spec, None
    values = credential_values(form.label, form.fields, {"key_json": key_json})
    return spec, credential_of(form, values)


class TestFilledFromTheCatalogue:
    """A request holding only what the catalogue asks for validates, for every credential
    type of every kind."""

    def test_every_kind_is_listed(self) -> None:
        """The catalogue lists every kind once."""
        assert sorted(KINDS) == sorted(k.value for k in RegistryKind)

    @pytest.mark.parametrize(("kind", "label"), FORMS)
    def test_required_fields_suffice(self, kind: str, label: str, key_json: str) -> None:
        """Required fields from examples (and made-up secrets) pass validation."""
        info = KINDS[kind]
        form = next(f for f in info.credentials if f.label == label)
        spec, credential = filled(info, form, key_json)
        valid = validate_registry(spec, credential)
        assert valid.host
        if info.default_url and not spec.url:
            assert valid.spec.url == info.default_url
            assert valid.host == info.default_host

    def test_anonymous_kinds_take_no_credential(self) -> None:
        """A kind without credential types validates with none, and refuses one."""
        for info in CATALOGUE:
            if info.credentials:
                continue
            spec, _ = filled(info, None, "")
            validate_registry(spec, None)
            basic = next(f for i in CATALOGUE for f in i.credentials if f.label == "basic")
            with pytest.raises(InvalidRegistry, match="anonymous"):
                validate_registry(spec, credential_of(basic, {"username": "u", "password": "p"}))

    @pytest.mark.parametrize(("kind", "label"), FORMS)
    def test_every_optional_example_is_valid(self, kind: str, label: str, key_json: str) -> None:
        """Filling every listed field with its example still validates."""
        info = KINDS[kind]
        form = next(f for f in info.credentials if f.label == label)
        every = {f.name: f.example for f in info.fields if f.example}
        spec = spec_of(info, every)
        values = {f.name: f.example for f in form.fields if f.example}
        values |= credential_values(form.label, form.fields, {"key_json": key_json})
        validate_registry(spec, credential_of(form, values))


class TestNothingUnlisted:
    """Validation requires exactly the required fields and refuses fields a kind does not
    list."""

    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_each_required_field_is_required(self, kind: str, key_json: str) -> None:
        """Leaving out one required registry field fails, naming it."""
        info = KINDS[kind]
        form = info.credentials[0] if info.credentials else None
        spec, credential = filled(info, form, key_json)
        for field in info.fields:
            if field.required and field.name != "display_name":
                with pytest.raises(InvalidRegistry, match=field.name):
                    validate_registry(replace(spec, **{field.name: ""}), credential)
            if field.required_unless:
                bare = replace(spec, **{field.name: "", field.required_unless: ""})
                with pytest.raises(InvalidRegistry, match=field.name):
                    validate_registry(bare, credential)

    @pytest.mark.parametrize(("kind", "label"), FORMS)
    def test_each_required_credential_field_is_required(
        self, kind: str, label: str, key_json: str
    ) -> None:
        """Leaving out one required credential field fails, naming it."""
        info = KINDS[kind]
        form = next(f for f in info.credentials if f.label == label)
        spec, _ = filled(info, form, key_json)
        values = credential_values(form.label, form.fields, {"key_json": key_json})
        for field in form.fields:
            if field.required:
                missing = credential_of(form, {**values, field.name: ""})
                with pytest.raises(InvalidRegistry, match=field.name):
                    validate_registry(spec, missing)

    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_unlisted_fields_are_refused(self, kind: str, key_json: str) -> None:
        """A Registry field the kind does not list is refused when set."""
        info = KINDS[kind]
        form = info.credentials[0] if info.credentials else None
        spec, credential = filled(info, form, key_json)
        listed = {f.name for f in info.fields}
        unlisted = {"region": "eu-west-1", "allow_basic_passthrough": True}
        for name, value in unlisted.items():
            if name not in listed:
                with pytest.raises(InvalidRegistry, match=name):
                    validate_registry(replace(spec, **{name: value}), credential)

    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_other_credential_types_are_refused(self, kind: str, key_json: str) -> None:
        """A credential type the kind does not list is refused."""
        info = KINDS[kind]
        spec, _ = filled(info, None, key_json)
        accepted = {f.label for f in info.credentials}
        for other in {f for i in CATALOGUE for f in i.credentials if f.label not in accepted}:
            values = credential_values(other.label, other.fields, {"key_json": key_json})
            with pytest.raises(InvalidRegistry):
                validate_registry(spec, credential_of(other, values))


class TestFieldDeclarations:
    """Examples fit their own patterns; secrets have none; the proto names every field."""

    def test_examples_match_patterns(self) -> None:
        """Every example matches the field's pattern."""
        for field in _all_fields():
            if field.pattern and field.example:
                assert re.fullmatch(field.pattern, field.example), field

    def test_secret_fields_have_no_example(self) -> None:
        """A form never suggests a secret value; declaring one is an error."""
        assert all(not f.example for f in _all_fields() if f.secret)
        with pytest.raises(ValueError, match="secret"):
            FieldSpec("password", "x", secret=True, example="hunter2")

    def test_names_are_proto_fields(self) -> None:
        """Registry fields name Registry message fields; credential types name Credential's
        oneof members, and their fields the members' fields; types match the kinds."""
        registry = registry_pb2.Registry.DESCRIPTOR.fields_by_name
        oneof = registry_pb2.Credential.DESCRIPTOR.oneofs_by_name["kind"]
        members = {f.name: f.message_type for f in oneof.fields if f.message_type is not None}
        for info in CATALOGUE:
            assert {f.name for f in info.fields} <= set(registry)
            for form in info.credentials:
                assert form.label in members
                message_fields = members[form.label].fields_by_name
                assert {f.name for f in form.fields} == set(message_fields)
                assert all(
                    message_fields[f.name].type == FieldDescriptor.TYPE_STRING for f in form.fields
                )
        response = kinds_to_proto(CATALOGUE)
        assert [k.type for k in response.kinds] == [type_from_kind(i.kind) for i in CATALOGUE]
        assert {k.type for k in response.kinds} == {
            v for v in registry_pb2.RegistryType.values() if v
        }


def _all_fields() -> list[FieldSpec]:
    fields = [f for info in CATALOGUE for f in info.fields]
    fields += [f for info in CATALOGUE for form in info.credentials for f in form.fields]
    return fields
