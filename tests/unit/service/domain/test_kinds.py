"""Registry kind validation: required fields, defaults, URL/host normalisation, CA bundles."""

from __future__ import annotations

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.kinds import (
    RegistrySpec,
    check_credential,
    validate_registry,
    validate_spec,
)
from pullbroker_service.domain.model import (
    AwsCredential,
    BasicCredential,
    GoogleServiceAccount,
    RegistryKind,
)

from tests.harness.certs import TestCA

BASIC = BasicCredential("robot", Secret("pw"))


def spec(
    kind: RegistryKind = RegistryKind.GENERIC,
    url: str = "https://reg.example",
    *,
    display_name: str = "acme",
    registry_ca_pem: str = "",
    region: str = "",
) -> RegistrySpec:
    return RegistrySpec(display_name, kind, url, registry_ca_pem=registry_ca_pem, region=region)


class TestUrlNormalisation:
    """Registry URLs become https://host[:port] and hosts become lowercase host[:port]."""

    @pytest.mark.parametrize(
        ("url", "want_url", "want_host"),
        [
            ("https://Reg.Example.COM", "https://reg.example.com", "reg.example.com"),
            ("https://reg.example:443/", "https://reg.example", "reg.example"),
            ("https://127.0.0.1:5000", "https://127.0.0.1:5000", "127.0.0.1:5000"),
            ("127.0.0.1:5000", "https://127.0.0.1:5000", "127.0.0.1:5000"),
            ("https://reg.example/v2/", "https://reg.example", "reg.example"),
            ("https://[::1]:5000", "https://[::1]:5000", "[::1]:5000"),
            ("https://docker.io", "https://registry-1.docker.io", "registry-1.docker.io"),
        ],
    )
    def test_normalises(self, url: str, want_url: str, want_host: str) -> None:
        """Scheme, case, default port, trailing /v2/ and the docker.io alias are normalised."""
        valid = validate_spec(spec(url=url))
        assert (valid.spec.url, valid.host) == (want_url, want_host)

    @pytest.mark.parametrize(
        ("url", "fragment"),
        [
            ("http://reg.example", "use https; registries with a private CA: pass --registry-ca"),
            ("ftp://reg.example", "must be an https:// URL"),
            ("https://reg.example/some/path", "without a path"),
            ("https://reg.example?x=1", "without a query"),
            ("https://reg.example:99999", "invalid port"),
            ("https://169.254.169.254", "link-local"),
            ("https://metadata.google.internal", "metadata service"),
            ("https://bad_host!", "not a valid host name"),
        ],
    )
    def test_refuses(self, url: str, fragment: str) -> None:
        """Unusable or unsafe URLs are refused with a message saying what to do."""
        with pytest.raises(InvalidRegistry, match="url") as info:
            validate_spec(spec(url=url))
        assert fragment in str(info.value)

    def test_userinfo_is_refused_without_echoing_it(self) -> None:
        """A URL carrying a password is refused and the password is not repeated."""
        with pytest.raises(InvalidRegistry) as info:
            validate_spec(spec(url="https://bob:hunter2@reg.example"))
        assert "hunter2" not in str(info.value)
        assert "send a credential" in str(info.value)


class TestKindTable:
    """Each kind has its defaults and its required fields."""

    def test_generic_needs_a_url(self) -> None:
        """generic has no default host: the url is required and the message names it."""
        with pytest.raises(InvalidRegistry, match="url is required"):
            validate_registry(spec(url=""), BASIC)

    def test_public_defaults_to_docker_hub_and_takes_no_credential(self) -> None:
        """public defaults to registry-1.docker.io and is anonymous."""
        valid = validate_registry(spec(RegistryKind.PUBLIC, url=""), None)
        assert (valid.spec.url, valid.host) == (
            "https://registry-1.docker.io",
            "registry-1.docker.io",
        )
        with pytest.raises(InvalidRegistry, match="anonymous"):
            check_credential(RegistryKind.PUBLIC, BASIC)

    @pytest.mark.parametrize(
        ("kind", "host"),
        [
            (RegistryKind.DOCKER_HUB, "registry-1.docker.io"),
            (RegistryKind.GHCR, "ghcr.io"),
            (RegistryKind.QUAY, "quay.io"),
            (RegistryKind.GCR, "gcr.io"),
        ],
    )
    def test_default_hosts(self, kind: RegistryKind, host: str) -> None:
        """Hosted kinds fill in their well-known host."""
        assert validate_spec(spec(kind, url="")).host == host

    def test_ecr_derives_region_from_host(self) -> None:
        """An ECR url fixes the region; a conflicting region is refused."""
        url = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        assert validate_spec(spec(RegistryKind.ECR, url=url)).spec.region == "eu-west-1"
        with pytest.raises(InvalidRegistry, match="does not match"):
            validate_spec(spec(RegistryKind.ECR, url=url, region="us-east-1"))

    def test_region_refused_for_kinds_without_one(self) -> None:
        """region means nothing for generic and is refused rather than silently ignored."""
        with pytest.raises(InvalidRegistry, match="region is not used"):
            validate_spec(spec(region="eu-west-1"))


class TestCredentials:
    """Credentials are required except for public, of the right type, and complete."""

    def test_missing_credential(self) -> None:
        """generic without a credential names what is needed."""
        with pytest.raises(InvalidRegistry, match=r"credential is required .*basic"):
            validate_registry(spec(), None)

    @pytest.mark.parametrize(
        ("credential", "field"),
        [
            (BasicCredential("", Secret("pw")), "credential.basic.username"),
            (BasicCredential("robot", Secret("")), "credential.basic.password"),
        ],
    )
    def test_missing_fields_are_named(self, credential: BasicCredential, field: str) -> None:
        """An empty required field is named in the message."""
        with pytest.raises(InvalidRegistry, match=field):
            validate_registry(spec(), credential)

    def test_wrong_type(self) -> None:
        """An AWS key for a generic registry is refused, naming both types."""
        with pytest.raises(InvalidRegistry, match="needs a basic credential, not aws"):
            check_credential(RegistryKind.GENERIC, AwsCredential("AKIA", Secret("s")))

    def test_gcr_takes_a_service_account(self) -> None:
        """gcr accepts a service-account key."""
        check_credential(RegistryKind.GCR, GoogleServiceAccount(Secret('{"type": "x"}')))


class TestDisplayNamesAndCa:
    """Display names follow [a-z][a-z0-9-]{0,62}; CA bundles must parse."""

    @pytest.mark.parametrize("name", ["a", "acme-ghcr", "x" * 63, "a1-2"])
    def test_good_names(self, name: str) -> None:
        """Lowercase names up to 63 characters are accepted."""
        assert validate_spec(spec(display_name=name)).spec.display_name == name

    @pytest.mark.parametrize("name", ["", "Acme", "1abc", "-abc", "a_b", "x" * 64, "a b"])
    def test_bad_names(self, name: str) -> None:
        """Empty, uppercase, digit-first, underscore and over-long names are refused."""
        with pytest.raises(InvalidRegistry, match="display_name"):
            validate_spec(spec(display_name=name))

    def test_ca_bundle_parses(self, test_ca: TestCA) -> None:
        """A real CA certificate is accepted; garbage is refused naming the field."""
        validate_spec(spec(registry_ca_pem=test_ca.pem))
        with pytest.raises(InvalidRegistry, match="registry_ca_pem"):
            validate_spec(spec(registry_ca_pem="-----BEGIN CERTIFICATE-----\nnope\n"))
