"""Registry kinds: what each kind requires, its default host, and validation of a new record.

Each kind is one row of `_KINDS`; a new kind is a new row (plus, when its usernames or hosts
follow conventions, a small check). The cloud kinds bring their own validators
(cloud_kinds.py), which check url, region and credential together. Validation is pure: it
parses, normalises and raises InvalidRegistry with a message naming the field, and never
performs I/O.

Username conventions of the token-endpoint kinds:

    docker_hub  Docker ID (4-30 lowercase letters and digits), never the e-mail address
    ghcr        GitHub user name (a PAT with read:packages is the password)
    quay        user name, robot NAMESPACE+ROBOT, or $oauthtoken / $app for token logins
    harbor      user name, or robot$NAME / robot$PROJECT+NAME for robot accounts
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography import x509

from pullbroker_service.domain.cloud_kinds import (
    GOOGLE_OAUTH_HOSTS,
    ValidatedTarget,
    validate_acr,
    validate_ecr,
    validate_gar,
    validate_gcr,
)
from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.hosts import DOCKER_HUB_HOST, normalize_registry_url
from pullbroker_service.domain.model import (
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    Credential,
    GoogleServiceAccount,
    RegistryKind,
)

_DISPLAY_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class RegistrySpec:
    """What a caller asks for when creating (or testing) a registry; not yet validated."""

    display_name: str
    kind: RegistryKind
    url: str
    registry_ca_pem: str = ""
    region: str = ""
    allow_basic_passthrough: bool = False


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
    """How one registry kind is validated.

    default_url: used when the caller gives none ("" means the url is required). An explicit
    url always wins, so a hosted kind can point at a self-hosted or mirror registry.
    credentials: the credential types the kind accepts; empty means it takes none (public).
    uses_region: whether `region` means anything for the kind.
    username: the kind's username conventions (robot account forms and the like).
    validator: replaces the generic url/region handling and adds credential checks.
    """

    label: str
    default_url: str = ""
    credentials: tuple[type, ...] = (BasicCredential,)
    uses_region: bool = False
    username: UsernameCheck | None = None
    validator: CloudValidator | None = None


_DOCKER_ID = re.compile(r"^[a-z0-9]{4,30}$")
_GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:-?[A-Za-z0-9])*(?:\[bot\])?$")
_GITHUB_USER_MAX = 39
_QUAY_NAME = re.compile(r"^(?=.{2,255}$)[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_QUAY_ROBOT = re.compile(r"^[a-z][a-z0-9_]{1,254}$")
# Quay's token logins: an OAuth application token, an app-specific token.
_QUAY_TOKEN_USERS = frozenset({"$oauthtoken", "$app"})
HARBOR_ROBOT_PREFIX = "robot$"

# Messages describe the problem but never repeat the username: a pasted token lands in the
# username field often enough that echoing it would leak it into errors and logs.


def _docker_hub_username(name: str) -> None:
    if "@" in name:
        raise InvalidRegistry(
            "docker_hub username must be your Docker ID, not an e-mail address: access "
            "tokens are tied to the Docker ID (shown at hub.docker.com under your avatar)"
        )
    if not _DOCKER_ID.match(name):
        raise InvalidRegistry(
            "docker_hub username is not a Docker ID (4-30 lowercase letters and digits); an "
            "organization access token uses the organization's name"
        )


def _github_username(name: str) -> None:
    if "@" in name:
        raise InvalidRegistry("ghcr username is the GitHub user name, not an e-mail address")
    if len(name.removesuffix("[bot]")) > _GITHUB_USER_MAX or not _GITHUB_USER.match(name):
        raise InvalidRegistry(
            "ghcr username must be a GitHub user name: up to 39 letters, digits and single "
            "hyphens, not starting or ending with a hyphen"
        )


def _quay_username(name: str) -> None:
    if name in _QUAY_TOKEN_USERS:
        return
    namespace, plus, robot = name.partition("+")
    if plus:
        if not (_QUAY_NAME.match(namespace) and _QUAY_ROBOT.match(robot)):
            raise InvalidRegistry(
                "quay robot accounts are named NAMESPACE+ROBOT (e.g. acme+puller): a "
                "lowercase organization or user name, '+', and a robot name that starts "
                "with a letter and holds lowercase letters, digits and '_'"
            )
        return
    if not _QUAY_NAME.match(name):
        raise InvalidRegistry(
            "quay username must be 2-255 lowercase letters and digits, optionally separated "
            "by '.', '_' or '-'; a robot account is NAMESPACE+ROBOT, an OAuth token logs in "
            "as $oauthtoken"
        )


def _harbor_username(name: str) -> None:
    if name.startswith(HARBOR_ROBOT_PREFIX):
        project, plus, robot = name.removeprefix(HARBOR_ROBOT_PREFIX).rpartition("+")
        if not robot or (plus and not project):
            raise InvalidRegistry(
                "harbor robot accounts are named robot$NAME (system robot) or "
                "robot$PROJECT+NAME (project robot): the part after robot$ is incomplete"
            )
        return
    if name == "robot" or name.startswith("robot+"):
        raise InvalidRegistry(
            "harbor username looks like a robot account whose '$' was lost: robot accounts "
            "are robot$NAME or robot$PROJECT+NAME; quote the name in your shell ('robot$x')"
        )


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

_KINDS: dict[RegistryKind, KindRule] = {
    RegistryKind.GENERIC: KindRule("generic"),
    RegistryKind.PUBLIC: KindRule("public", default_url=_DOCKER_HUB_URL, credentials=()),
    RegistryKind.DOCKER_HUB: KindRule(
        "docker_hub", default_url=_DOCKER_HUB_URL, username=_docker_hub_username
    ),
    RegistryKind.GHCR: KindRule("ghcr", default_url="https://ghcr.io", username=_github_username),
    RegistryKind.QUAY: KindRule("quay", default_url="https://quay.io", username=_quay_username),
    RegistryKind.HARBOR: KindRule("harbor", username=_harbor_username),
    RegistryKind.ECR: KindRule(
        "ecr", credentials=(AwsCredential,), uses_region=True, validator=_cloud(validate_ecr)
    ),
    RegistryKind.GCR: KindRule(
        "gcr", credentials=(GoogleServiceAccount,), validator=_google(validate_gcr)
    ),
    RegistryKind.GAR: KindRule(
        "gar",
        credentials=(GoogleServiceAccount,),
        uses_region=True,
        validator=_google(validate_gar),
    ),
    RegistryKind.ACR: KindRule(
        "acr",
        credentials=(BasicCredential, AzureServicePrincipal),
        validator=_cloud(validate_acr),
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
    kind = RegistryKind(spec.kind)
    if rule.validator is not None:
        target = rule.validator(spec, None, settings)
        normalised = replace(spec, kind=kind, url=target.url, region=target.region)
        return ValidRegistry(spec=normalised, host=target.host)
    url, host = normalize_registry_url(spec.url or rule.default_url)
    if spec.region and not rule.uses_region:
        raise InvalidRegistry(f"region is not used by registry kind {rule.label}: leave it empty")
    return ValidRegistry(spec=replace(spec, kind=kind, url=url), host=host)


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


_REQUIRED_FIELDS: dict[type, tuple[str, tuple[str, ...]]] = {
    BasicCredential: ("basic", ("username", "password")),
    AwsCredential: ("aws", ("access_key_id", "secret_access_key")),
    GoogleServiceAccount: ("google", ("key_json",)),
    AzureServicePrincipal: ("azure", ("tenant_id", "client_id", "client_secret")),
}


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
    accepted = " or ".join(_REQUIRED_FIELDS[t][0] for t in rule.credentials)
    if credential is None:
        raise InvalidRegistry(f"credential is required for registry kind {rule.label} ({accepted})")
    if not isinstance(credential, rule.credentials):
        got = _REQUIRED_FIELDS[type(credential)][0]
        raise InvalidRegistry(
            f"registry kind {rule.label} needs a {accepted} credential, not {got}"
        )
    label, fields = _REQUIRED_FIELDS[type(credential)]
    for name in fields:
        value = getattr(credential, name)
        text = value if isinstance(value, str) else value.reveal()
        if not text.strip():
            raise InvalidRegistry(f"credential.{label}.{name} is required")
    if rule.username is not None and isinstance(credential, BasicCredential):
        rule.username(credential.username)
    if rule.validator is not None and url:
        rule.validator(RegistrySpec("", RegistryKind(kind), url), credential, settings)
