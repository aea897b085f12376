"""Each token-endpoint kind's username conventions, default hosts and url overrides, and how
image references are matched to a record's host (docker.io <-> registry-1.docker.io)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pullbroker_client.registry.reference import parse_reference
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.hosts import canonical_image_host, expected_realm_hosts
from pullbroker_service.domain.kinds import (
    KindSettings,
    RegistrySpec,
    check_credential,
    validate_registry,
    validate_spec,
)
from pullbroker_service.domain.model import BasicCredential, GoogleServiceAccount, RegistryKind


def basic(username: str) -> BasicCredential:
    return BasicCredential(username, Secret("token-value"))


def spec(kind: RegistryKind, url: str = "") -> RegistrySpec:
    return RegistrySpec("acme", kind, url)


class TestUsernames:
    """Usernames follow the kind's conventions; messages say what is expected."""

    @pytest.mark.parametrize(
        ("kind", "username"),
        [
            (RegistryKind.DOCKER_HUB, "acmedev"),
            (RegistryKind.DOCKER_HUB, "a1b2"),
            (RegistryKind.GHCR, "octo-cat"),
            (RegistryKind.GHCR, "Octocat"),
            (RegistryKind.GHCR, "github-actions[bot]"),
            (RegistryKind.GHCR, "x" * 39),
            (RegistryKind.QUAY, "acme_dev"),
            (RegistryKind.QUAY, "acme+puller"),
            (RegistryKind.QUAY, "my.org+ci_bot"),
            (RegistryKind.QUAY, "$oauthtoken"),
            (RegistryKind.QUAY, "$app"),
            (RegistryKind.HARBOR, "alice"),
            (RegistryKind.HARBOR, "robot$ci"),
            (RegistryKind.HARBOR, "robot$team+puller"),
            (RegistryKind.HARBOR, "robotics"),
            (RegistryKind.GENERIC, "Anything Goes@example"),
        ],
    )
    def test_accepted(self, kind: RegistryKind, username: str) -> None:
        """Plain users and each kind's robot or token forms pass."""
        check_credential(kind, basic(username))

    @pytest.mark.parametrize(
        ("kind", "username", "fragment"),
        [
            (RegistryKind.DOCKER_HUB, "dev@acme.example", "not an e-mail address"),
            (RegistryKind.DOCKER_HUB, "AcmeDev", "4-30 lowercase letters and digits"),
            (RegistryKind.DOCKER_HUB, "abc", "4-30 lowercase letters and digits"),
            (RegistryKind.DOCKER_HUB, "acme-dev", "4-30 lowercase letters and digits"),
            (RegistryKind.GHCR, "octo@github.example", "not an e-mail address"),
            (RegistryKind.GHCR, "-octo", "not starting or ending with a hyphen"),
            (RegistryKind.GHCR, "octo--cat", "single hyphens"),
            (RegistryKind.GHCR, "x" * 40, "up to 39"),
            (RegistryKind.QUAY, "acme+", "NAMESPACE+ROBOT"),
            (RegistryKind.QUAY, "+puller", "NAMESPACE+ROBOT"),
            (RegistryKind.QUAY, "acme+9bot", "starts with a letter"),
            (RegistryKind.QUAY, "Acme+puller", "lowercase organization"),
            (RegistryKind.QUAY, "AcmeDev", "2-255 lowercase"),
            (RegistryKind.HARBOR, "robot$", "incomplete"),
            (RegistryKind.HARBOR, "robot$team+", "incomplete"),
            (RegistryKind.HARBOR, "robot$+puller", "incomplete"),
            (RegistryKind.HARBOR, "robot", "whose '$' was lost"),
            (RegistryKind.HARBOR, "robot+puller", "quote the name in your shell"),
        ],
    )
    def test_refused(self, kind: RegistryKind, username: str, fragment: str) -> None:
        """A username off the kind's conventions is InvalidRegistry saying what to use."""
        with pytest.raises(InvalidRegistry) as info:
            validate_registry(spec(kind, "https://reg.example"), basic(username))
        assert fragment in str(info.value)

    def test_username_is_never_echoed(self) -> None:
        """A token pasted into the username field does not come back in the error."""
        pasted = "ghp_0123456789abcdefABCDEF0123456789abcd"
        for kind in (RegistryKind.DOCKER_HUB, RegistryKind.QUAY):
            with pytest.raises(InvalidRegistry) as info:
                check_credential(kind, basic(pasted))
            assert pasted not in str(info.value)


class TestHostsAndOverrides:
    """Hosted kinds default to their host; an explicit url wins and becomes the host."""

    @pytest.mark.parametrize(
        ("kind", "host"),
        [
            (RegistryKind.DOCKER_HUB, "registry-1.docker.io"),
            (RegistryKind.PUBLIC, "registry-1.docker.io"),
            (RegistryKind.GHCR, "ghcr.io"),
            (RegistryKind.QUAY, "quay.io"),
        ],
    )
    def test_defaults(self, kind: RegistryKind, host: str) -> None:
        """No url means the kind's well-known host."""
        valid = validate_spec(spec(kind))
        assert (valid.spec.url, valid.host) == (f"https://{host}", host)

    @pytest.mark.parametrize(
        "kind",
        [RegistryKind.DOCKER_HUB, RegistryKind.GHCR, RegistryKind.QUAY, RegistryKind.PUBLIC],
    )
    def test_url_override(self, kind: RegistryKind) -> None:
        """A self-hosted or mirror url replaces the default, port and all."""
        valid = validate_spec(spec(kind, "https://quay.corp.example:8443/"))
        assert (valid.spec.url, valid.host) == (
            "https://quay.corp.example:8443",
            "quay.corp.example:8443",
        )

    def test_harbor_needs_its_url(self) -> None:
        """Harbor is always self-hosted: the url is required."""
        with pytest.raises(InvalidRegistry, match="url is required"):
            validate_spec(spec(RegistryKind.HARBOR))

    @pytest.mark.parametrize("url", ["docker.io", "https://index.docker.io", "https://Docker.IO"])
    def test_docker_hub_names(self, url: str) -> None:
        """docker.io and index.docker.io are stored as registry-1.docker.io."""
        assert validate_spec(spec(RegistryKind.DOCKER_HUB, url)).host == "registry-1.docker.io"


class TestImageHostMatching:
    """An image reference's host is compared with the record's in one canonical spelling."""

    @pytest.mark.parametrize(
        ("image", "host"),
        [
            ("nginx", "registry-1.docker.io"),
            ("library/nginx:1.27", "registry-1.docker.io"),
            ("docker.io/library/nginx", "registry-1.docker.io"),
            ("index.docker.io/library/nginx", "registry-1.docker.io"),
            ("registry-1.docker.io/library/nginx", "registry-1.docker.io"),
            ("ghcr.io/acme/app:v1", "ghcr.io"),
            ("Quay.io/acme/app", "quay.io"),
            ("quay.io:443/acme/app", "quay.io"),
            ("127.0.0.1:5000/team/app", "127.0.0.1:5000"),
        ],
    )
    def test_reference_hosts(self, image: str, host: str) -> None:
        """Docker Hub names, case and the default port all reduce to the record host."""
        assert canonical_image_host(parse_reference(image.lower()).registry_host) == host

    def test_docker_hub_record_matches_docker_io_refs(self) -> None:
        """A docker_hub record's host equals the host of docker.io/library/nginx."""
        record_host = validate_spec(spec(RegistryKind.DOCKER_HUB)).host
        ref = parse_reference("docker.io/library/nginx")
        assert (ref.repository, canonical_image_host(ref.registry_host)) == (
            "library/nginx",
            record_host,
        )

    def test_known_token_realms(self) -> None:
        """Well-known registries pin their token realm; other hosts do not."""
        assert expected_realm_hosts("registry-1.docker.io") == frozenset({"auth.docker.io"})
        assert expected_realm_hosts("ghcr.io") == frozenset({"ghcr.io"})
        assert expected_realm_hosts("quay.io") == frozenset({"quay.io"})
        assert expected_realm_hosts("harbor.corp.example") is None


@pytest.fixture(scope="module")
def google_key() -> GoogleServiceAccount:
    """A service-account key whose token_uri is a local fixture endpoint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    document = {
        "type": "service_account",
        "private_key": pem,
        "client_email": "puller@proj.iam.gserviceaccount.com",
        "token_uri": "https://127.0.0.1:8443/token",
    }
    return GoogleServiceAccount(Secret(json.dumps(document)))


class TestCloudKindsPlugged:
    """The cloud kinds' validators (cloud_kinds.py) run inside validate_registry."""

    def test_gar_url_from_region(self) -> None:
        """gar accepts a region alone and derives its host."""
        valid = validate_spec(RegistrySpec("g", RegistryKind.GAR, "", region="europe-west4"))
        assert (valid.host, valid.spec.region) == ("europe-west4-docker.pkg.dev", "europe-west4")

    def test_acr_host_shape(self) -> None:
        """acr refuses a host that is not <name>.azurecr.io."""
        with pytest.raises(InvalidRegistry, match="login server"):
            validate_spec(RegistrySpec("a", RegistryKind.ACR, "https://acr.example"))

    def test_google_token_uri_needs_allowing(self, google_key: GoogleServiceAccount) -> None:
        """A key naming a non-Google token endpoint passes only where settings allow it."""
        gcr = RegistrySpec("g", RegistryKind.GCR, "")
        with pytest.raises(InvalidRegistry, match="not an allowed token endpoint"):
            validate_registry(gcr, google_key)
        widened = KindSettings(google_oauth_hosts=frozenset({"127.0.0.1:8443"}))
        assert validate_registry(gcr, google_key, widened).host == "gcr.io"
        check_credential(RegistryKind.GCR, google_key, url="https://gcr.io", settings=widened)
