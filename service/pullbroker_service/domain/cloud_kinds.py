"""Strict validation of the cloud registry kinds: ecr, gcr, gar and acr.

Each `validate_<kind>(spec, credential)` checks what only that cloud knows: the host's exact
shape, the region it implies, and the credential's inner structure (an AWS key pair and role
ARN, a Google service-account key that will sign, an Azure service principal or ACR token).
It normalises the url with `hosts.normalize_registry_url` and returns the `ValidatedTarget`
(url, host and the effective region). It does not check display_name or the CA bundle: the
generic rules in kinds.py do. A credential of None means "not being changed" (an update that
keeps the stored secret) and only the spec is checked. Pure: parses, never dials.

Hosts accepted:

    ecr   <12-digit account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]
    gcr   gcr.io, us.gcr.io, eu.gcr.io, asia.gcr.io
    gar   <region>-docker.pkg.dev
    acr   <name>.azurecr.io            name: 5-50 letters and digits
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.hosts import normalize_registry_url
from pullbroker_service.domain.kind_fields import AWS_ACCESS_KEY_ID
from pullbroker_service.domain.model import (
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    Credential,
    GoogleServiceAccount,
)

if TYPE_CHECKING:  # kinds.py plugs these validators in, so importing it here would cycle
    from pullbroker_service.domain.kinds import RegistrySpec

# Where a service-account key may send its signed assertion (see minting/google.py).
GOOGLE_OAUTH_HOSTS = frozenset({"oauth2.googleapis.com", "accounts.google.com"})
GCR_HOSTS = frozenset({"gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io"})

_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?P<fips>-fips)?\.(?P<region>[a-z0-9-]+)"
    r"\.amazonaws\.com(?P<cn>\.cn)?$"
)
# Partition prefix, optional gov/iso marker, geography, ordinal: us-east-1, us-gov-west-1,
# cn-north-1, ap-southeast-3, us-isob-east-1, eu-isoe-west-1.
AWS_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_ROLE_ARN = re.compile(
    r"^arn:(?P<partition>aws|aws-cn|aws-us-gov):iam::(?P<account>\d{12}):role/"
    r"(?P<path>[\w+=,.@/-]{1,512})$"
)
_ACCESS_KEY_ID = re.compile(AWS_ACCESS_KEY_ID.pattern)
_GAR_HOST = re.compile(r"^(?P<region>[a-z0-9-]+)-docker\.pkg\.dev$")
# Google Cloud regions (us-central1, europe-west4, northamerica-northeast1) and the
# Artifact Registry multi-regions.
GOOGLE_REGION = re.compile(r"^(?:[a-z]+-[a-z]+\d{1,2}|us|europe|asia)$")
_ACR_HOST = re.compile(r"^[a-z0-9]{5,50}\.azurecr\.io$")
_TENANT_DOMAIN = re.compile(r"^(?=.{3,253}$)[a-z0-9-]+(\.[a-z0-9-]+)+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class ValidatedTarget:
    """A cloud registry spec that passed its kind's checks.

    url: `https://host`, the form the record stores; host: what image references name;
    region: the effective region (derived from the host when the spec left it empty, "" for
    kinds without one).
    """

    url: str
    host: str
    region: str = ""


@dataclass(frozen=True)
class EcrHost:
    """The parts of an ECR registry host."""

    account: str
    region: str
    fips: bool
    partition: str  # "aws", "aws-cn" or "aws-us-gov": the ARN partition


def parse_ecr_host(host: str) -> EcrHost:
    """Split an ECR registry host, or raise InvalidRegistry saying what shape is expected."""
    match = _ECR_HOST.match(host)
    if not match:
        raise InvalidRegistry(
            f"url host {host} is not an ECR registry: expect "
            "<12-digit account>.dkr.ecr.<region>.amazonaws.com (or .amazonaws.com.cn, or "
            "dkr.ecr-fips.<region>)"
        )
    region = match["region"]
    if not AWS_REGION.match(region):
        raise InvalidRegistry(f"url host {host} names {region!r}, which is not an AWS region")
    china = match["cn"] is not None
    if china != region.startswith("cn-"):
        raise InvalidRegistry(
            f"url host {host} mixes partitions: China regions (cn-*) use .amazonaws.com.cn "
            "and no other region does"
        )
    if match["fips"] and not region.startswith("us-"):
        raise InvalidRegistry(f"ECR has FIPS endpoints only in US regions, not in {region}")
    partition = "aws-cn" if china else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    return EcrHost(match["account"], region, bool(match["fips"]), partition)


def validate_ecr(spec: RegistrySpec, credential: Credential | None) -> ValidatedTarget:
    """An ECR registry: strict host, region consistent with it, AWS key pair and role ARN."""
    if not spec.url.strip():
        raise InvalidRegistry(
            "url is required for ecr: https://<account>.dkr.ecr.<region>.amazonaws.com"
        )
    url, host = _https_url(spec.url)
    parsed = parse_ecr_host(host)
    if spec.region and spec.region != parsed.region:
        raise InvalidRegistry(
            f"region {spec.region!r} does not match the registry host's region "
            f"{parsed.region!r}: leave region empty or set it to {parsed.region}"
        )
    if credential is not None:
        check_aws_credential(credential, parsed.partition)
    return ValidatedTarget(url, host, parsed.region)


def check_aws_credential(credential: Credential, partition: str) -> AwsCredential:
    """An access key pair, and a role ARN (if any) in the registry's partition."""
    if not isinstance(credential, AwsCredential):
        raise InvalidRegistry("registry kind ecr needs an aws credential (access key id + secret)")
    if not _ACCESS_KEY_ID.match(credential.access_key_id):
        raise InvalidRegistry(
            "credential.aws.access_key_id is not an AWS access key id (16-128 letters and "
            "digits, e.g. AKIA...)"
        )
    if not credential.secret_access_key.reveal().strip():
        raise InvalidRegistry("credential.aws.secret_access_key is required")
    if credential.role_arn:
        match = _ROLE_ARN.match(credential.role_arn)
        if not match:
            raise InvalidRegistry(
                "credential.aws.role_arn is not an IAM role ARN: expect "
                "arn:aws:iam::<12-digit account>:role/<name>"
            )
        if match["partition"] != partition:
            raise InvalidRegistry(
                f"credential.aws.role_arn is in partition {match['partition']} but the "
                f"registry is in {partition}: use a role from the registry's partition"
            )
    return credential


def validate_gcr(
    spec: RegistrySpec,
    credential: Credential | None,
    *,
    allowed_oauth_hosts: Collection[str] = GOOGLE_OAUTH_HOSTS,
) -> ValidatedTarget:
    """A Container Registry host (gcr.io and its regional names) and a service-account key."""
    url, host = _https_url(spec.url or "https://gcr.io")
    if host not in GCR_HOSTS:
        raise InvalidRegistry(
            f"url host {host} is not a Container Registry host: use one of "
            f"{', '.join(sorted(GCR_HOSTS))} (Artifact Registry hosts are kind gar)"
        )
    if spec.region:
        raise InvalidRegistry(
            "region is not used by kind gcr (the host names the multi-region): leave it empty"
        )
    if credential is not None:
        check_google_key(credential, allowed_oauth_hosts)
    return ValidatedTarget(url, host)


def validate_gar(
    spec: RegistrySpec,
    credential: Credential | None,
    *,
    allowed_oauth_hosts: Collection[str] = GOOGLE_OAUTH_HOSTS,
) -> ValidatedTarget:
    """An Artifact Registry host `<region>-docker.pkg.dev` and a service-account key."""
    if not spec.url.strip() and not spec.region:
        raise InvalidRegistry("kind gar needs a url (https://<region>-docker.pkg.dev) or a region")
    if spec.region and not GOOGLE_REGION.match(spec.region):
        raise InvalidRegistry(
            f"region {spec.region!r} is not a Google Cloud region (e.g. us-central1, "
            "europe-west4, or the multi-regions us, europe, asia)"
        )
    url, host = _https_url(spec.url or f"https://{spec.region}-docker.pkg.dev")
    match = _GAR_HOST.match(host)
    if not match or not GOOGLE_REGION.match(match["region"]):
        raise InvalidRegistry(
            f"url host {host} is not an Artifact Registry host: expect <region>-docker.pkg.dev"
        )
    region = match["region"]
    if spec.region and spec.region != region:
        raise InvalidRegistry(
            f"region {spec.region!r} does not match the registry host's region {region!r}"
        )
    if credential is not None:
        check_google_key(credential, allowed_oauth_hosts)
    return ValidatedTarget(url, host, region)


@dataclass(frozen=True)
class GoogleKeyInfo:
    """The non-secret parts of a service-account key the minter needs."""

    client_email: str
    token_uri: str
    private_key_id: str


def check_google_key(
    credential: Credential, allowed_oauth_hosts: Collection[str] = GOOGLE_OAUTH_HOSTS
) -> GoogleKeyInfo:
    """A service-account JSON key that can sign: type, client_email, RSA key, https token_uri.

    The token_uri comes from the key file, so its host must be one of `allowed_oauth_hosts`
    (Google's token endpoints unless a test or deployment config says otherwise): a crafted
    key must not make the broker send signed assertions to, or dial, a host of its choice.
    """
    if not isinstance(credential, GoogleServiceAccount):
        raise InvalidRegistry("Google registries need a service-account JSON key credential")
    document = _key_document(credential)
    if document.get("type") != "service_account":
        raise InvalidRegistry(
            'credential key_json is not a service-account key ("type" must be '
            '"service_account"): create a key for a service account, not a user'
        )
    email = document.get("client_email")
    if not isinstance(email, str) or not _EMAIL.match(email):
        raise InvalidRegistry("credential key_json has no valid client_email")
    _check_rsa_pem(document.get("private_key"))
    token_uri = document.get("token_uri")
    if not isinstance(token_uri, str):
        raise InvalidRegistry("credential key_json has no token_uri")
    check_oauth_url(token_uri, allowed_oauth_hosts, "credential key_json token_uri")
    key_id = document.get("private_key_id")
    return GoogleKeyInfo(email, token_uri, key_id if isinstance(key_id, str) else "")


def check_oauth_url(url: str, allowed_hosts: Collection[str], field: str) -> str:
    """`url` if it is https on one of `allowed_hosts` (host or host:port), else InvalidRegistry."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise InvalidRegistry(f"{field} must be an https:// URL")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidRegistry(f"{field} must not carry user-info or a fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidRegistry(f"{field} has an invalid port") from exc
    name = (parts.hostname or "").lower()
    netloc = name if port in (None, 443) else f"{name}:{port}"
    if name not in allowed_hosts and netloc not in allowed_hosts:
        raise InvalidRegistry(
            f"{field} points at {netloc or 'no host'}, which is not an allowed token endpoint "
            f"({', '.join(sorted(allowed_hosts))}): use the key file Google issued unchanged"
        )
    return url


def _key_document(credential: GoogleServiceAccount) -> dict[str, Any]:
    try:
        document = json.loads(credential.key_json.reveal())
    except (ValueError, RecursionError):
        # Never echo the parser's message: it quotes the (secret) text around the error.
        raise InvalidRegistry(
            "credential key_json is not valid JSON: pass the key file as downloaded"
        ) from None
    if not isinstance(document, dict):
        raise InvalidRegistry("credential key_json must be a JSON object")
    return document


def _check_rsa_pem(pem: object) -> None:
    if not isinstance(pem, str) or "PRIVATE KEY" not in pem:
        raise InvalidRegistry("credential key_json has no private_key in PEM form")
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise InvalidRegistry(
            "credential key_json private_key does not parse as an unencrypted PEM key"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise InvalidRegistry("credential key_json private_key must be an RSA key (2048+ bits)")


def validate_acr(spec: RegistrySpec, credential: Credential | None) -> ValidatedTarget:
    """An Azure Container Registry host and a username/password or service principal."""
    if not spec.url.strip():
        raise InvalidRegistry("url is required for acr: https://<name>.azurecr.io")
    url, host = _https_url(spec.url)
    if not _ACR_HOST.match(host):
        raise InvalidRegistry(
            f"url host {host} is not an Azure Container Registry login server: expect "
            "<name>.azurecr.io with a name of 5-50 letters and digits"
        )
    if spec.region:
        raise InvalidRegistry("region is not used by kind acr: leave it empty")
    if credential is not None:
        check_azure_credential(credential)
    return ValidatedTarget(url, host)


def check_azure_credential(credential: Credential) -> Credential:
    """Basic (admin user or ACR token) or a service principal with a well-formed tenant."""
    if isinstance(credential, BasicCredential):
        if not credential.username.strip() or not credential.password.reveal():
            raise InvalidRegistry("credential.basic needs both username and password")
        return credential
    if not isinstance(credential, AzureServicePrincipal):
        raise InvalidRegistry(
            "registry kind acr needs a basic credential (admin user or ACR token) or an "
            "azure service principal"
        )
    # The tenant goes into the path of the AAD token URL: only a GUID or a domain name.
    if not (_is_guid(credential.tenant_id) or _TENANT_DOMAIN.match(credential.tenant_id)):
        raise InvalidRegistry(
            "credential.azure.tenant_id must be the directory (tenant) id, a GUID, or its "
            "domain such as contoso.onmicrosoft.com"
        )
    if not _is_guid(credential.client_id):
        raise InvalidRegistry("credential.azure.client_id must be the application (client) id GUID")
    if not credential.client_secret.reveal():
        raise InvalidRegistry("credential.azure.client_secret is required")
    return credential


def _is_guid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _https_url(url: str) -> tuple[str, str]:
    """Normalise and refuse a port: the cloud registries all serve on 443."""
    normalised, host = normalize_registry_url(url)
    if ":" in host:
        raise InvalidRegistry(f"url host {host} has a port: cloud registries serve on 443 only")
    return normalised, host
