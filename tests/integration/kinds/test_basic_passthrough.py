"""A Basic-only registry (htpasswd): refused by default, then allowed with audited pass-through."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.api.status import status_for
from pullbroker_service.domain.errors import BasicNotAllowed, FailedPrecondition
from pullbroker_service.domain.model import AuthKind, BasicCredential, RegistryKind
from structlog.testing import capture_logs

from tests.harness.canary import find_in_text, new_canary
from tests.harness.certs import TestCA
from tests.harness.images import build_image, push_image
from tests.harness.registry import HtpasswdRegistry
from tests.integration.kinds.world import ADMIN, NODE, World, manifest_digest

pytestmark = pytest.mark.integration

CAROL = "carol"


@dataclass(frozen=True)
class BasicWorld:
    """The Basic-only registry and the digest of team/app:v1 in it."""

    registry: HtpasswdRegistry
    digest: str

    @property
    def carol(self) -> BasicCredential:
        return BasicCredential(CAROL, Secret(self.registry.users[CAROL]))


@pytest.fixture(scope="module")
def basic_only(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[BasicWorld]:
    """An htpasswd registry holding team/app:v1, pushed as carol."""
    registry = HtpasswdRegistry(tmp_path_factory.mktemp("basic-only"), test_ca)
    registry.add_user(CAROL, new_canary(CAROL))
    registry.start()
    try:
        image = build_image(tmp_path_factory.mktemp("basic-layouts"), "app", [1024])
        password = registry.users[CAROL]
        digest = push_image(image, registry, "team/app", "v1", username=CAROL, password=password)
        yield BasicWorld(registry, digest)
    finally:
        registry.stop()


class TestBasicOnly:
    """Pass-through is off unless the record says so; when on, every hand-out is audited."""

    async def test_refused_without_passthrough(self, world: World, basic_only: BasicWorld) -> None:
        """BasicNotAllowed (FAILED_PRECONDITION) says how to allow it; the probe says so too."""
        registry = basic_only.registry
        with pytest.raises(FailedPrecondition, match="connection test failed"):
            await world.add(
                RegistryKind.GENERIC, registry.url, registry.ca_pem, basic_only.carol, test=True
            )
        await world.add(RegistryKind.GENERIC, registry.url, registry.ca_pem, basic_only.carol)
        with pytest.raises(BasicNotAllowed) as info:
            await world.pull_token(f"{registry.host}/team/app:v1")
        assert "set allow_basic_passthrough" in str(info.value)
        assert status_for(info.value) is grpc.StatusCode.FAILED_PRECONDITION
        probe = await world.registries.test("reg", None, None, "team/app")
        assert (probe.outcome, probe.auth_scheme) == ("unsupported_auth", "basic")

    async def test_allowed_after_update(self, world: World, basic_only: BasicWorld) -> None:
        """Turning pass-through on hands out BASIC, shows on the record, and audits each use."""
        registry = basic_only.registry
        record = await world.add(
            RegistryKind.GENERIC, registry.url, registry.ca_pem, basic_only.carol
        )
        with pytest.raises(BasicNotAllowed):
            await world.pull_token(f"{registry.host}/team/app:v1")
        updated = await world.registries.update(
            ADMIN,
            "reg",
            record.etag,
            display_name=None,
            registry_ca_pem=None,
            allow_basic_passthrough=True,
            credential=None,
        )
        assert (await world.registries.get("reg")).allow_basic_passthrough is True
        assert updated.allow_basic_passthrough is True
        probe = await world.registries.test("reg", None, None, "team/app")
        assert (probe.outcome, probe.auth_scheme) == ("ok", "basic"), probe.message
        with capture_logs() as logs:
            token = await world.pull_token(f"{registry.host}/team/app:v1")
        assert (token.auth_kind, token.username) == (AuthKind.BASIC, CAROL)
        audits = [e for e in logs if e["event"] == "basic_passthrough_used"]
        assert [(a["identity"], a["registry_id"], a["repository"]) for a in audits] == [
            (NODE.name, record.id, "team/app")
        ]
        assert not find_in_text(repr(logs), registry.users[CAROL])
        assert await manifest_digest(registry, token, "team/app") == basic_only.digest
