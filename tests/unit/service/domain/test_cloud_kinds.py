"""Strict validation of the cloud registry kinds (ecr, gcr, gar, acr)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pullbroker_client.secret import Secret
from pullbroker_service.domain.cloud_kinds import (
    ValidatedTarget,
    check_google_key,
    parse_ecr_host,
    validate_acr,
    validate_ecr,
    validate_gar,
    validate_gcr,
)
from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    GoogleServiceAccount,
    RegistryKind,
)

ECR_HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
AWS_KEYS = AwsCredential("AKIAIOSFODNN7EXAMPLE", Secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCY"))
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0c9e6f4c-7b0e-4a52-8bb0-5d7f3e1f9a11"


def spec(kind: RegistryKind, url: str, region: str = "") -> RegistrySpec:
    return RegistrySpec(display_name="cloud", kind=kind, url=url, region=region)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def google_key(pem: str, **changes: object) -> GoogleServiceAccount:
    document: dict[str, object] = {
        "type": "service_account",
        "private_key_id": "abc123",
        "private_key": pem,
        "client_email": "puller@proj.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    document.update(changes)
    return GoogleServiceAccount(Secret(json.dumps(document)))


class TestEcrHosts:
    @pytest.mark.parametrize(
        ("host", "region", "partition", "fips"),
        [
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com", "us-east-1", "aws", False),
            ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "cn-north-1", "aws-cn", False),
            ("123456789012.dkr.ecr-fips.us-west-2.amazonaws.com", "us-west-2", "aws", True),
            (
                "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
                "us-gov-west-1",
                "aws-us-gov",
                False,
            ),
        ],
    )
    def test_well_formed_hosts_parse(
        self, host: str, region: str, partition: str, fips: bool
    ) -> None:
        """Account, region, partition and FIPS come out of a well-formed ECR host."""
        parsed = parse_ecr_host(host)
        assert (parsed.account, parsed.region, parsed.partition, parsed.fips) == (
            "123456789012",
            region,
            partition,
            fips,
        )

    @pytest.mark.parametrize(
        "host",
        [
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",  # 11-digit account
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
            "123456789012.dkr.ecr.useast1.amazonaws.com",  # not a region
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com",  # China region outside .cn
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.cn",  # .cn for a non-China region
            "123456789012.dkr.ecr-fips.eu-west-1.amazonaws.com",  # no FIPS outside the US
            "public.ecr.aws",
        ],
    )
    def test_ill_formed_hosts_are_refused(self, host: str) -> None:
        """Hosts that are not a private ECR registry are refused."""
        with pytest.raises(InvalidRegistry):
            parse_ecr_host(host)


class TestValidateEcr:
    def test_region_is_derived_from_the_host(self) -> None:
        """An empty region becomes the host's; the url is normalised to https://host."""
        target = validate_ecr(spec(RegistryKind.ECR, ECR_HOST), AWS_KEYS)
        assert target == ValidatedTarget(f"https://{ECR_HOST}", ECR_HOST, "eu-west-1")

    def test_region_must_match_the_host(self) -> None:
        """A region other than the host's is refused, naming the right one."""
        with pytest.raises(InvalidRegistry, match="eu-west-1"):
            validate_ecr(spec(RegistryKind.ECR, ECR_HOST, "us-east-1"), AWS_KEYS)

    def test_port_is_refused(self) -> None:
        """Cloud registries serve on 443 only."""
        with pytest.raises(InvalidRegistry, match="port"):
            validate_ecr(spec(RegistryKind.ECR, f"{ECR_HOST}:8443"), AWS_KEYS)

    @pytest.mark.parametrize(
        ("credential", "message"),
        [
            (BasicCredential("u", Secret("p")), "aws credential"),
            (AwsCredential("short", Secret("s")), "access_key_id"),
            (AwsCredential("AKIAIOSFODNN7EXAMPLE", Secret("")), "secret_access_key"),
            (
                AwsCredential("AKIAIOSFODNN7EXAMPLE", Secret("s"), "arn:aws:iam::1:role/x"),
                "role_arn",
            ),
            (
                AwsCredential(
                    "AKIAIOSFODNN7EXAMPLE", Secret("s"), "arn:aws-cn:iam::123456789012:role/x"
                ),
                "partition",
            ),
        ],
    )
    def test_bad_credentials_are_refused(self, credential: object, message: str) -> None:
        """Wrong type, malformed key id, empty secret, bad or foreign-partition role ARN."""
        with pytest.raises(InvalidRegistry, match=message):
            validate_ecr(spec(RegistryKind.ECR, ECR_HOST), credential)  # type: ignore[arg-type]

    def test_role_arn_in_the_partition_is_accepted(self) -> None:
        """A role ARN of the registry's partition passes."""
        cred = AwsCredential(
            "AKIAIOSFODNN7EXAMPLE", Secret("s"), "arn:aws:iam::210987654321:role/ci/puller"
        )
        assert validate_ecr(spec(RegistryKind.ECR, ECR_HOST), cred).region == "eu-west-1"

    def test_no_credential_checks_the_spec_only(self) -> None:
        """An update that keeps the stored secret (None) still gets its host checked."""
        with pytest.raises(InvalidRegistry):
            validate_ecr(spec(RegistryKind.ECR, "registry.example.com"), None)


class TestValidateGoogle:
    @pytest.mark.parametrize("host", ["gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io"])
    def test_gcr_hosts(self, host: str, rsa_pem: str) -> None:
        """The four Container Registry hosts pass."""
        assert validate_gcr(spec(RegistryKind.GCR, host), google_key(rsa_pem)).host == host

    def test_gcr_defaults_to_gcr_io(self, rsa_pem: str) -> None:
        """An empty url means gcr.io."""
        assert validate_gcr(spec(RegistryKind.GCR, ""), google_key(rsa_pem)).url == "https://gcr.io"

    @pytest.mark.parametrize("host", ["gcr.io.evil.example", "mirror.gcr.io", "us-docker.pkg.dev"])
    def test_other_hosts_are_not_gcr(self, host: str, rsa_pem: str) -> None:
        """Other hosts are refused for kind gcr."""
        with pytest.raises(InvalidRegistry):
            validate_gcr(spec(RegistryKind.GCR, host), google_key(rsa_pem))

    @pytest.mark.parametrize(
        ("url", "region", "host"),
        [
            ("us-central1-docker.pkg.dev", "", "us-central1-docker.pkg.dev"),
            ("", "europe-west4", "europe-west4-docker.pkg.dev"),
            ("https://us-docker.pkg.dev", "us", "us-docker.pkg.dev"),
        ],
    )
    def test_gar_hosts_and_regions(self, url: str, region: str, host: str, rsa_pem: str) -> None:
        """gar derives host from region or region from host."""
        target = validate_gar(spec(RegistryKind.GAR, url, region), google_key(rsa_pem))
        assert target.host == host
        assert target.region == host.removesuffix("-docker.pkg.dev")

    @pytest.mark.parametrize(
        ("url", "region"),
        [
            ("us-central1-docker.pkg.dev", "europe-west4"),  # mismatch
            ("", "Europe West"),  # not a region
            ("docker.pkg.dev", ""),
            ("", ""),
        ],
    )
    def test_gar_bad_region_or_host(self, url: str, region: str, rsa_pem: str) -> None:
        """Mismatched, malformed or missing regions and hosts are refused."""
        with pytest.raises(InvalidRegistry):
            validate_gar(spec(RegistryKind.GAR, url, region), google_key(rsa_pem))

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"type": "authorized_user"}, "service_account"),
            ({"client_email": "not-an-email"}, "client_email"),
            (
                {"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"},
                "parse",
            ),
            ({"token_uri": "http://oauth2.googleapis.com/token"}, "https"),
            ({"token_uri": "https://169.254.169.254/token"}, "not an allowed token endpoint"),
            ({"token_uri": "https://oauth2.googleapis.com.evil.example/token"}, "not an allowed"),
        ],
    )
    def test_bad_keys_are_refused(
        self, changes: dict[str, object], message: str, rsa_pem: str
    ) -> None:
        """Key files that are not usable Google service-account keys are refused."""
        with pytest.raises(InvalidRegistry, match=message):
            check_google_key(google_key(rsa_pem, **changes))

    def test_ec_key_is_refused(self) -> None:
        """Google service-account keys are RSA; an EC key is refused."""
        pem = _pem(ec.generate_private_key(ec.SECP256R1()))
        with pytest.raises(InvalidRegistry, match="RSA"):
            check_google_key(google_key(pem))

    def test_not_json_does_not_echo_the_text(self) -> None:
        """A key that is not JSON is refused without quoting it."""
        with pytest.raises(InvalidRegistry) as caught:
            check_google_key(GoogleServiceAccount(Secret("secret-canary {")))
        assert "secret-canary" not in str(caught.value)

    def test_allowed_hosts_can_be_widened(self, rsa_pem: str) -> None:
        """A test or deployment may allow another token host explicitly."""
        key = google_key(rsa_pem, token_uri="https://127.0.0.1:8443/token")
        info = check_google_key(key, frozenset({"127.0.0.1:8443"}))
        assert info.token_uri == "https://127.0.0.1:8443/token"
        assert info.private_key_id == "abc123"


class TestValidateAcr:
    @pytest.mark.parametrize(
        "host", ["contoso.azurecr.io", "a1b2c.azurecr.io", "x" * 50 + ".azurecr.io"]
    )
    def test_names_of_5_to_50_alphanumerics(self, host: str) -> None:
        """Login servers with 5-50 letters and digits pass."""
        assert (
            validate_acr(spec(RegistryKind.ACR, host), BasicCredential("u", Secret("p"))).host
            == host
        )

    @pytest.mark.parametrize(
        "host",
        [
            "abcd.azurecr.io",
            "x" * 51 + ".azurecr.io",
            "con-toso.azurecr.io",
            "contoso.azurecr.io.evil.example",
        ],
    )
    def test_other_names_are_refused(self, host: str) -> None:
        """Too short, too long, dashes, or another domain are refused."""
        with pytest.raises(InvalidRegistry):
            validate_acr(spec(RegistryKind.ACR, host), BasicCredential("u", Secret("p")))

    def test_service_principal_passes(self) -> None:
        """A GUID tenant (or a domain) and a GUID client id pass."""
        for tenant in (TENANT, "contoso.onmicrosoft.com"):
            sp = AzureServicePrincipal(tenant, CLIENT, Secret("s"))
            assert validate_acr(spec(RegistryKind.ACR, "contoso.azurecr.io"), sp).region == ""

    @pytest.mark.parametrize(
        ("tenant", "client", "message"),
        [
            ("../../evil", CLIENT, "tenant_id"),
            (TENANT + "/x", CLIENT, "tenant_id"),
            (TENANT, "not-a-guid", "client_id"),
        ],
    )
    def test_bad_principals_are_refused(self, tenant: str, client: str, message: str) -> None:
        """A tenant that could bend the AAD URL path, or a malformed client id, is refused."""
        with pytest.raises(InvalidRegistry, match=message):
            validate_acr(
                spec(RegistryKind.ACR, "contoso.azurecr.io"),
                AzureServicePrincipal(tenant, client, Secret("s")),
            )

    def test_region_is_refused(self) -> None:
        """acr has no region."""
        with pytest.raises(InvalidRegistry, match="region"):
            validate_acr(spec(RegistryKind.ACR, "contoso.azurecr.io", "westeurope"), None)
