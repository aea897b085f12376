"""Registry kinds: what each kind requires, its default host, and validation of a new record.

Each kind is one row of `_KINDS`; a new kind is a new row (plus, when its usernames or hosts
follow conventions, a small check). A row declares the kind's url and region fields and the
credential forms it takes (kind_fields.py): validation enforces those declarations
(`check_declared`, `check_credential`) and the kind catalogue shows them, so the two agree.
The cloud kinds bring their own validators (cloud_kinds.py), which check url, region and
credential together. Validation is pure: it
parses, normalises and raises InvalidRegistry with a message naming the field, and never
performs I/O. The username conventions of the token-endpoint kinds are kind_usernames.py's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography import x509

from pullbroker_service.domain.cloud_kinds import (
    AWS_REGION,
    GCR_HOSTS,
    GOOGLE_OAUTH_HOSTS,
    GOOGLE_REGION,
    ValidatedTarget,
    validate_acr,
    validate_ecr,
    validate_gar,
    validate_gcr,
)
from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.hosts import DOCKER_HUB_HOST, normalize_registry_url
from pullbroker_service.domain.kind_fields import (
    AWS,
    AZURE,
    BASIC,
    BASIC_PASSTHROUGH,
    CREDENTIAL_FORMS,
    DISPLAY_NAME,
    GOOGLE,
    REGISTRY_CA,
    REPOSITORIES,
    CredentialForm,
    FieldSpec,
    url_field,
)
from pullbroker_service.domain.kind_usernames import (
    DOCKER_ID,
    docker_hub_username,
    github_username,
    harbor_username,
    quay_username,
)
from pullbroker_service.domain.model import BasicCredential, Credential, RegistryKind
from pullbroker_service.domain.repository_globs import validate_repository_globs

_DISPLAY_NAME = re.compile(DISPLAY_NAME.pattern)


@dataclass(frozen=True)
class RegistrySpec:
    """What a caller asks for when creating (or testing) a registry; not yet validated."""

    display_name: str
    kind: RegistryKind
    url: str
    registry_ca_pem: str = ""
    region: str = ""
    allow_basic_passthrough: bool = False
    repositories: tuple[str, ...] = ()
    """Repository globs this record serves on its host; empty: every repository."""


@dataclass(frozen=True)
class ValidRegistry:
    """A spec that passed its kind's validation: url normalised, host derived."""

    spec: RegistrySpec
    host: str


@dataclass(frozen=True)
class KindSettings:
    """Deployment settings that some kinds' validation depends on."""

    google_oauth_hosts: frozenset[str] = GOOGLE_OAUTH_HOSTS
    """Hosts a service-account key's token_uri may name (Google's own unless widened)."""


DEFAULT_SETTINGS = KindSettings()

CloudValidator = Callable[[RegistrySpec, Credential | None, KindSettings], ValidatedTarget]
"""A kind that checks url, region and credential as one (the cloud kinds, cloud_kinds.py)."""

UsernameCheck = Callable[[str], None]


@dataclass(frozen=True)
class KindRule:
    """How one registry kind is validated, and what a form for it asks (kind_fields.py).

    title: the kind's name for people. url: its url field; a default means the url may be
    left empty, and an explicit url always wins (a hosted kind can point at a self-hosted or
    mirror registry). region: its region field, None for kinds without one (a region is then
    refused). credentials: the credential forms the kind accepts; empty means it takes none
    (public). username: the kind's username conventions (robot account forms and the like).
    validator: replaces the generic url/region handling and adds credential checks.
    """

    label: str
    title: str
    url: FieldSpec
    region: FieldSpec | None = None
    credentials: tuple[CredentialForm, ...] = (BASIC,)
    username: UsernameCheck | None = None
    validator: CloudValidator | None = None
    notes: str = ""

    @property
    def default_url(self) -> str:
        return self.url.default

    @property
    def passthrough(self) -> bool:
        """Basic pass-through means something only for kinds that take a username/password."""
        return any(form.type is BasicCredential for form in self.credentials)


def _cloud(
    validate: Callable[[RegistrySpec, Credential | None], ValidatedTarget],
) -> CloudValidator:
    def check(
        spec: RegistrySpec, credential: Credential | None, _: KindSettings
    ) -> ValidatedTarget:
        return validate(spec, credential)

    return check


def _google(
    validate: Callable[..., ValidatedTarget],
) -> CloudValidator:
    def check(
        spec: RegistrySpec, credential: Credential | None, settings: KindSettings
    ) -> ValidatedTarget:
        return validate(spec, credential, allowed_oauth_hosts=settings.google_oauth_hosts)

    return check


_DOCKER_HUB_URL = f"https://{DOCKER_HUB_HOST}"

_BEARER_NOTES = "the registry's token endpoint makes short-lived, repository-scoped pull tokens"

_KINDS: dict[RegistryKind, KindRule] = {
    RegistryKind.GENERIC: KindRule(
        "generic",
        "Generic / self-hosted",
        url_field(example="https://registry.example.com"),
        notes="any Docker v2 registry; Basic-only registries need allow_basic_passthrough",
    ),
    RegistryKind.PUBLIC: KindRule(
        "public",
        "Public (anonymous)",
        url_field(default=_DOCKER_HUB_URL),
        credentials=(),
        notes="anonymous pull tokens; no credential is stored",
    ),
    RegistryKind.DOCKER_HUB: KindRule(
        "docker_hub",
        "Docker Hub",
        url_field(default=_DOCKER_HUB_URL),
        credentials=(
            BASIC.with_field(
                BASIC.fields[0].but(
                    description="Docker ID (not the e-mail address); an organization access "
                    "token uses the organization's name",
                    example="acmebot",
                    pattern=DOCKER_ID.pattern,
                )
            ).with_field(
                BASIC.fields[1].but(description="a personal or organization access token")
            ),
        ),
        username=docker_hub_username,
        notes=_BEARER_NOTES,
    ),
    RegistryKind.GHCR: KindRule(
        "ghcr",
        "GitHub Container Registry",
        url_field(default="https://ghcr.io"),
        credentials=(
            BASIC.with_field(
                BASIC.fields[0].but(description="GitHub user name", example="octocat")
            ).with_field(
                BASIC.fields[1].but(description="a personal access token with read:packages")
            ),
        ),
        username=github_username,
        notes=_BEARER_NOTES,
    ),
    RegistryKind.QUAY: KindRule(
        "quay",
        "Quay",
        url_field(default="https://quay.io"),
        credentials=(
            BASIC.with_field(
                BASIC.fields[0].but(
                    description="user name, robot account NAMESPACE+ROBOT, or $oauthtoken "
                    "for an OAuth application token",
                    example="acme+puller",
                )
            ),
        ),
        username=quay_username,
        notes=_BEARER_NOTES,
    ),
    RegistryKind.HARBOR: KindRule(
        "harbor",
        "Harbor",
        url_field(example="https://harbor.example.com"),
        credentials=(
            BASIC.with_field(
                BASIC.fields[0].but(
                    description="user name, or robot account robot$NAME / robot$PROJECT+NAME",
                    example="robot$team+puller",
                )
            ),
        ),
        username=harbor_username,
        notes=_BEARER_NOTES,
    ),
    RegistryKind.ECR: KindRule(
        "ecr",
        "Amazon ECR",
        url_field(
            example="https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            description="https://<12-digit account>.dkr.ecr.<region>.amazonaws.com[.cn]",
        ),
        region=FieldSpec(
            "region",
            "AWS region; derived from the url when empty, and must match it",
            example="eu-west-1",
            pattern=AWS_REGION.pattern,
        ),
        credentials=(AWS,),
        validator=_cloud(validate_ecr),
        notes="ecr:GetAuthorizationToken, optionally through STS AssumeRole (role_arn)",
    ),
    RegistryKind.GCR: KindRule(
        "gcr",
        "Google Container Registry",
        url_field(
            default="https://gcr.io",
            description=f"one of {', '.join(f'https://{h}' for h in sorted(GCR_HOSTS))}",
        ),
        credentials=(GOOGLE,),
        validator=_google(validate_gcr),
        notes="a signed JWT becomes an OAuth2 access token, then a scoped registry token",
    ),
    RegistryKind.GAR: KindRule(
        "gar",
        "Google Artifact Registry",
        url_field(
            example="https://europe-west4-docker.pkg.dev",
            description="https://<region>-docker.pkg.dev; derived from the region when empty",
            required_unless="region",
        ),
        region=FieldSpec(
            "region",
            "Google Cloud region or multi-region (us, europe, asia); must match the url",
            example="europe-west4",
            pattern=GOOGLE_REGION.pattern,
            required_unless="url",
        ),
        credentials=(GOOGLE,),
        validator=_google(validate_gar),
        notes="a signed JWT becomes an OAuth2 access token, then a scoped registry token",
    ),
    RegistryKind.ACR: KindRule(
        "acr",
        "Azure Container Registry",
        url_field(
            example="https://myregistry.azurecr.io",
            description="https://<name>.azurecr.io, a name of 5-50 letters and digits",
        ),
        credentials=(
            BASIC.with_field(
                BASIC.fields[0].but(
                    description="admin user or ACR token name", example="myregistry"
                )
            ),
            AZURE,
        ),
        validator=_cloud(validate_acr),
        notes="/oauth2/exchange and /oauth2/token make repository-scoped tokens",
    ),
}


def kind_rule(kind: RegistryKind) -> KindRule:
    """The validation rule of `kind`; InvalidRegistry for a kind this broker does not know."""
    try:
        return _KINDS[RegistryKind(kind)]
    except (KeyError, ValueError):
        raise InvalidRegistry(f"unknown registry kind {kind!r}") from None


def validate_registry(
    spec: RegistrySpec, credential: Credential | None, settings: KindSettings = DEFAULT_SETTINGS
) -> ValidRegistry:
    """Validate a new registry and its credential; return the normalised spec and host."""
    valid = validate_spec(spec, settings)
    check_credential(spec.kind, credential, url=valid.spec.url, settings=settings)
    return valid


def validate_spec(spec: RegistrySpec, settings: KindSettings = DEFAULT_SETTINGS) -> ValidRegistry:
    """Validate and normalise everything but the credential (used by updates too)."""
    rule = kind_rule(spec.kind)
    validate_display_name(spec.display_name)
    validate_ca_pem(spec.registry_ca_pem)
    check_declared(rule, spec)
    kind = RegistryKind(spec.kind)
    spec = replace(
        spec,
        kind=kind,
        url=spec.url.strip() or rule.default_url,
        repositories=validate_repository_globs(spec.repositories),
    )
    if rule.validator is not None:
        target = rule.validator(spec, None, settings)
        normalised = replace(spec, url=target.url, region=target.region)
        return ValidRegistry(spec=normalised, host=target.host)
    url, host = normalize_registry_url(spec.url)
    return ValidRegistry(spec=replace(spec, url=url), host=host)


def registry_fields(rule: KindRule) -> tuple[FieldSpec, ...]:
    """The Registry message fields a kind takes, in the order a form shows them."""
    fields = [DISPLAY_NAME, rule.url]
    if rule.region is not None:
        fields.append(rule.region)
    fields.append(REGISTRY_CA)
    if rule.passthrough:
        fields.append(BASIC_PASSTHROUGH)
    fields.append(REPOSITORIES)
    return tuple(fields)


def check_declared(rule: KindRule, spec: RegistrySpec) -> None:
    """The spec gives every field the kind requires and none it does not take."""
    given = {
        "display_name": bool(spec.display_name),
        "url": bool(spec.url.strip()),
        "region": bool(spec.region),
        "registry_ca_pem": bool(spec.registry_ca_pem.strip()),
        "allow_basic_passthrough": spec.allow_basic_passthrough,
        "repositories": bool(spec.repositories),
    }
    declared = {field.name: field for field in registry_fields(rule)}
    for name, present in given.items():
        field = declared.get(name)
        if field is None:
            if present:
                raise InvalidRegistry(
                    f"{name} is not used by registry kind {rule.label}: leave it empty"
                )
            continue
        if present or field.default:
            continue
        if field.required:
            raise InvalidRegistry(f"{name} is required for registry kind {rule.label}{_eg(field)}")
        if field.required_unless and not given[field.required_unless]:
            raise InvalidRegistry(
                f"registry kind {rule.label} needs {name} or {field.required_unless}{_eg(field)}"
            )


def _eg(field: FieldSpec) -> str:
    return f", e.g. {field.example}" if field.example else ""


def validate_display_name(name: str) -> str:
    if not _DISPLAY_NAME.match(name):
        raise InvalidRegistry(
            f"display_name {name!r} is invalid: use 1-63 characters from a-z, 0-9 and '-', "
            "starting with a letter"
        )
    return name


def validate_ca_pem(pem: str) -> None:
    """A registry CA bundle must parse as PEM certificates (empty means system trust)."""
    if not pem.strip():
        return
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise InvalidRegistry(
            "registry_ca_pem is not a PEM certificate bundle: pass the CA file (-----BEGIN "
            "CERTIFICATE-----), not a key or a DER file"
        ) from exc
    if not certificates:
        raise InvalidRegistry("registry_ca_pem holds no certificate")


def credential_form(credential: Credential) -> CredentialForm:
    """The form of a credential's type (its label and fields)."""
    return next(form for form in CREDENTIAL_FORMS if isinstance(credential, form.type))


def check_credential(
    kind: RegistryKind,
    credential: Credential | None,
    *,
    url: str = "",
    settings: KindSettings = DEFAULT_SETTINGS,
) -> None:
    """The credential fits the kind: present (unless public), of an accepted type, complete,
    following the kind's username conventions.

    With the record's `url`, a kind with its own validator also checks the credential against
    the registry (an ECR role ARN's partition, a Google key's token endpoint).
    """
    rule = kind_rule(kind)
    if not rule.credentials:
        if credential is not None:
            raise InvalidRegistry(f"registry kind {rule.label} is anonymous: send no credential")
        return
    accepted = " or ".join(form.label for form in rule.credentials)
    if credential is None:
        raise InvalidRegistry(f"credential is required for registry kind {rule.label} ({accepted})")
    form = next((f for f in rule.credentials if isinstance(credential, f.type)), None)
    if form is None:
        got = credential_form(credential).label
        raise InvalidRegistry(
            f"registry kind {rule.label} needs a {accepted} credential, not {got}"
        )
    for field in form.fields:
        value = getattr(credential, field.name)
        text = value if isinstance(value, str) else value.reveal()
        if field.required and not text.strip():
            raise InvalidRegistry(f"credential.{form.label}.{field.name} is required")
    if rule.username is not None and isinstance(credential, BasicCredential):
        rule.username(credential.username)
    if rule.validator is not None and url:
        rule.validator(RegistrySpec("", RegistryKind(kind), url), credential, settings)


@dataclass(frozen=True)
class KindInfo:
    """One entry of the kind catalogue: what a form for the kind shows and asks."""

    kind: RegistryKind
    title: str
    default_url: str
    default_host: str
    fields: tuple[FieldSpec, ...]
    """The Registry message's fields, display_name first."""
    credentials: tuple[CredentialForm, ...]
    """The credential types the kind takes; empty: anonymous."""
    notes: str


def kind_catalogue() -> tuple[KindInfo, ...]:
    """Every kind, read from the same rows validation uses."""
    return tuple(
        KindInfo(
            kind=kind,
            title=rule.title,
            default_url=rule.default_url,
            default_host=normalize_registry_url(rule.default_url)[1] if rule.default_url else "",
            fields=registry_fields(rule),
            credentials=rule.credentials,
            notes=rule.notes,
        )
        for kind, rule in _KINDS.items()
    )
