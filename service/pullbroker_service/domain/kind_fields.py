"""The fields of a CreateRegistry request, declared once: validation and the catalogue read them.

A `FieldSpec` says what one field is for, whether it is required (or required unless another
field is given), whether it is secret, a valid example and, where validation is exactly a
regular expression, that expression. Each registry kind (kinds.py) declares its own url and
region fields and the credential forms it accepts; `registry_fields` adds the fields every
kind shares. `validate_spec` and `check_credential` enforce these declarations, and
`ListRegistryKinds` shows them (kind_catalogue.py), so a form built from the catalogue asks
for exactly what validation requires.

Secret fields never carry an example: a form should not suggest a password.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pullbroker_service.domain.model import (
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    GoogleServiceAccount,
)


@dataclass(frozen=True)
class FieldSpec:
    """One request field as a form shows it and validation checks it.

    name: the field of the Registry message (`url`) or, in a credential form, of the
    credential message (`username`). required_unless: the field is required unless the named
    one is given. default: what an empty value means. pattern: a regular expression the whole
    value must match, when validation is exactly that (other checks are described only).
    """

    name: str
    description: str
    required: bool = False
    secret: bool = False
    example: str = ""
    default: str = ""
    pattern: str = ""
    required_unless: str = ""

    def __post_init__(self) -> None:
        if self.secret and self.example:
            raise ValueError(f"secret field {self.name} must not have an example")

    def but(
        self,
        *,
        description: str | None = None,
        example: str | None = None,
        pattern: str | None = None,
    ) -> FieldSpec:
        """This field with a kind's own description, example or pattern."""
        return replace(
            self,
            description=self.description if description is None else description,
            example=self.example if example is None else example,
            pattern=self.pattern if pattern is None else pattern,
        )


@dataclass(frozen=True)
class CredentialForm:
    """A credential type a kind accepts: `label` is the Credential message's oneof field."""

    label: str
    title: str
    type: type
    fields: tuple[FieldSpec, ...]

    def with_field(self, field: FieldSpec) -> CredentialForm:
        """This form with `field` replacing the field of the same name."""
        fields = tuple(field if f.name == field.name else f for f in self.fields)
        return replace(self, fields=fields)


BASIC = CredentialForm(
    "basic",
    "Username and password",
    BasicCredential,
    (
        FieldSpec("username", "user or robot account name", required=True, example="puller"),
        FieldSpec("password", "password, access token or robot secret", True, secret=True),
    ),
)
AWS_ACCESS_KEY_ID = FieldSpec(
    "access_key_id",
    "IAM access key id",
    required=True,
    example="AKIAIOSFODNN7EXAMPLE",
    pattern=r"^\w{16,128}$",
)
AWS = CredentialForm(
    "aws",
    "AWS access key",
    AwsCredential,
    (
        AWS_ACCESS_KEY_ID,
        FieldSpec("secret_access_key", "the access key's secret", required=True, secret=True),
        FieldSpec(
            "role_arn",
            "role to assume for each pull, with a session policy limited to the repositories "
            "asked for; in the registry's partition",
            example="arn:aws:iam::123456789012:role/puller",
        ),
    ),
)
GOOGLE = CredentialForm(
    "google",
    "Google service-account key",
    GoogleServiceAccount,
    (
        FieldSpec(
            "key_json",
            'the service-account key file (JSON, "type": "service_account", an RSA key of '
            "2048 bits or more), as downloaded",
            required=True,
            secret=True,
        ),
    ),
)
AZURE = CredentialForm(
    "azure",
    "Azure service principal",
    AzureServicePrincipal,
    (
        FieldSpec(
            "tenant_id",
            "directory (tenant) id, a GUID, or its domain such as contoso.onmicrosoft.com",
            required=True,
            example="72f988bf-86f1-41af-91ab-2d7cd011db47",
        ),
        FieldSpec(
            "client_id",
            "application (client) id, a GUID",
            required=True,
            example="04b07795-8ddb-461a-bbee-02f9e1bf7b46",
        ),
        FieldSpec("client_secret", "the application's client secret", True, secret=True),
    ),
)

DISPLAY_NAME = FieldSpec(
    "display_name",
    "unique name of the record: 1-63 characters from a-z, 0-9 and '-', starting with a letter",
    required=True,
    example="team-registry",
    pattern=r"^[a-z][a-z0-9-]{0,62}$",
)
REGISTRY_CA = FieldSpec(
    "registry_ca_pem",
    "PEM bundle of the CAs that sign the registry's TLS certificate; empty: system trust",
)
BASIC_PASSTHROUGH = FieldSpec(
    "allow_basic_passthrough",
    "registries that only speak Basic auth: hand nodes the stored credential itself (audited)",
    example="false",
)

REPOSITORIES = FieldSpec(
    "repositories",
    "repository globs of the host this record serves ('*' within one path segment, '**' "
    "across them); empty: every repository. Tells several records for one host apart (two "
    "organisations with two credentials): a pull that names no record gets the record whose "
    "glob matches most specifically",
    example="acme/**",
)


def url_field(
    *, default: str = "", example: str = "", description: str = "", required_unless: str = ""
) -> FieldSpec:
    """A kind's url field: required unless it has a default (or `required_unless` is given)."""
    return FieldSpec(
        "url",
        description or "registry base URL, https://host[:port] without a path",
        required=not default and not required_unless,
        example=example or default,
        default=default,
        required_unless=required_unless,
    )


CREDENTIAL_FORMS: tuple[CredentialForm, ...] = (BASIC, AWS, GOOGLE, AZURE)
"""Every credential type, as the Credential message's oneof lists them."""
