"""Every token-endpoint kind end to end: add (validated), test, pull; each failure its own.

The real distribution registry and our token server stand in for Docker Hub, GHCR, Quay,
Harbor and a generic registry: each kind's record points at it with an explicit url, and its
users are named by the kind's conventions (quay `acme+puller`, harbor `robot$team+puller`).
"""

from __future__ import annotations

import re

import grpc
import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.api.status import status_for
from pullbroker_service.domain.errors import (
    CredentialRejected,
    InvalidRegistry,
    PullNotAllowed,
    RegistryUnreachable,
)
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import AuthKind, BasicCredential, RegistryKind

from tests.harness.canary import find_in_text, new_canary
from tests.harness.certs import TestCA
from tests.harness.process import free_port
from tests.integration.kinds.world import (
    KIND_USERS,
    TOKEN_KINDS,
    Seeded,
    World,
    manifest_digest,
)

pytestmark = pytest.mark.integration

# What each kind's messages add to the generic ones: proof the kind's advice is given.
REJECTED_HINT = {
    RegistryKind.DOCKER_HUB: "Docker ID (not the e-mail address)",
    RegistryKind.GHCR: "read:packages",
    RegistryKind.QUAY: "NAMESPACE+ROBOT",
    RegistryKind.HARBOR: "robot$",
    RegistryKind.GENERIC: "check the username and password/token",
}
NOT_ALLOWED_HINT = {
    RegistryKind.DOCKER_HUB: "does not say which",
    RegistryKind.GHCR: "Manage access",
    RegistryKind.QUAY: "Read permission",
    RegistryKind.HARBOR: "add the user or robot to the project",
    RegistryKind.GENERIC: "grant it pull access",
}

kinds = pytest.mark.parametrize("kind", TOKEN_KINDS, ids=lambda k: k.value)


class TestAddTestPull:
    """A good credential of each kind is added, tests ok, and its token pulls."""

    @kinds
    async def test_add_test_and_pull(
        self, world: World, seeded: Seeded, kind: RegistryKind
    ) -> None:
        """create(test=True) validates and probes; TestConnection is ok; the token GETs v1."""
        registry = seeded.registry
        puller = KIND_USERS[kind].puller
        record = await world.add(
            kind, registry.url, registry.ca_pem, seeded.credential(puller), test=True
        )
        assert (record.kind, record.host, record.username) == (kind, registry.host, puller)
        result = await world.registries.test("reg", None, None, "team/app")
        assert (result.outcome, result.auth_scheme) == ("ok", "bearer"), result.message
        assert "allows pull on team/app" in result.message
        token = await world.pull_token(f"{registry.host}/team/app:v1")
        assert (token.auth_kind, token.scope) == (AuthKind.BEARER, "repository:team/app:pull")
        assert await manifest_digest(registry, token, "team/app") == seeded.app_digest

    @kinds
    async def test_unsaved_credential_tests_ok(
        self, world: World, seeded: Seeded, kind: RegistryKind
    ) -> None:
        """TestConnection of a spec not yet saved classifies it without storing anything."""
        registry = seeded.registry
        spec = RegistrySpec("new", kind, registry.url, registry_ca_pem=registry.ca_pem)
        credential = seeded.credential(KIND_USERS[kind].puller)
        result = await world.registries.test(None, spec, credential, "team/app")
        assert result.outcome == "ok", result.message
        assert await world.secrets.list_keys() == []


class TestFailuresPerKind:
    """Wrong credential, missing pull permission and a dead host differ in error and outcome."""

    @kinds
    async def test_wrong_credential(self, world: World, seeded: Seeded, kind: RegistryKind) -> None:
        """A wrong password is CredentialRejected with the kind's advice, and never echoed."""
        registry = seeded.registry
        wrong = new_canary("wrong")
        credential = BasicCredential(KIND_USERS[kind].puller, Secret(wrong))
        await world.add(kind, registry.url, registry.ca_pem, credential)
        with pytest.raises(CredentialRejected) as info:
            await world.pull_token(f"{registry.host}/team/app:v1")
        message = str(info.value)
        assert f"registry {registry.host} rejected the credential of registry 'reg'" in message
        assert REJECTED_HINT[kind] in message
        assert not find_in_text(message, wrong)
        assert status_for(info.value) is grpc.StatusCode.FAILED_PRECONDITION
        result = await world.registries.test("reg", None, None, "team/app")
        assert result.outcome == "credential_rejected"
        assert REJECTED_HINT[kind] in result.message

    @kinds
    async def test_without_pull_permission(
        self, world: World, seeded: Seeded, kind: RegistryKind
    ) -> None:
        """A valid credential that may not pull team/app is PullNotAllowed / not_allowed."""
        registry = seeded.registry
        stranger = KIND_USERS[kind].stranger
        await world.add(kind, registry.url, registry.ca_pem, seeded.credential(stranger))
        with pytest.raises(PullNotAllowed) as info:
            await world.pull_token(f"{registry.host}/team/app:v1")
        message = str(info.value)
        assert "may not pull team/app" in message
        assert NOT_ALLOWED_HINT[kind] in message
        assert status_for(info.value) is grpc.StatusCode.PERMISSION_DENIED
        result = await world.registries.test("reg", None, None, "team/app")
        assert (result.outcome, result.auth_scheme) == ("not_allowed", "bearer")
        # The same credential is fine for the registry as a whole: it is not "rejected".
        whole = await world.registries.test("reg", None, None, "")
        assert whole.outcome == "ok", whole.message

    @kinds
    async def test_unreachable_host(
        self, world: World, test_ca: TestCA, seeded: Seeded, kind: RegistryKind
    ) -> None:
        """Nothing listening is RegistryUnreachable / unreachable, naming the address."""
        dead = f"127.0.0.1:{free_port()}"
        credential = seeded.credential(KIND_USERS[kind].puller)
        await world.add(kind, f"https://{dead}", test_ca.pem, credential)
        with pytest.raises(RegistryUnreachable) as info:
            await world.pull_token(f"{dead}/team/app:v1")
        assert f"cannot connect to {dead}" in str(info.value)
        assert status_for(info.value) is grpc.StatusCode.UNAVAILABLE
        result = await world.registries.test("reg", None, None, "team/app")
        assert result.outcome == "unreachable"
        assert result.latency_seconds > 0


class TestUsernameConventionsAtCreate:
    """A username breaking its kind's conventions is refused before anything is stored."""

    @pytest.mark.parametrize(
        ("kind", "username", "fragment"),
        [
            (RegistryKind.DOCKER_HUB, "dev@acme.example", "not an e-mail address"),
            (RegistryKind.GHCR, "-octo", "GitHub user name"),
            (RegistryKind.QUAY, "acme+", "NAMESPACE+ROBOT"),
            (RegistryKind.HARBOR, "robot+puller", "whose '$' was lost"),
        ],
    )
    async def test_refused(
        self, world: World, seeded: Seeded, kind: RegistryKind, username: str, fragment: str
    ) -> None:
        """The message says what the kind expects; no record, no secret, no upstream call."""
        registry = seeded.registry
        credential = BasicCredential(username, Secret("pw"))
        with pytest.raises(InvalidRegistry, match=re.escape(fragment)):
            await world.add(kind, registry.url, registry.ca_pem, credential, test=True)
        assert await world.store.list_page(10, None) == []
        assert await world.secrets.list_keys() == []
        assert registry.token_server.requests == []


class TestDockerHubConventions:
    """docker_hub spells one-component names library/NAME."""

    async def test_probe_of_a_single_name_uses_library(self, world: World, seeded: Seeded) -> None:
        """Testing repository `hello` asks for library/hello, which the puller may read."""
        registry = seeded.registry
        credential = seeded.credential(KIND_USERS[RegistryKind.DOCKER_HUB].puller)
        await world.add(RegistryKind.DOCKER_HUB, registry.url, registry.ca_pem, credential)
        result = await world.registries.test("reg", None, None, "hello")
        assert result.outcome == "ok", result.message
        assert "library/hello" in result.message
        scopes = [r.scopes for r in registry.token_server.requests]
        assert scopes == [("repository:library/hello:pull",)]

    async def test_library_image_pulls(self, world: World, seeded: Seeded) -> None:
        """An image under library/ is pulled with a token minted for exactly that repository."""
        registry = seeded.registry
        credential = seeded.credential(KIND_USERS[RegistryKind.DOCKER_HUB].puller)
        await world.add(RegistryKind.DOCKER_HUB, registry.url, registry.ca_pem, credential)
        token = await world.pull_token(f"{registry.host}/library/hello:v1")
        assert token.scope == "repository:library/hello:pull"
        assert await manifest_digest(registry, token, "library/hello") == seeded.library_digest
