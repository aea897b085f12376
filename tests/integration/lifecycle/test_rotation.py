"""Rotation takes effect at the next pull: the old password is revoked at the registry, the
credential is rotated in the broker, and the node pulls with tokens from the new one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from pullbroker.v1 import deployment_pb2, registry_pb2
from pullbroker_client.broker import BrokerCallError, basic_credential
from pullbroker_client.secret import Secret

from tests.harness.canary import find_in_tree, new_canary
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, seed_image
from tests.integration.lifecycle.conftest import LifecycleBroker
from tests.integration.lifecycle.node import add_registry, deploy_on_node, deployment

pytestmark = pytest.mark.integration

DEPLOYED = deployment_pb2.DEPLOYMENT_STATE_DEPLOYED


class TestRotation:
    """A rotated credential is used from the next token on; deployments are untouched."""

    async def test_revoke_rotate_pull(
        self,
        lifecycle_broker: LifecycleBroker,
        make_token_registry: Callable[..., TokenAuthRegistry],
        tmp_path: Path,
    ) -> None:
        """Old password revoked: refresh fails; after rotation the node pulls again."""
        registry = make_token_registry()
        image = seed_image(registry, tmp_path / "seed", "team/app", "v1", [1024])
        old_password = registry.users[ALICE]
        with lifecycle_broker.client() as admin:
            add_registry(admin, "team", registry, ALICE)
            admin.create_deployment("web", deployment(image.reference, "team"))
        await deploy_on_node(lifecycle_broker.target("node"), "web", image.reference)
        with lifecycle_broker.client("node") as node:
            cached = node.issue_pull_token(image.reference)

        new_password = new_canary("rotated")
        registry.set_password(ALICE, new_password)  # the registry no longer takes the old one
        with lifecycle_broker.client("node") as node, pytest.raises(BrokerCallError) as stale:
            node.issue_pull_token(image.reference, force_refresh=True)
        assert stale.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "rejected the credential" in stale.value.message

        with lifecycle_broker.client() as admin:
            current = admin.get_registry("team")
            rotated = admin.update_registry(
                registry_pb2.Registry(name=current.name, etag=current.etag),
                (),
                basic_credential(ALICE, Secret(new_password)),
            )
            assert rotated.credential_version == current.credential_version + 1
            untouched = admin.get_deployment("web")
        assert (untouched.state, untouched.digest) == (DEPLOYED, image.digest)

        accepted_before = registry.token_server.count(user=ALICE, status=200)
        with lifecycle_broker.client("node") as node:
            fresh = node.issue_pull_token(image.reference)  # no force_refresh: cache dropped
        assert fresh.token.reveal() != cached.token.reveal()
        assert registry.token_server.count(user=ALICE, status=200) == accepted_before + 1
        manifest = await deploy_on_node(lifecycle_broker.target("node"), "web", image.reference)
        assert manifest.digest == image.digest
        for secret in (old_password, new_password):
            assert find_in_tree(lifecycle_broker.home.root, secret) == []
