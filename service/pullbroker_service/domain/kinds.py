"""Registry kinds: what each kind requires, its default host, and validation of a new record.

Each kind is one row of `_KINDS`; a new kind is a new row (plus, when its hosts follow a
pattern, a small host check). Validation is pure: it parses, normalises and raises
InvalidRegistry with a message naming the field, and never performs I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography import x509

from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.hosts import normalize_registry_url
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


HostCheck = Callable[[str, RegistrySpec], RegistrySpec]


@dataclass(frozen=True)
class KindRule:
    """How one registry kind is validated.

    default_url: used when the caller gives none ("" means the url is required).
    credentials: the credential types the kind accepts; empty means it takes none (public).
    uses_region: whether `region` means anything for the kind.
    host_check: kind-specific check of the normalised host; may fill in derived fields.
    """

    label: str
    default_url: str = ""
    credentials: tuple[type, ...] = (BasicCredential,)
    uses_region: bool = False
    host_check: HostCheck | None = None


_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
_GAR_HOST = re.compile(r"^([a-z0-9-]+)-docker\.pkg\.dev$")
_GCR_HOST = re.compile(r"^([a-z]+\.)?gcr\.io$")
_ACR_HOST = re.compile(r"^[a-z0-9]{5,50}\.azurecr\.(io|cn|us)$")


def _ecr_host(host: str, spec: RegistrySpec) -> RegistrySpec:
    match = _ECR_HOST.match(host)
    if not match:
        raise InvalidRegistry(
            f"url host {host} is not an ECR registry: expect "
            "<account>.dkr.ecr.<region>.amazonaws.com"
        )
    region = match.group(2)
    if spec.region and spec.region != region:
        raise InvalidRegistry(f"region {spec.region!r} does not match the url's region {region!r}")
    return replace(spec, region=region)


def _gar_host(host: str, spec: RegistrySpec) -> RegistrySpec:
    match = _GAR_HOST.match(host)
    if not match:
        raise InvalidRegistry(
            f"url host {host} is not an Artifact Registry host: expect <region>-docker.pkg.dev"
        )
    return replace(spec, region=spec.region or match.group(1))


def _pattern_check(pattern: re.Pattern[str], example: str) -> HostCheck:
    def check(host: str, spec: RegistrySpec) -> RegistrySpec:
        if not pattern.match(host):
            raise InvalidRegistry(f"url host {host} does not fit this kind: expect {example}")
        return spec

    return check


_KINDS: dict[RegistryKind, KindRule] = {
    RegistryKind.GENERIC: KindRule("generic"),
    RegistryKind.PUBLIC: KindRule(
        "public", default_url="https://registry-1.docker.io", credentials=()
    ),
    RegistryKind.DOCKER_HUB: KindRule("docker_hub", default_url="https://registry-1.docker.io"),
    RegistryKind.GHCR: KindRule("ghcr", default_url="https://ghcr.io"),
    RegistryKind.QUAY: KindRule("quay", default_url="https://quay.io"),
    RegistryKind.HARBOR: KindRule("harbor"),
    RegistryKind.ECR: KindRule(
        "ecr", credentials=(AwsCredential,), uses_region=True, host_check=_ecr_host
    ),
    RegistryKind.GCR: KindRule(
        "gcr",
        default_url="https://gcr.io",
        credentials=(GoogleServiceAccount,),
        host_check=_pattern_check(_GCR_HOST, "gcr.io or <region>.gcr.io"),
    ),
    RegistryKind.GAR: KindRule(
        "gar", credentials=(GoogleServiceAccount,), uses_region=True, host_check=_gar_host
    ),
    RegistryKind.ACR: KindRule(
        "acr",
        credentials=(BasicCredential, AzureServicePrincipal),
        host_check=_pattern_check(_ACR_HOST, "<name>.azurecr.io"),
    ),
}


def kind_rule(kind: RegistryKind) -> KindRule:
    """The validation rule of `kind`; InvalidRegistry for a kind this broker does not know."""
    try:
        return _KINDS[RegistryKind(kind)]
    except (KeyError, ValueError):
        raise InvalidRegistry(f"unknown registry kind {kind!r}") from None


def validate_registry(spec: RegistrySpec, credential: Credential | None) -> ValidRegistry:
    """Validate a new registry and its credential; return the normalised spec and host."""
    valid = validate_spec(spec)
    check_credential(spec.kind, credential)
    return valid


def validate_spec(spec: RegistrySpec) -> ValidRegistry:
    """Validate and normalise everything but the credential (used by updates too)."""
    rule = kind_rule(spec.kind)
    validate_display_name(spec.display_name)
    url, host = normalize_registry_url(spec.url or rule.default_url)
    if spec.region and not rule.uses_region:
        raise InvalidRegistry(f"region is not used by registry kind {rule.label}: leave it empty")
    validate_ca_pem(spec.registry_ca_pem)
    normalised = replace(spec, kind=RegistryKind(spec.kind), url=url)
    if rule.host_check is not None:
        normalised = rule.host_check(host, normalised)
    return ValidRegistry(spec=normalised, host=host)


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


def check_credential(kind: RegistryKind, credential: Credential | None) -> None:
    """The credential fits the kind: present (unless public), of an accepted type, complete."""
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
