"""Deployment and credential lifecycle through the real registry and the broker's gRPC API."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from pullbroker.v1 import deployment_pb2, registry_pb2
from pullbroker_client.broker import AsyncBrokerClient, BrokerCallError, basic_credential
from pullbroker_client.registry.errors import ManifestUnknown
from pullbroker_client.secret import Secret

from tests.harness.canary import find_in_tree
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, StandardImages
from tests.integration.lifecycle.conftest import LifecycleBroker
from tests.integration.lifecycle.node import add_registry, deploy_on_node, deployment

pytestmark = pytest.mark.integration

DEPLOYED = deployment_pb2.DEPLOYMENT_STATE_DEPLOYED
FAILED = deployment_pb2.DEPLOYMENT_STATE_FAILED
PENDING = deployment_pb2.DEPLOYMENT_STATE_PENDING_DEPLOY
NODE_ID = "spiffe://pullbroker.local/node/"


class TestDeploy:
    """create -> a node pulls -> DEPLOYED with the digest, or FAILED saying why."""

    async def test_deployed_with_digest(
        self,
        lifecycle_broker: LifecycleBroker,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """The node's reports take the deployment to DEPLOYED; a watcher sees it happen."""
        with lifecycle_broker.client() as admin:
            team = add_registry(admin, "team", token_registry, ALICE)
            created = admin.create_deployment(
                "web", deployment(pushed_images.app.reference, "team")
            )
        assert (created.state, created.registry) == (PENDING, team.name)
        states: list[int] = []
        watching_started = asyncio.Event()
        async with AsyncBrokerClient(lifecycle_broker.target("admin")) as watcher:

            async def watch() -> None:
                async for item in watcher.watch_deployment("web"):
                    states.append(item.state)
                    watching_started.set()
                    if item.state == DEPLOYED:
                        return

            watching = asyncio.create_task(watch())
            await asyncio.wait_for(watching_started.wait(), 30)  # the node starts after
            manifest = await deploy_on_node(
                lifecycle_broker.target("node"), "web", pushed_images.app.reference
            )
            await asyncio.wait_for(watching, 30)
        assert manifest.digest == pushed_images.app.digest
        assert (states[0], states[-1]) == (PENDING, DEPLOYED)
        with lifecycle_broker.client() as admin:
            done = admin.get_deployment("deployments/web")
        assert done.state == DEPLOYED
        assert done.digest == pushed_images.app.digest
        assert done.reported_by.startswith(NODE_ID)

    async def test_wrong_tag_fails_with_not_found(
        self,
        lifecycle_broker: LifecycleBroker,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A tag the registry does not have ends FAILED, category NOT_FOUND, saying so."""
        image = f"{token_registry.host}/team/app:no-such-tag"
        with lifecycle_broker.client() as admin:
            add_registry(admin, "team", token_registry, ALICE)
            admin.create_deployment("web", deployment(image, "team"))
        with pytest.raises(ManifestUnknown):
            await deploy_on_node(lifecycle_broker.target("node"), "web", image)
        with lifecycle_broker.client() as admin:
            failed = admin.get_deployment("web")
        assert failed.state == FAILED
        assert failed.failure_category == deployment_pb2.FAILURE_CATEGORY_NOT_FOUND
        assert "not found" in failed.message
        assert failed.digest == ""


class TestCredentialLifecycle:
    """Registries in use stay; only their owners delete them; inline credentials end with
    their deployment."""

    def test_delete_while_referenced_is_refused(
        self,
        lifecycle_broker: LifecycleBroker,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """FAILED_PRECONDITION names the deployments; after terminating them the delete works."""
        with lifecycle_broker.client() as admin:
            team = add_registry(admin, "team", token_registry, ALICE)
            admin.create_deployment("web", deployment(pushed_images.app.reference, "team"))
            with pytest.raises(BrokerCallError) as refused:
                admin.delete_registry("team")
            assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
            assert "deployment(s) web" in refused.value.message
            assert admin.get_registry(team.name).name == team.name
            admin.terminate_deployment("web")
            admin.delete_registry("team")
            with pytest.raises(BrokerCallError) as gone:
                admin.get_registry(team.name)
        assert gone.value.code is grpc.StatusCode.NOT_FOUND
        assert team.name.removeprefix("registries/") not in lifecycle_broker.secret_keys()

    def test_delete_by_another_identity_is_refused(
        self, lifecycle_broker: LifecycleBroker, token_registry: TokenAuthRegistry
    ) -> None:
        """Another admin gets PERMISSION_DENIED; a member of the owner group may delete it."""
        admin2 = lifecycle_broker.issue_cert("admin2", "spiffe://pullbroker.local/admin2")
        ops = lifecycle_broker.issue_cert("ops", "spiffe://pullbroker.local/ops/alice")
        with lifecycle_broker.client() as admin:
            team = add_registry(admin, "team", token_registry, ALICE)
        with (
            lifecycle_broker.client(tls=admin2) as other,
            pytest.raises(BrokerCallError) as refused,
        ):
            other.delete_registry("team")
        assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "only its creator spiffe://pullbroker.local/admin" in refused.value.message
        with lifecycle_broker.client(tls=ops) as owner:
            owner.delete_registry(team.name)
            assert [r.name for r in owner.iter_registries()] == []

    async def test_terminated_inline_credential_leaves_the_backend(
        self,
        lifecycle_broker: LifecycleBroker,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """An enclave's inline credential pulls, and is gone from the backend once it ends."""
        inline = registry_pb2.Registry(
            type=registry_pb2.REGISTRY_TYPE_GENERIC,
            url=token_registry.url,
            registry_ca_pem=token_registry.ca_pem,
        )
        password = token_registry.users[ALICE]
        target = deployment_pb2.DeploymentTarget()
        target.nitro_enclave.name = "signer"
        spec = deployment_pb2.Deployment(image=pushed_images.app.reference, target=target)
        with lifecycle_broker.client() as admin:
            created = admin.create_deployment(
                "signer", spec, inline, basic_credential(ALICE, Secret(password))
            )
        registry_id = created.registry.removeprefix("registries/")
        assert created.inline_credential
        assert registry_id in lifecycle_broker.secret_keys()
        await deploy_on_node(lifecycle_broker.target("node"), "signer", pushed_images.app.reference)
        with lifecycle_broker.client() as admin:
            ended = admin.terminate_deployment("signer")
            with pytest.raises(BrokerCallError) as gone:
                admin.get_registry(created.registry)
        assert ended.state == deployment_pb2.DEPLOYMENT_STATE_TERMINATED
        assert gone.value.code is grpc.StatusCode.NOT_FOUND
        assert registry_id not in lifecycle_broker.secret_keys()
        assert find_in_tree(lifecycle_broker.home.root, password) == []
