"""Rotation cannot break the fleet: the registry is asked about a new credential before it is
put in force, and the version it replaced stays for a rollback. Real harness registry and
token server; the node side asks for a token and GETs a manifest with it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerCallError, BrokerClient, basic_credential
from pullbroker_client.secret import Secret

from tests.harness.canary import find_in_text, find_in_tree, new_canary
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, seed_image
from tests.integration.lifecycle.conftest import LifecycleBroker
from tests.integration.lifecycle.node import add_registry
from tests.integration.lifecycle.test_cli import cli

pytestmark = pytest.mark.integration

_ACCEPT = "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"


def pulls(broker: LifecycleBroker, registry: TokenAuthRegistry, image: Any) -> bool:
    """A node gets a fresh token (no cache) and the registry serves the manifest with it."""
    with broker.client("node") as node:
        try:
            token = node.issue_pull_token(image.reference, force_refresh=True)
        except BrokerCallError:
            return False
    headers = {"Authorization": f"Bearer {token.token.reveal()}", "Accept": _ACCEPT}
    with httpx.Client(verify=registry.ssl_context(), trust_env=False, timeout=10) as http:
        url = f"{registry.url}/v2/{image.repository}/manifests/{image.tag}"
        return http.get(url, headers=headers).status_code == 200


def rotate(admin: BrokerClient, name: str, password: str, *, skip_test: bool = False) -> Any:
    current = admin.get_registry(name)
    target = registry_pb2.Registry(name=current.name, etag=current.etag)
    credential = basic_credential(ALICE, Secret(password))
    return admin.update_registry(target, (), credential, skip_test=skip_test)


@pytest.fixture
def world(
    lifecycle_broker: LifecycleBroker,
    make_token_registry: Callable[..., TokenAuthRegistry],
    tmp_path: Path,
) -> tuple[LifecycleBroker, TokenAuthRegistry, Any]:
    """A private registry with team/app:v1 and a record `team` for alice on it."""
    registry = make_token_registry()
    image = seed_image(registry, tmp_path / "seed", "team/app", "v1", [512])
    with lifecycle_broker.client() as admin:
        add_registry(admin, "team", registry, ALICE)
    assert pulls(lifecycle_broker, registry, image)
    return lifecycle_broker, registry, image


class TestTestedRotation:
    """A credential the registry refuses is never put in force."""

    def test_rejected_rotation_leaves_pulls_working(self, world: Any) -> None:
        """Wrong password: FAILED_PRECONDITION with the registry's reason; the record is as
        it was and nodes still get tokens that pull."""
        broker, registry, image = world
        wrong = new_canary("wrong")
        with broker.client() as admin:
            before = admin.get_registry("team")
            with pytest.raises(BrokerCallError) as refused:
                rotate(admin, "team", wrong)
            after = admin.get_registry("team")
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "rejected the credential" in refused.value.message
        assert "keeps its current one" in refused.value.message
        assert not find_in_text(refused.value.message, wrong)
        assert (after.etag, after.credential_version) == (before.etag, before.credential_version)
        assert pulls(broker, registry, image)
        assert find_in_tree(broker.home.root, wrong) == []

    def test_skip_test_accepts_and_rollback_restores(self, world: Any) -> None:
        """skip_test puts a wrong password in force (pulls fail); a rollback brings the old
        one back (pulls work), once; it is audited."""
        broker, registry, image = world
        with broker.client() as admin:
            bad = rotate(admin, "team", new_canary("wrong"), skip_test=True)
            assert bad.credential_version == 2
            assert not pulls(broker, registry, image)
            rolled = admin.rollback_registry(bad.name, bad.etag)
            assert (rolled.credential_version, rolled.username) == (3, ALICE)
            assert pulls(broker, registry, image)
            with pytest.raises(BrokerCallError) as again:
                admin.rollback_registry(rolled.name, rolled.etag)
        assert again.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "no previous credential" in again.value.message
        actions = [(e["action"], e["outcome"]) for e in broker.audit_events()]
        assert ("credential.rotate", "allowed") in actions
        assert ("credential.rollback", "allowed") in actions

    def test_rollback_without_previous_version(self, world: Any) -> None:
        """A registry never rotated has nothing to roll back to: FAILED_PRECONDITION."""
        broker, _, _ = world
        with broker.client() as admin:
            current = admin.get_registry("team")
            with pytest.raises(BrokerCallError) as refused:
                admin.rollback_registry(current.name, current.etag)
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "no previous credential" in refused.value.message


class TestRotationCli:
    """`registry rotate [--no-test]` and `registry rollback`, one line each."""

    def test_cli_messages(self, world: Any) -> None:
        """Refused: one line with the reason. Registry down: one line naming --no-test, which
        then rotates. rollback: one line; again: one line saying why not."""
        broker, registry, _ = world
        refused = cli(broker, "registry", "rotate", "team", "--password-stdin", stdin="nope\n")
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "rejected the credential" in refused.stderr
        assert "--no-test" not in refused.stderr

        good = registry.users[ALICE]
        accepted = cli(broker, "registry", "rotate", "team", "--password-stdin", stdin=good)
        assert accepted.returncode == 0, accepted.stderr
        assert "the registry accepted it" in accepted.stdout

        registry.stop()
        down = cli(broker, "registry", "rotate", "team", "--password-stdin", stdin=good)
        assert down.returncode == 1
        assert down.stderr.count("\n") == 1, down.stderr
        assert "(--no-test)" in down.stderr
        assert "skip_test" not in down.stderr
        skipped = cli(
            broker, "registry", "rotate", "team", "--password-stdin", "--no-test", stdin=good
        )
        assert skipped.returncode == 0, skipped.stderr
        assert "not tested" in skipped.stdout

        rolled = cli(broker, "registry", "rollback", "team")
        assert rolled.returncode == 0, rolled.stderr
        assert rolled.stdout.startswith("rolled back team")
        again = cli(broker, "registry", "rollback", "team")
        assert again.returncode == 1
        assert again.stderr.count("\n") == 1, again.stderr
        assert "no previous credential" in again.stderr
